"""The texts written beside a merged model: its Hub model card and, where exact, a mergekit config."""

from __future__ import annotations

from pathlib import Path

import yaml

from search.export.recipe import RECIPE_FILE, Recipe, Ref

MERGEKIT_FILE = "mergekit.yaml"
CARD_FILE = "README.md"


def model_card(recipe: Recipe) -> str:
    """The folder's `README.md`: Hub front matter, the formula, and every ingredient with its revision."""
    front = {
        "base_model": [recipe.base.repo_id],
        "base_model_relation": "merge",
        "library_name": "transformers",
        "tags": list(dict.fromkeys(["taskvec", "task-arithmetic", "merge", recipe.method.replace("_", "-")])),
    }
    opts = ", ".join(f"{k}={v}" for k, v in recipe.method_options.items()) or "none"
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        "# Merged with taskvec",
        "",
        "theta = theta_target + combine(tau_i = theta_i - theta_base; lambda_i), "
        f"method `{recipe.method}` (options: {opts}).",
        "",
        "| role | repo | revision | coefficient |",
        "|---|---|---|---|",
        f"| base | {recipe.base.repo_id} | {recipe.base.revision} | |",
        f"| target | {recipe.target.repo_id} | {recipe.target.revision} | 1.0 |",
    ]
    lines += [f"| ingredient | {i.repo_id} | {i.revision} | {i.coefficient!r} |" for i in recipe.ingredients]
    lines += ["", f"Rebuild it exactly: `taskvec merge --recipe {RECIPE_FILE} --out DIR`.", ""]
    if recipe.method != "task_arithmetic":
        lines += [
            f"No `{MERGEKIT_FILE}`: mergekit's `{recipe.method}` differs from taskvec's definition "
            "(see `search/merge/`), so it would not reproduce these weights.",
            "",
        ]
    return "\n".join(lines)


def _mergekit_ref(ref: Ref) -> str:
    return ref.repo_id if Path(ref.repo_id).is_absolute() else f"{ref.repo_id}@{ref.revision}"


def mergekit_yaml(recipe: Recipe) -> str | None:
    """A mergekit config reproducing the recipe, or None when the method has no exact equivalent.

    mergekit's `task_arithmetic` computes base + sum_j w_j (theta_j - base); with the target at weight 1
    and each candidate at lambda_i that is theta_T + sum_i lambda_i tau_i.
    """
    if recipe.method != "task_arithmetic":
        return None
    config = {
        "merge_method": "task_arithmetic",
        "base_model": _mergekit_ref(recipe.base),
        "models": [{"model": _mergekit_ref(recipe.target), "parameters": {"weight": 1.0}}]
        + [{"model": _mergekit_ref(i), "parameters": {"weight": i.coefficient}} for i in recipe.ingredients],
        "parameters": {"normalize": False},
        "dtype": "float32",
    }
    return yaml.safe_dump(config, sort_keys=False)
