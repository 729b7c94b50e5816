"""Where a recipe's checkpoints are read from, and the `source` each reference records.

A reference's `source` is what `taskvec merge --recipe` needs to find it with no database: a Hub endpoint
URL (a repo there at its commit sha; `hub` as the registry writes it is `huggingface_hub`'s endpoint), or
the absolute path of the folder holding it (checked against its content sha before it is read). A recipe
written before sources were recorded is found as before: a folder by its path, else through the registry,
else on the Hub.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import constants as hf_constants

from registry.errors import ModelError
from registry.pins import Pinned, locate, model_dir, pin
from search.export.recipe import Recipe, Ref


def is_endpoint(source: str) -> bool:
    """Whether a recorded source is a Hub endpoint (else it is a folder)."""
    return source.startswith(("http://", "https://"))


def recorded_source(pinned: Pinned) -> str:
    """The `source` a recipe records for a located checkpoint: its Hub endpoint, else its folder."""
    if pinned.source == "hub":
        return hf_constants.ENDPOINT.rstrip("/")
    if is_endpoint(pinned.source):
        return pinned.source.rstrip("/")
    # a folder named by its path (`local`), or a repo of a registry folder source: the folder itself
    return str(Path(pinned.path).expanduser().resolve())


def find(ref: Ref, *, db_url: str | None = None) -> Pinned:
    """The folder holding exactly `ref` (downloading a Hub revision when needed), with its source.

    Raises:
        ModelError: a folder that is gone or changed since it was pinned, or a repo that cannot be found.
        RegistryError: a Hub endpoint that does not hold that revision, or cannot be reached.
    """
    if ref.source is not None:
        if is_endpoint(ref.source):
            path = model_dir(source=ref.source, repo_id=ref.repo_id, revision=ref.revision)
        else:
            folder = Path(ref.source)
            if not folder.is_dir():
                raise ModelError(f"{ref.repo_id}: its recorded folder {folder} no longer exists")
            path = locate(str(folder), ref.revision)  # checks the content sha
        return Pinned(repo_id=ref.repo_id, revision=ref.revision, path=Path(path), source=ref.source)
    if Path(ref.repo_id).expanduser().is_dir():
        path = locate(ref.repo_id, ref.revision, db_url=db_url)
        return Pinned(repo_id=ref.repo_id, revision=ref.revision, path=path, source="local")
    pinned = pin(ref.repo_id, revision=ref.revision, db_url=db_url)
    if pinned.revision != ref.revision:
        raise ModelError(
            f"{ref.repo_id}: found revision {pinned.revision[:12]}, the recipe has {ref.revision[:12]}"
        )
    return pinned


def with_sources(recipe: Recipe, found: dict[str, Pinned]) -> Recipe:
    """`recipe` with every reference's `source` filled in from where it was found (`repo_id` -> Pinned)."""

    def filled(ref: Ref) -> Ref:
        if ref.source is not None:
            return ref
        return ref.model_copy(update={"source": recorded_source(found[ref.repo_id])})

    return recipe.model_copy(
        update={
            "base": filled(recipe.base),
            "target": filled(recipe.target),
            "ingredients": tuple(filled(i) for i in recipe.ingredients),
        }
    )
