"""The queries users run in the morning over the study's leaderboard rows: summary, one row, CSV.

The study writes one row per completed trial (`search.study.records`). The best composition of a task is
chosen on the search split only (invariant 2); held-out scores sit beside it, computed for the top trials
after the search, never used to rank. A row that failed a control guard (`feasible` false) is kept with
its control scores but never ranks as best; a multi-task row's `task` is its tasks joined by commas, its
`scores` hold every task, and `pareto` marks the non-dominated rows of a Pareto study.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from registry.db import session_scope
from search.errors import SearchError
from search.scoring.bootstrap import verdict
from search.study.records import query
from search.tables import LeaderboardRow
from search.tasks.naming import search_from_of

# Keys of a row dict (`taskvec leaderboard --json`), item 3 of the search issue first.
CSV_KEYS = (
    "task",
    "study",
    "trial_number",
    "score_search",
    "score_heldout",
    "target_score_search",
    "target_score_heldout",
    "gain_search",
    "gain_heldout",
    "gain_ci_lo",
    "gain_ci_hi",
    "ingredients",
    "method",
    "worker",
    "created",
)


def summary(
    *, db_url: str | None = None, task: str | None = None, study: str | None = None, top: int = 1
) -> list[dict[str, Any]]:
    """Per task: the target against its `top` best feasible compositions (chosen on the search split).

    Returns:
        Up to `top` dicts per task, best first: `task`, `rank` (1 = best, as `export --task T --rank N`
        counts), `study`, `trial_number`, `target_repo`, `target_score_search`, `target_score_heldout`,
        `best_score_search`, `best_score_heldout`, `gain_search`, `gain_heldout`, `gain_ci` (the held-out
        gain's paired bootstrap interval, None before held-out scoring), `verdict` (`no significant gain`
        when that interval contains 0, `significant gain` or `significant loss`, None without one),
        `ingredients`, `method`, `objective`, `scores`, `search_from` (`train` or `validation`: where the
        search split was carved from), `n_rows` (the task's feasible rows).
    """
    rows = query(db_url=db_url, task=task, study=study, feasible_only=True)
    out: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["task"]] = counts.get(row["task"], 0) + 1
        if counts[row["task"]] > top:
            continue  # rows come best first per task
        out.append(
            {
                "task": row["task"],
                "rank": counts[row["task"]],
                "study": row["study"],
                "trial_number": row["trial_number"],
                "target_repo": row["target_repo"],
                "target_score_search": row["target_score_search"],
                "target_score_heldout": row["target_score_heldout"],
                "best_score_search": row["score_search"],
                "best_score_heldout": row["score_heldout"],
                "gain_search": row["gain_search"],
                "gain_heldout": row["gain_heldout"],
                "gain_ci": row["gain_ci"],
                "verdict": verdict(row["gain_ci"]),
                "ingredients": row["ingredients"],
                "method": row["method"],
                "objective": row["objective"],
                "scores": row["scores"],
                "search_from": search_from_of(row),
            }
        )
    return [{**v, "n_rows": counts[v["task"]]} for v in out]


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV (`CSV_KEYS`; ingredients as `repo@rev12=coef;...`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_KEYS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = dict(row)
        ci = row.get("gain_ci") or {}
        flat["gain_ci_lo"], flat["gain_ci_hi"] = ci.get("lo"), ci.get("hi")
        flat["ingredients"] = ";".join(
            f"{i['repo_id']}@{i['revision'][:12]}={i['coefficient']:.4f}" for i in row["ingredients"]
        )
        writer.writerow(flat)
    return buf.getvalue()


def get_row(*, study: str, trial: int | None = None, db_url: str | None = None) -> dict[str, Any]:
    """Trial `trial` of `study`, or its best feasible row by search score.

    Raises:
        SearchError: if the study has no such row.
    """
    rows = query(db_url=db_url, study=study)
    if not rows:
        raise SearchError(f"study {study!r} has no completed trial on the leaderboard")
    if trial is None:
        if not rows[0]["feasible"]:
            raise SearchError(f"study {study!r}: every trial failed a control guard; name one with --trial")
        return rows[0]
    for row in rows:
        if row["trial_number"] == trial:
            return row
    raise SearchError(f"study {study!r} has no completed trial {trial} on the leaderboard")


def split_key(key: str) -> tuple[str, int | None]:
    """`STUDY#TRIAL` (the key the leaderboard table shows) as (study, trial); a plain name as (name, None).

    Split on the last '#' and only when a trial number follows, so a study named `a#b` stays whole.
    """
    name, sep, tail = key.rpartition("#")
    if sep and name and tail.isdigit():
        return name, int(tail)
    return key, None


def resolve_trial(
    *, study: str | None, trial: int | None, task: str | None, rank: int | None, db_url: str | None = None
) -> tuple[str, int | None]:
    """The (study, trial) that `taskvec export` names: `--study S[#N] [--trial N]` or `--task T [--rank N]`.

    Raises:
        SearchError: neither or both ways given, a trial given twice, or no such task, study or rank.
    """
    if (study is None) == (task is None):
        raise SearchError("export: name one of --study STUDY[#TRIAL] or --task TASK [--rank N]")
    if task is not None:
        if trial is not None:
            raise SearchError("export: --trial goes with --study; with --task use --rank N")
        rank = 1 if rank is None else rank
        check_known(task=task, study=None, db_url=db_url)
        rows = query(db_url=db_url, task=task, feasible_only=True)
        if rank < 1 or rank > len(rows):
            raise SearchError(
                f"task {task!r} has {len(rows)} feasible rows on the leaderboard; no rank {rank}"
            )
        return rows[rank - 1]["study"], rows[rank - 1]["trial_number"]
    if rank is not None:
        raise SearchError("export: --rank goes with --task; with --study use STUDY#TRIAL or --trial N")
    name, keyed = split_key(study)
    if keyed is not None and trial is not None:
        what = "give it once" if keyed == trial else f"but --trial says {trial}"
        raise SearchError(f"export: --study {study!r} already names trial {keyed}; {what}")
    check_known(task=None, study=name, db_url=db_url)
    return name, keyed if keyed is not None else trial


def check_known(*, task: str | None, study: str | None, db_url: str | None = None) -> None:
    """Refuse, in one line naming the known ones, a task or study with no row on the leaderboard.

    Raises:
        SearchError: no row for `task`, for `study`, or for the two together.
    """
    if task is None and study is None:
        return
    with session_scope(db_url) as session:
        pairs = set(session.execute(select(LeaderboardRow.task, LeaderboardRow.study).distinct()).all())
    for kind, value, known in (
        ("task", task, {t for t, _ in pairs}),
        ("study", study, {s for _, s in pairs}),
    ):
        if value is not None and value not in known:
            plural = "tasks" if kind == "task" else "studies"
            raise SearchError(
                f"{kind} {value!r} has no completed trial on the leaderboard ({_known(known, plural=plural)})"
            )
    if task is not None and study is not None and (task, study) not in pairs:
        raise SearchError(f"study {study!r} has no rows for task {task!r}")


def _known(values: set[str], *, plural: str, first: int = 5) -> str:
    if not values:
        return "the leaderboard is empty: run `taskvec search` first"
    names = sorted(values)
    more = f", ... ({len(names)} in all)" if len(names) > first else ""
    return f"known {plural}: " + ", ".join(names[:first]) + more
