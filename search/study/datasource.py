"""Which data a search reads when it is given none: the data its screenings were made on.

Screening rows store their scorer settings, the data source (`data`: a GLUE folder, or `hub`) among them. A
search without `--data` (nor `TASKVEC_DATA`, nor a config file's `data`) reuses that source instead of
going to the Hub; a search given another source than its screenings' is refused in one line, before any
data loads (the Hub would otherwise be tried for minutes).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sqlalchemy import select

from registry.db import session_scope
from registry.pins import resolve_target
from search.errors import SearchError
from search.scoring.settings import HUB_DATA
from search.study.config import SearchConfig
from search.tables import Screening


def screened_sources(
    *, tasks: tuple[str, ...], target_revision: str | None, search_from: str, db_url: str | None
) -> list[str]:
    """The distinct data sources (`hub` or a folder) of the screenings of `tasks`, sorted.

    Args:
        tasks: the searched tasks.
        target_revision: only this target's screenings (one task); None: any target's (several tasks, whose
            references are each screened as their task's target).
        search_from: only screenings whose search split was carved from this (`train`, `validation`).
        db_url: the taskvec database.
    """
    # The two keys, not the JSON column: PostgreSQL's `json` type has no equality for DISTINCT.
    data, source = Screening.scorer["data"].as_string(), Screening.scorer["search_from"].as_string()
    query = select(data, source).where(Screening.task.in_(tasks)).distinct()
    if target_revision is not None:
        query = query.where(Screening.target_revision == target_revision)
    with session_scope(db_url) as session:
        rows = session.execute(query).all()
    return sorted({d or HUB_DATA for d, f in rows if (f or "train") == search_from})


def _shown(source: str) -> str:
    return "the Hub" if source == HUB_DATA else source


def _same(source: str, data_dir: Path | None) -> bool:
    if data_dir is None or source == HUB_DATA:
        return data_dir is None and source == HUB_DATA
    return Path(source).expanduser().resolve() == Path(data_dir).expanduser().resolve()


def with_screened_data(config: SearchConfig) -> tuple[SearchConfig, str | None]:
    """`config` with the data source of its screenings filled in, and a note saying so (None: nothing done).

    Raises:
        SearchError: the screenings were made on several sources and none was given, or on another source
            than the one given (one line naming both).
    """
    target = None
    if len(config.tasks) == 1:
        target = resolve_target(config.target, db_url=config.db_url).target
    sources = screened_sources(
        tasks=config.tasks,
        target_revision=None if target is None else target.revision,
        search_from=config.search_from,
        db_url=config.db_url,
    )
    whose = f"{config.label} on {target.repo_id}" if target is not None else config.label
    if not sources:
        return config, None  # nothing screened: the search says so itself, naming `taskvec screen`
    if config.data_dir is None:
        if len(sources) > 1:
            raise SearchError(
                f"{whose} was screened on several data sources ({', '.join(map(_shown, sources))}): "
                "choose one with --data"
            )
        if sources[0] == HUB_DATA:
            return config, None
        note = f"data: {sources[0]} (where {whose} was screened)"
        return replace(config, data_dir=Path(sources[0])), note
    if not any(_same(s, config.data_dir) for s in sources):
        shown = " and ".join(map(_shown, sources))
        fix = "leave out --data (and TASKVEC_DATA)" if sources == [HUB_DATA] else f"pass --data {sources[0]}"
        raise SearchError(
            f"--data {config.data_dir}: {whose} was screened on {shown}, not on this data; "
            f"{fix}, or screen on {config.data_dir} first"
        )
    return config, None
