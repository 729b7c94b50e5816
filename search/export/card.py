"""The texts written beside a merged model: its Hub model card and, where exact, a mergekit config.

The card's front matter is built with `huggingface_hub`'s `ModelCardData` (so it is the metadata the Hub
reads): `base_model` lists the Hub repos merged (base, target, ingredients; folders named by path are not
Hub repos and are left out) with `base_model_relation: merge`, `tags` start with `merge` and
`task-arithmetic`, and for a leaderboard row a `model-index` holds its held-out scores (the search split's
when it was never scored on held-out, named as such). The body names task, study and trial, every score
with its metric and split, the held-out gain's interval, and every checkpoint with revision, source and
coefficient. Everything comes from the `Recipe` (its `result` for a row), so a rebuild from `recipe.yaml`
alone writes the same bytes.

mergekit (arcee-ai/mergekit, read at commit a6e4028, `merge_methods/generalized_task_arithmetic.py`,
`sparsify.py`, `merge_methods/registry.py`) computes every task-arithmetic-family method as
`base + sum_j w_j * sparsify(theta_j - base)`, optionally divided by the (sign-agreeing) weights' sum:
- `task_arithmetic` (no sparsification, normalize false): with the target at weight 1 and each candidate
  at lambda_i that is exactly theta_T + sum_i lambda_i tau_i, ours; so `mergekit.yaml` is written.
- `ties` differs from ours in four ways: it keeps int(density * n) entries per tensor (ours ceil, at least
  one, ties at the threshold kept); its sign election takes + where the masses sum to 0 (ours elects
  none); with normalize (its default) it divides the agreeing weighted deltas by the sum of their weights
  (ours by their count, so lambda scales our result and cancels in theirs); and the target is one of its
  models, so the target's own delta is trimmed and takes part in the election (ours adds the combination
  to the untouched target). No `mergekit.yaml`; the card says why.
- `dare_linear` differs from our `dare`: its masks come from `torch.bernoulli` on the global random state
  (ours are seeded per seed, ingredient revision and tensor, so a rebuild is exact), and it rescales each
  kept tensor to its original L1 norm (ours by 1/(1 - p), the paper's rescale). No `mergekit.yaml`.
Where our method reduces to plain task arithmetic (DARE at p = 0; TIES at density 1 with one ingredient)
the formulas agree and the task-arithmetic `mergekit.yaml` is written. Checked by hand with mergekit 0.1.5
(not a dependency) on gated-gelu pico T5s (`tests.t5_repos`, family v1_1; two ingredients at 0.5 and 0.8):
the exported `mergekit.yaml` gives our weights within 2.4e-7 (fp32 rounding) for task arithmetic and for
DARE at p = 0, while mergekit's `ties` (density 0.5) and `dare_linear` (density 0.5) end 0.41 and 1.29
(max abs) away from ours.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from search.export.recipe import RECIPE_FILE, Recipe, Ref, Result
from search.scoring.settings import HUB_DATA
from search.tasks.glue import GLUE_HUB_DATASET, METRIC_NAMES

MERGEKIT_FILE = "mergekit.yaml"
CARD_FILE = "README.md"

# The Hub's metric ids for our metrics (MRPC's mean of F1 and accuracy has none: named as ours).
_METRIC_TYPES = {"accuracy": "accuracy", "mcc": "matthews_correlation", "f1_acc": "f1_accuracy_mean"}

MERGEKIT_DIFFERS = {
    "ties": (
        "mergekit's `ties` computes another model: it keeps int(density x n) entries per tensor (taskvec: "
        "ceil, at least one, ties at the threshold kept), elects + where the masses sum to 0 (taskvec: no "
        "sign), with its default normalize divides by the agreeing weights' sum (taskvec: by their count, so "
        "lambda scales the result) "
        "and trims and elects over the target's own delta too (taskvec adds the combination to the "
        "untouched target)."
    ),
    "dare": (
        "mergekit's `dare_linear` computes another model: it draws its masks with torch.bernoulli from the "
        "global random state (taskvec seeds each ingredient's and tensor's mask, so a rebuild is exact) and "
        "rescales each kept tensor to its original L1 norm (taskvec: by 1/(1-p))."
    ),
}


def _hub_id(ref: Ref) -> str | None:
    """The repo id when it names a Hub-style repo (`org/name`), None for a folder named by its path."""
    rid = ref.repo_id
    return (
        rid
        if rid.count("/") == 1 and not Path(rid).is_absolute() and not rid.startswith((".", "~"))
        else None
    )


def mergekit_method(recipe: Recipe) -> str | None:
    """The mergekit method whose formula is ours for this recipe (see the module docstring), else None."""
    if recipe.method == "task_arithmetic":
        return "task_arithmetic"
    if recipe.method == "dare" and recipe.method_options.get("p") == 0.0:
        return "task_arithmetic"  # nothing dropped, nothing rescaled
    if (
        recipe.method == "ties"
        and recipe.method_options.get("density") == 1.0
        and len(recipe.ingredients) <= 1
    ):
        return "task_arithmetic"  # one untrimmed vector: its own sign, its own mean
    return None


def _metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _gain(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _eval_results(result: Result) -> list[EvalResult]:
    """model-index entries: each task's held-out score (its search-split score if never scored held-out)."""
    heldout = any(t.heldout is not None for t in result.tasks)
    split, note = ("validation", "held-out") if heldout else ("train", "search split, chosen on it")
    out = []
    for scores in result.tasks:
        value = scores.heldout if heldout else scores.search
        if value is None:
            continue
        out.append(
            EvalResult(
                task_type="text-classification",
                dataset_type=GLUE_HUB_DATASET if result.data == HUB_DATA else "glue",
                dataset_name=f"GLUE {scores.task.upper()}",
                dataset_config=scores.task,
                dataset_split=split,
                metric_type=_METRIC_TYPES.get(scores.metric, scores.metric),
                metric_value=round(value, 4),
                metric_name=f"{_metric_name(scores.metric)} ×100 ({note})",
            )
        )
    return out


