"""Merged model folders that reproduce exactly: weights, config, tokenizer, model card, recipe, mergekit YAML.

`export_merged` computes theta = theta_T + combine({tau_i}, {lambda_i}) from pinned checkpoints and writes
a folder that `AutoModelForSeq2SeqLM.from_pretrained` loads: `model.safetensors`, `config.json`, the
target's tokenizer files (copied byte for byte), a `README.md` card naming base, target and every
ingredient with its revision and coefficient, `recipe.yaml` (the `Recipe` that rebuilds the folder
byte-identically) and, for task arithmetic, `mergekit.yaml`. The folder appears atomically (built
beside `out`, then renamed), so a crash never leaves a half-written model.

Revisions pin everything: a Hub repo by its commit sha, a local folder by its content sha
(`registry.sources.local.content_sha`), checked again when a recipe is replayed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from registry.errors import ModelError
from registry.pins import locate, pin

RECIPE_FILE = "recipe.yaml"
MERGEKIT_FILE = "mergekit.yaml"
CARD_FILE = "README.md"
# Tokenizer files copied from the target, byte for byte.
_TOKENIZER_FILES = re.compile(
    r"(tokenizer.*\.json|special_tokens_map\.json|added_tokens\.json|spiece\.model|.*\.model|vocab\..*|merges\.txt)"
)


class Ref(BaseModel):
    """A checkpoint pinned to a revision: a Hub repo id (or a local folder's path) and its sha."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo_id: str = Field(min_length=1)
    revision: str = Field(min_length=1)


class Ingredient(Ref):
    """A candidate and its coefficient lambda (negative: forgetting, analogies)."""

    coefficient: float


class Recipe(BaseModel):
    """Everything that fixes a merged model: theta_T + method({tau_i = theta_i - theta_base}, {lambda_i})."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: Ref
    target: Ref
    ingredients: tuple[Ingredient, ...] = ()
    method: str = "task_arithmetic"
    method_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from search.vectors.methods import get_method

        get_method(value)
        return value

    def to_yaml(self) -> str:
        """The recipe as YAML (stable key order, so the same recipe gives the same bytes)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    @classmethod
    def load(cls, path: Path) -> Recipe:
        """Read a `recipe.yaml`.

        Raises:
            ModelError: if the file is missing, not YAML, or not a valid recipe.
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError as exc:
            raise ModelError(f"{path}: no such recipe file") from exc
        except yaml.YAMLError as exc:
            raise ModelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "recipe"
            raise ModelError(f"{path}: invalid recipe ({where}: {first['msg']})") from exc


def parse_addition(text: str) -> tuple[str, float]:
    """`REPO_OR_PATH=COEF` -> (repo or path, coefficient); the last `=` splits, so paths may hold `=`.

    Raises:
        ModelError: if there is no `=` or the coefficient is not a finite number.
    """
    name, sep, coef = text.rpartition("=")
    if not sep or not name:
        raise ModelError(f"--add {text!r}: expected REPO_OR_PATH=COEF (e.g. org/model=0.5)")
    try:
        value = float(coef)
    except ValueError:
        raise ModelError(f"--add {text!r}: coefficient {coef!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ModelError(f"--add {text!r}: coefficient must be finite")
    return name, value


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` method options; values parsed as YAML scalars (numbers stay numbers).

    Raises:
        ModelError: for an item without `=`.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelError(f"--option {item!r}: expected KEY=VALUE (e.g. density=0.2)")
        options[key] = yaml.safe_load(value)
    return options


# --- writing the folder ----------------------------------------------------------------------------------


def _card(recipe: Recipe) -> str:
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


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder `tmp` to `out`, replacing an earlier export there."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / RECIPE_FILE).is_file()):
            raise ModelError(f"{out}: exists and is not a taskvec export; choose another --out")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_merged(
    *,
    recipe: Recipe,
    out: Path,
    dirs: Mapping[str, Path] | None = None,
    db_url: str | None = None,
) -> Path:
    """Merge as the recipe says and write a loadable model folder with its recipe.

    Args:
        recipe: base, target, ingredients (repo@revision, lambda), method and options.
        out: the folder to write (replaced if it holds an earlier export).
        dirs: repo_id -> folder, for checkpoints already located (default: located from the recipe:
            a local folder by path, else the registry, else the Hub).
        db_url: taskvec database URL for registry repos.

    Returns:
        `out`.

    Raises:
        ModelError: a checkpoint that cannot be found or changed, an ingredient or target that does not
            match the base, NaN/inf, or an `out` that is something else.
    """
    from search.scoring.models import load_seq2seq
    from search.vectors.taskvector import Composer, TaskVector, check_same_architecture

    out = Path(out).expanduser().resolve()
    dirs = dict(dirs or {})

    def where(ref: Ref) -> Path:
        return (
            Path(dirs[ref.repo_id])
            if ref.repo_id in dirs
            else locate(ref.repo_id, ref.revision, db_url=db_url)
        )

    base_dir, target_dir = where(recipe.base), where(recipe.target)
    check_same_architecture(base_dir, target_dir, what="base")
    vectors = [
        TaskVector.from_checkpoints(base=base_dir, finetuned=where(i), vector_id=i.revision)
        for i in recipe.ingredients
    ]
    model, _ = load_seq2seq(target_dir)
    if vectors:
        composer = Composer(
            model,
            target=target_dir,
            vectors=vectors,
            method=recipe.method,
            method_options=recipe.method_options or None,
        )
        composer.apply([i.coefficient for i in recipe.ingredients])
        del composer, vectors

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        config_path = tmp / "config.json"
        config = json.loads(config_path.read_text())
        untied = model.get_output_embeddings().weight is not model.get_input_embeddings().weight
        if untied and config.get("tie_word_embeddings", True):
            # transformers writes `true` for every T5; an untied lm_head must say so to load as saved
            config["tie_word_embeddings"] = False
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for src in sorted(target_dir.iterdir()):
            if src.is_file() and _TOKENIZER_FILES.fullmatch(src.name):
                shutil.copyfile(src, tmp / src.name)
        (tmp / CARD_FILE).write_text(_card(recipe))
        (tmp / RECIPE_FILE).write_text(recipe.to_yaml())
        kit = mergekit_yaml(recipe)
        if kit is not None:
            (tmp / MERGEKIT_FILE).write_text(kit)
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def merge(
    *,
    base: str,
    target: str,
    additions: Sequence[tuple[str, float]],
    out: Path,
    method: str = "task_arithmetic",
    method_options: Mapping[str, Any] | None = None,
    db_url: str | None = None,
) -> tuple[Path, Recipe]:
    """Pin base, target and ingredients, then `export_merged` (the `taskvec merge` command).

    Args:
        base: the pretrained model (folder or repo id).
        target: the fine-tuned target (folder or repo id).
        additions: (folder or repo id, lambda) pairs; negative lambdas allowed.
        out: output folder.
        method: `task_arithmetic`, `ties` or `dare`.
        method_options: the method's options (validated and recorded with defaults filled in).
        db_url: taskvec database URL for registry repos.

    Returns:
        The folder and the recipe written into it.

    Raises:
        ModelError: unknown method or options, missing checkpoints, or checkpoints that do not match.
    """
    from search.vectors.methods import get_method

    options = get_method(method).validate(method_options)
    base_pin, target_pin = pin(base, db_url=db_url), pin(target, db_url=db_url)
    base_ref = Ref(repo_id=base_pin.repo_id, revision=base_pin.revision)
    target_ref = Ref(repo_id=target_pin.repo_id, revision=target_pin.revision)
    dirs = {base_pin.repo_id: base_pin.path, target_pin.repo_id: target_pin.path}
    ingredients = []
    for name, coef in additions:
        pinned = pin(name, db_url=db_url)
        dirs[pinned.repo_id] = pinned.path
        ingredients.append(Ingredient(repo_id=pinned.repo_id, revision=pinned.revision, coefficient=coef))
    recipe = Recipe(
        base=base_ref,
        target=target_ref,
        ingredients=tuple(ingredients),
        method=method,
        method_options=options,
    )
    return export_merged(recipe=recipe, out=out, dirs=dirs, db_url=db_url), recipe


def reproduce(*, recipe_path: Path, out: Path, db_url: str | None = None) -> Path:
    """Rebuild a folder from its `recipe.yaml` (byte-identical to the original export).

    Raises:
        ModelError: for an invalid recipe or checkpoints that changed since.
    """
    return export_merged(recipe=Recipe.load(recipe_path), out=out, db_url=db_url)
