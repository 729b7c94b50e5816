"""Export a leaderboard row: rebuild its composition from the registry and write the folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.export.folder import export_merged
from search.export.recipe import Interval, Recipe, Result, TaskScores
from search.leaderboard.queries import get_row
from search.scoring.settings import HUB_DATA
from search.tasks.glue import get_task
from search.tasks.naming import split_sources


def _splits(scorer: dict[str, Any]) -> tuple[str, str, str]:
    """(data, search split, held-out split) in words, from a row's scorer settings."""
    data = str(scorer.get("data") or HUB_DATA)
    glue = "GLUE" if data == HUB_DATA else f"the GLUE-layout folder {data}"
    size = scorer.get("search_size")
    sizes = ", ".join(f"{t} {n}" for t, n in size.items()) if isinstance(size, dict) else str(size)
    search, heldout = split_sources(scorer.get("search_from", "train"), glue=glue)
    return data, f"{sizes} examples, {search}", heldout


def result_of(row: dict[str, Any]) -> Result:
    """What the card shows of a leaderboard row: its key, both splits' scores and the gain's interval."""
    data, search_split, heldout_split = _splits(row.get("scorer") or {})
    scores = row.get("scores") or {row["task"]: {}}
    single = len(scores) == 1
    tasks = []
    for task, s in scores.items():
        tasks.append(
            TaskScores(
                task=task,
                metric=get_task(task).metric,
                search=s.get("search", row["score_search"] if single else None),
                heldout=s.get("heldout", row["score_heldout"] if single else None),
                target_search=row["target_score_search"] if single else None,
                target_heldout=row["target_score_heldout"] if single else None,
            )
        )
    return Result(
        task=row["task"],
        study=row["study"],
        trial=row["trial_number"],
        objective=row.get("objective") or "score",
        data=data,
        search_split=search_split,
        heldout_split=heldout_split,
        score_search=row["score_search"],
        score_heldout=row.get("score_heldout"),
        target_score_search=row.get("target_score_search"),
        target_score_heldout=row.get("target_score_heldout"),
        gain_ci=Interval.model_validate(row["gain_ci"]) if row.get("gain_ci") else None,
        tasks=tuple(tasks),
    )


def recipe_for(row: dict[str, Any]) -> Recipe:
    """The export module's `Recipe` that rebuilds a row's composition, with the row's `result`."""
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
            "result": result_of(row),
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
