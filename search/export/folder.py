"""Merged model folders that reproduce exactly: weights, config, tokenizer, model card, recipe, mergekit YAML.

`export_merged` computes theta = theta_T + combine({tau_i}, {lambda_i}) from pinned checkpoints (through the
one composition path, `search.vectors.open_composer`, bypassing the vector cache so an export never depends
on its state) and writes a folder that `AutoModelForSeq2SeqLM.from_pretrained` loads: `model.safetensors`,
`config.json`, the target's tokenizer files (copied byte for byte), a `README.md` Hub card
(`search.export.card`), `recipe.yaml` (the `Recipe` that rebuilds the folder byte-identically, with where
each checkpoint was read from, so no database is needed: `search.export.sources`) and, where mergekit's
formula is ours, `mergekit.yaml`. The folder appears atomically (built beside `out`, then renamed), so a
crash never leaves a half-written model; its files are 0644, and a hidden manifest records them. A
non-empty `out` takes `force`, except an earlier export of the same model (rebuilt in place); with it an
earlier export's files are replaced and anything else moved aside (`search.export.ownership`).
`out` is never inside or around a registered repo, a cache or a folder the merge reads (`search.export.guard`).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from registry.errors import ModelError
from registry.pins import Pinned, pin
from search.export import guard, ownership, sources
from search.export.card import CARD_FILE, MERGEKIT_FILE, mergekit_yaml, model_card
from search.export.recipe import RECIPE_FILE, Ingredient, Recipe, Ref
from search.scoring.models import load_seq2seq
from search.vectors.checkpoint import check_same_architecture
from search.vectors.compose import open_composer
from search.vectors.methods import get_method

# Tokenizer files copied from the target, byte for byte.
_TOKENIZER_FILES = re.compile(
    r"(tokenizer.*\.json|special_tokens_map\.json|added_tokens\.json|spiece\.model|.*\.model|vocab\..*|merges\.txt)"
)


def _claim_out(out: Path, *, db_url: str | None, force: bool, recipe: Recipe | None = None) -> Path:
    """`out`, resolved, once it is known to be a folder an export may write (before any work is done).

    Raises:
        ModelError: `out` inside or containing a registered repo, a cache or the database; holding
            entries an earlier export did not write; or holding an earlier export of another model
            (both without `force`; `recipe` None skips the last check, made again once it is known).
    """
    out = Path(out).expanduser().resolve()
    guard.refuse_protected(out, guard.protected_folders(db_url))
    contents = ownership.inspect(out)
    ownership.refuse_foreign(out, contents, force=force)
    if recipe is not None and not force:
        ownership.refuse_other_model(out, contents, same=lambda old: _same_model(old, recipe))
    return out


def _same_model(folder: Path, recipe: Recipe) -> bool:
    """Whether the export in `folder` is of the model `recipe` gives (an unreadable recipe is not)."""
    try:
        return Recipe.load(folder / RECIPE_FILE).same_model(recipe)
    except ModelError:
        return False


def _write_folder(
    model: Any,
    *,
    recipe: Recipe,
    target_dir: Path,
    out: Path,
    force: bool,
    notify: Callable[[str], None] | None,
) -> None:
    """Save the merged model with the target's tokenizer, the card, the recipe and mergekit YAML, atomically."""
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
        (tmp / CARD_FILE).write_text(model_card(recipe))
        (tmp / RECIPE_FILE).write_text(recipe.to_yaml())
        kit = mergekit_yaml(recipe)
        if kit is not None:
            (tmp / MERGEKIT_FILE).write_text(kit)
        ownership.seal(tmp)
        ownership.install(tmp, out, force=force, notify=notify)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def export_merged(
    *,
    recipe: Recipe,
    out: Path,
    dirs: Mapping[str, Pinned] | None = None,
    db_url: str | None = None,
    force: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Path:
    """Merge as the recipe says and write a loadable model folder with its recipe.

    Args:
        recipe: base, target, ingredients (repo@revision, lambda, source), method and options, and for a
            leaderboard row its `result` (the card's scores).
        out: the folder to write: new or empty (an earlier export of the same model is rebuilt in place).
        dirs: repo_id -> checkpoint already pinned and located (default: found from the recipe, see
            `search.export.sources.find`).
        db_url: taskvec database URL for registry repos (unused when every reference has a source).
        force: write into an `out` holding another model (its export's files are replaced) or entries no
            export wrote (moved to `<out>.kept`, never deleted).
        notify: told, in one line, what was moved aside.

    Returns:
        `out`.

    Raises:
        ModelError: a checkpoint that cannot be found or changed, an ingredient or target that does not
            match the base, NaN/inf, an `out` inside (or containing) a registered repo, a cache or a
            folder the merge reads, or a non-empty `out` (without `force`; see `_claim_out`).
    """
    out = _claim_out(out, db_url=db_url, force=force, recipe=recipe)
    dirs = dict(dirs or {})

    def pinned(ref: Ref) -> Pinned:
        found = dirs.get(ref.repo_id) or sources.find(ref, db_url=db_url)
        dirs[ref.repo_id] = found
        return found

    base, target = pinned(recipe.base), pinned(recipe.target)
    check_same_architecture(base.path, target.path, what="base")
    ingredients = [pinned(i) for i in recipe.ingredients]
    for ingredient in ingredients:  # every folder passes the registry's checks before any weights load
        check_same_architecture(base.path, ingredient.path, what="base")
    read = [("base", base.path), ("target", target.path)] + [("ingredient", i.path) for i in ingredients]
    guard.refuse_protected(out, guard.reads(read))
    recipe = sources.with_sources(recipe, dirs)
    model, _ = load_seq2seq(target.path)
    if ingredients:
        composer = open_composer(
            model,
            target=target.path,
            base=base,
            ingredients=ingredients,
            method=recipe.method,
            method_options=recipe.method_options,
            cached=False,
        )
        composer.apply([i.coefficient for i in recipe.ingredients])
        del composer
    _write_folder(model, recipe=recipe, target_dir=target.path, out=out, force=force, notify=notify)
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
    force: bool = False,
    notify: Callable[[str], None] | None = None,
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
        force, notify: see `export_merged`.

    Returns:
        The folder and the recipe written into it.

    Raises:
        ModelError: unknown method or options, missing checkpoints, checkpoints that do not match, or an
            `out` an export may not write (see `export_merged`).
    """
    options = get_method(method).validate(method_options)
    out = _claim_out(out, db_url=db_url, force=force)  # before pinning: a refusal costs no download
    base_pin, target_pin = pin(base, db_url=db_url), pin(target, db_url=db_url)
    base_ref = Ref(repo_id=base_pin.repo_id, revision=base_pin.revision)
    target_ref = Ref(repo_id=target_pin.repo_id, revision=target_pin.revision)
    dirs = {base_pin.repo_id: base_pin, target_pin.repo_id: target_pin}
    ingredients = []
    for name, coef in additions:
        pinned = pin(name, db_url=db_url)
        dirs[pinned.repo_id] = pinned
        ingredients.append(Ingredient(repo_id=pinned.repo_id, revision=pinned.revision, coefficient=coef))
    recipe = Recipe(
        base=base_ref,
        target=target_ref,
        ingredients=tuple(ingredients),
        method=method,
        method_options=options,
    )
    folder = export_merged(recipe=recipe, out=out, dirs=dirs, db_url=db_url, force=force, notify=notify)
    return folder, recipe


def reproduce(
    *,
    recipe_path: Path,
    out: Path,
    db_url: str | None = None,
    force: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Path:
    """Rebuild a folder from its `recipe.yaml` (byte-identical to the original export).

    Raises:
        ModelError: for an invalid recipe, checkpoints that changed since, or an `out` an export may not
            write (see `export_merged`).
    """
    return export_merged(recipe=Recipe.load(recipe_path), out=out, db_url=db_url, force=force, notify=notify)
