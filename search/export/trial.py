"""Export a leaderboard row: rebuild its composition from the registry and write the folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.export.folder import export_merged
from search.export.recipe import Recipe
from search.leaderboard.queries import get_row


def recipe_for(row: dict[str, Any]) -> Recipe:
    """The export module's `Recipe` that rebuilds a row's composition."""
    return Recipe.model_validate(
        {
            "base": {"repo_id": row["base_repo"], "revision": row["base_revision"]},
            "target": {"repo_id": row["target_repo"], "revision": row["target_revision"]},
            "ingredients": [
                {"repo_id": i["repo_id"], "revision": i["revision"], "coefficient": i["coefficient"]}
                for i in row["ingredients"]
            ],
            "method": row["method"],
            "method_options": row["method_options"] or {},
        }
    )


def export_trial(
    *,
    study: str,
    trial: int | None = None,
    out: Path,
    db_url: str | None = None,
    force: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Path:
    """Rebuild a leaderboard composition (trial `trial`, or the study's best) and export it.

    Args:
        study: the study.
        trial: trial number (default: the best by search score).
        out: folder for the merged model, `recipe.yaml` and mergekit YAML.
        db_url: taskvec database URL.
        force, notify: replace an `out` holding entries no export wrote, moving them aside (see
            `search.export.export_merged`).

    Returns:
        The exported folder.

    Raises:
        SearchError: no such row, or an ingredient that left the registry.
        ModelError: an `out` an export may not write (see `search.export.export_merged`).
    """
    row = get_row(study=study, trial=trial, db_url=db_url)
    return export_merged(recipe=recipe_for(row), out=Path(out), db_url=db_url, force=force, notify=notify)
