"""Optuna's RDB storage for the studies, and the trial-state repairs Optuna does not do itself.

The only module of the study that reaches into Optuna's private internals (`study._storage`, the RDB
models, `trial._trial_id`): when Optuna changes them, this is the file to look at.
"""

from __future__ import annotations

import contextlib
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel
from optuna.trial import TrialState
from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from registry.constants import default_storage_url
from registry.db import missing_driver, redact_url
from registry.locks import url_lock
from search.errors import SearchError
from search.study.config import SearchConfig

# Any fixed 64-bit key, distinct from registry.db's migration lock.
_PG_OPTUNA_INIT_LOCK = 0x7461736B4F505455
# Its SQLite lock file is `optuna.db.init.lock`, beside the storage.
_INIT_LOCK_NAME = "init"


def default_storage() -> str:
    """Optuna's storage when none is given: `TASKVEC_STORAGE`, else a SQLite file under `TASKVEC_HOME`."""
    return default_storage_url()


def check_storage_url(url: str) -> None:
    """Refuse, in one line with the right scheme, a URL whose driver SQLAlchemy has no module for.

    Raises:
        SearchError: `postgres://...` (did you mean postgresql:// or postgresql+psycopg://?), or not a URL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise SearchError(f"{redact_url(url)}: not a storage URL (e.g. sqlite:///optuna.db)") from exc
    missing = missing_driver(parsed)
    if missing is not None:
        scheme, fixed = missing
        if fixed == "postgresql":
            hint = "did you mean postgresql:// or postgresql+psycopg://?"
        elif fixed == "sqlite":
            hint = "did you mean sqlite:///path/to/optuna.db?"
        else:
            hint = "use sqlite:///path/to/optuna.db or postgresql+psycopg://user@host/dbname"
        raise SearchError(f"{redact_url(url)}: unknown storage driver {scheme!r} ({hint})")


def storage_url(config: SearchConfig) -> str:
    """The search's storage URL (the default when none is given)."""
    return config.storage or default_storage()


def open_storage(config: SearchConfig) -> optuna.storages.RDBStorage:
    """The study's RDB storage, with heartbeats and retry of dead workers' trials.

    A SQLite storage is safe for several local processes (`--workers`): see `serialise_sqlite`.
    Optuna's RDBStorage creates its tables, version row and Alembic stamp without locking: two workers
    opening a fresh PostgreSQL database at the same moment collide (duplicate key in `pg_type`), so the
    creation runs under the cross-process lock.

    Raises:
        SearchError: if the storage URL cannot be opened (one line, password hidden).
    """
    url = storage_url(config)
    check_storage_url(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings(), url_lock(url, key=_PG_OPTUNA_INIT_LOCK, name=_INIT_LOCK_NAME):
            # Heartbeats and their retry callback are marked experimental; they are what we rely on.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=config.heartbeat_interval,
                grace_period=config.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=config.max_retry
                ),
            )
            if url.startswith("sqlite:///"):
                serialise_sqlite(storage.engine)
            return storage
    except Exception as exc:  # sqlalchemy/driver errors differ by backend; all mean "cannot open"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SearchError(f"{redact_url(url)}: cannot open the Optuna storage ({first})") from exc


def serialise_sqlite(engine: Engine) -> None:
    """Make every transaction on a SQLite engine take the write lock at its start (`BEGIN IMMEDIATE`).

    Optuna reads before it writes (a state change checks the trial is not finished; the quota counts the
    trials ahead), and pysqlite begins a transaction only at the first write: two processes' reads then
    interleave with their writes (both read the same state, a lost update), or, once both hold a read
    lock, their upgrades deadlock and SQLite refuses one "database is locked" at once, without waiting
    out the busy timeout. Taking the write lock at BEGIN runs the transactions one at a time, queued on
    the busy timeout; Optuna's transactions are short, trials are seconds long. SQLAlchemy's recipe: the
    driver stops managing transactions and the `begin` event emits BEGIN (tests/test_workers.py).
    """

    @event.listens_for(engine, "connect")
    def _driver_leaves_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections pooled while Optuna created its tables predate the hooks


def fail_unbeaten_trials(study: optuna.Study, *, grace_s: float) -> list[int]:
    """Fail (and retry, as for a stale heartbeat) RUNNING trials that never beat and started > grace ago.

    Optuna's `fail_stale_trials` skips a trial with no heartbeat at all, so a worker killed between
    creating a trial and its first heartbeat left it RUNNING for ever, and a resuming worker waited on it
    for ever. A live worker beats within moments of creating its trial.

    Returns:
        The numbers of the trials failed.
    """
    storage = study._storage
    rdb = getattr(storage, "_backend", storage)  # Optuna wraps its RDB storage in a cache
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return []
    trials, beats = TrialModel.__table__.c, TrialHeartbeatModel.__table__.c
    with rdb.engine.connect() as conn:
        rows = conn.execute(
            select(trials.trial_id, trials.datetime_start)
            .select_from(
                TrialModel.__table__.outerjoin(
                    TrialHeartbeatModel.__table__, beats.trial_id == trials.trial_id
                )
            )
            .where(
                trials.study_id == study._study_id,
                trials.state == TrialState.RUNNING.name,
                beats.trial_heartbeat_id.is_(None),
            )
        ).all()
    now = datetime.now()  # Optuna stamps datetime_start with the naive local time
    callback = storage.get_heartbeat_stale_trial_callback()
    failed = []
    for trial_id, started in rows:
        if started is None or (now - started).total_seconds() <= grace_s:
            continue
        try:
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker finished or failed it first
        trial = storage.get_trial(trial_id)
        if callback is not None:
            callback(study, trial)
        failed.append(trial.number)
    return failed


def fail_own_running(study: optuna.Study, worker: str) -> None:
    """Mark this worker's interrupted trial failed now, rather than leaving it for the heartbeat to find."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == worker:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # finished meanwhile
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    """The study called `name`, or None when the storage has none."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def create_or_join(
    storage: optuna.storages.BaseStorage, name: str, *, n_objectives: int
) -> tuple[optuna.Study, bool]:
    """Create the study or join it; `(study, created)`.

    Creation is atomic through the storage's unique study name: of two workers starting together only
    one creates it; the other joins.
    """
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=["maximize"] * n_objectives)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(storage=storage, study_name=name), False