def _front_matter(recipe: Recipe) -> ModelCardData:
    hub_ids = [h for h in (_hub_id(r) for r in (recipe.base, recipe.target, *recipe.ingredients)) if h]
    tags = ["merge", "task-arithmetic", "taskvec"]
    if recipe.method != "task_arithmetic":
        tags.append(recipe.method.replace("_", "-"))
    result = recipe.result
    if result is not None:
        tags += [f"glue-{t.task}" for t in result.tasks]
    evals = _eval_results(result) if result is not None else []
    extra = {"base_model_relation": "merge"} if hub_ids else {}
    return ModelCardData(
        base_model=list(dict.fromkeys(hub_ids)) or None,
        library_name="transformers",
        tags=list(dict.fromkeys(tags)),
        datasets=[GLUE_HUB_DATASET] if evals and evals[0].dataset_type == GLUE_HUB_DATASET else None,
        model_name=f"taskvec {result.study}#{result.trial}" if evals else None,
        eval_results=evals or None,
        **extra,
    )


def _result_lines(result: Result) -> list[str]:
    key = f"{result.study}#{result.trial}"
    lines = [
        "## Result",
        "",
        f"Task `{result.task}`, study `{result.study}`, trial {result.trial} "
        f"(`taskvec export --study '{key}' --out DIR`). Scores are each task's metric ×100. "
        f"Search split: {result.search_split} (the only data the search saw). "
        f"Held-out: {result.heldout_split} (scored after the search, never used to choose).",
        "",
        "| task | metric | split | merged | target | gain |",
        "|---|---|---|---|---|---|",
    ]
    for t in result.tasks:
        for split, merged, target in (
            ("search", t.search, t.target_search),
            ("held-out", t.heldout, t.target_heldout),
        ):
            lines.append(
                f"| {t.task} | {_metric_name(t.metric)} | {split} | {_fmt(merged)} | {_fmt(target)} "
                f"| {_fmt(_gain(merged, target), signed=True)} |"
            )
    if result.objective != "score" or len(result.tasks) != 1:
        lines += [
            f"| objective | {result.objective} | search | {_fmt(result.score_search)} "
            f"| {_fmt(result.target_score_search)} "
            f"| {_fmt(_gain(result.score_search, result.target_score_search), signed=True)} |",
            f"| objective | {result.objective} | held-out | {_fmt(result.score_heldout)} "
            f"| {_fmt(result.target_score_heldout)} "
            f"| {_fmt(_gain(result.score_heldout, result.target_score_heldout), signed=True)} |",
        ]
    ci = result.gain_ci
    lines.append("")
    if ci is None:
        lines.append("Held-out gain interval: not computed (the row was not scored on held-out).")
    else:
        n = ", ".join(f"{k} {v}" for k, v in sorted(ci.n.items()))
        lines.append(
            f"Held-out gain {ci.gain:+.2f}, {ci.level:.0%} interval [{ci.lo:+.2f}, {ci.hi:+.2f}] "
            f"({ci.method}, {ci.resamples} resamples, examples: {n}); "
            + ("it excludes 0." if ci.lo > 0 or ci.hi < 0 else "it contains 0: no significant gain.")
        )
    return [*lines, ""]


def _checkpoint_lines(recipe: Recipe) -> list[str]:
    def row(role: str, ref: Ref, coef: str) -> str:
        return f"| {role} | {ref.repo_id} | {ref.revision} | {ref.source or '-'} | {coef} |"

    return [
        "## Checkpoints",
        "",
        "| role | repo | revision | source | coefficient |",
        "|---|---|---|---|---|",
        row("base", recipe.base, ""),
        row("target", recipe.target, "1.0"),
        *(row("ingredient", i, repr(i.coefficient)) for i in recipe.ingredients),
        "",
    ]


def model_card(recipe: Recipe) -> str:
    """The folder's `README.md`: Hub metadata, the formula, the result and every checkpoint."""
    opts = ", ".join(f"{k}={v}" for k, v in recipe.method_options.items()) or "none"
    body = [
        "# Merged with taskvec",
        "",
        "theta = theta_target + combine(tau_i = theta_i - theta_base; lambda_i), "
        f"method `{recipe.method}` (options: {opts}).",
        "",
        *(_result_lines(recipe.result) if recipe.result is not None else []),
        *_checkpoint_lines(recipe),
        f"Rebuild it exactly, without any database: `taskvec merge --recipe {RECIPE_FILE} --out DIR`.",
        "",
    ]
    if mergekit_method(recipe) is not None:
        body += [f"`{MERGEKIT_FILE}` gives the same formula in mergekit.", ""]
    else:
        why = MERGEKIT_DIFFERS.get(
            recipe.method, f"mergekit has no method computing taskvec's `{recipe.method}`."
        )
        body += [f"No `{MERGEKIT_FILE}`: {why}", ""]
    card = ModelCard(f"---\n{_front_matter(recipe).to_yaml()}\n---\n\n" + "\n".join(body))
    return str(card)


def _mergekit_ref(ref: Ref) -> str:
    return ref.repo_id if Path(ref.repo_id).is_absolute() else f"{ref.repo_id}@{ref.revision}"


def mergekit_yaml(recipe: Recipe) -> str | None:
    """A mergekit config with our formula for the recipe, or None when mergekit's differs.

    mergekit's `task_arithmetic` computes base + sum_j w_j (theta_j - base); with the target at weight 1
    and each candidate at lambda_i that is theta_T + sum_i lambda_i tau_i.
    """
    if mergekit_method(recipe) is None:
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
