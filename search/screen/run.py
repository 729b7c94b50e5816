"""Screening: does `theta_T + lambda * tau_i` help the target on its task, one candidate at a time?

For every compatible candidate of the target's base, the scorer scores the composition over a lambda grid
on the search split (never the held-out split), and the best lambda and its gain over the target are
stored in `screenings`. Lambdas are tried in increasing order and the rest of the grid is skipped once a
lambda is clearly harmful (more than `harm_margin` points below both the target and the best so far):
adding more of a vector that already hurts only hurts more.

Resumable: each candidate's row is committed on its own as soon as it is scored, and a rerun skips the
candidates already screened for this (task, target revision, split fingerprint).

A target whose config does not record this search split as excluded from its training rows is also
scored once on the held-out split (in a run that screens anything: the model is loaded then), and a search score higher than chance explains is one warning line on
stderr (`check_target`), naming `--search-from validation`.
"""

from __future__ import annotations

import fnmatch
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from registry.pins import Pinned, Resolved, compatible_candidates, resolve_target
from registry.progress import counted_columns, progress_bar
from search.errors import SearchError
from search.scoring.contamination import ContaminationCheck, contamination_check
from search.scoring.device import Placement, resolve
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Scorer, ScoreResult
from search.scoring.settings import ScorerSettings
from search.screen.grid import DEFAULT_LAMBDA_SEARCH, search_lambdas
from search.screen.grid import is_clearly_harmful as is_clearly_harmful  # re-exported: its old home
from search.screen.racing import RACE_KEEP, RacePlan, RaceRule, RaceSetup, race_todo
from search.screen.store import rank_key, save_screening, screened_candidates, stored_states
from search.screen.stream import KEEP_VECTORS, StreamSettings, StreamStats
from search.tables import worker_id
from search.tasks.data import SearchSource, Split, check_source, load_split
from search.tasks.glue import get_task
from search.tasks.provenance import recorded_search_split, records_split
from search.vectors.compose import open_composer
from search.vectors.composer import Composer, check_coefficients

DEFAULT_LAMBDAS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.3)
HARM_MARGIN = 5.0


def parse_lambdas(text: str) -> tuple[float, ...]:
    """`0.1,0.2,0.5` -> (0.1, 0.2, 0.5).

    Raises:
        SearchError: if an entry is not a number or the list is empty.
        ModelError: if an entry is not finite or out of range (`check_coefficients`).
    """
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise SearchError(f"--lambdas {text!r}: expected comma-separated numbers") from exc
    if not values:
        raise SearchError("--lambdas is empty")
    return check_coefficients(values, what=f"--lambdas {text!r}")


def screen_lambdas(
    scorer: Scorer,
    composer: Composer,
    *,
    lambdas: Sequence[float],
    target_score: float,
    harm_margin: float = HARM_MARGIN,
    how: str = "grid",
) -> list[dict[str, Any]]:
    """Score the single-vector composition over the grid on the whole split (`search.screen.grid`).

    Args:
        scorer: bound to the live model and the search split.
        composer: with exactly one vector; `apply([lam])` sets `theta_T + lam * tau`.
        lambdas: the grid.
        target_score: the target's own search score.
        harm_margin: points below target and best that count as clearly harmful.
        how: `grid` (every lambda, ascending, stopping on clear harm) or `coarse-to-fine`.

    Returns:
        `[{"lambda", "score", "n", "result"}]` for the lambdas tried, ascending. Each (candidate, lambda,
        ScoreResult) of a screen is produced here or in `search.screen.racing.screen_race`, and reaches
        `save_screening` under `"result"` (which stores its per-example label log-probs).
    """

    def evaluate(lam: float) -> ScoreResult:
        composer.apply([lam])
        return scorer.score()

    tried = search_lambdas(
        evaluate, how=how, lambdas=lambdas, target_score=target_score, harm_margin=harm_margin
    )
    composer.apply([0.0])
    return tried


def check_target(
    *,
    target: str,
    target_dir: Path,
    split: Split,
    search: ScoreResult,
    heldout: Callable[[], ScoreResult],
) -> ContaminationCheck | None:
    """Warn (one stderr line) when a target not known to have left `split` out of its training rows scores
    higher on it than on held-out by more than the splits' sizes explain.

    Nothing is checked for a target whose config records `split` (fingerprint equal), nor for a search
    split carved from validation (a target that trained on validation would score high on both halves:
    the comparison cannot tell, and train-trained targets are what the check is for).

    Args:
        target: the target's name in the warning.
        target_dir: its folder (config.json).
        split: the search split in use.
        search: the target's result on `split`.
        heldout: its result on the held-out split, called only when the check is needed.

    Returns:
        The check, or None when none was needed.
    """
    if split.source != "train" or records_split(recorded_search_split(target_dir), split):
        return None
    other = heldout()
    check = contamination_check(
        task=split.task,
        search_labels=search.labels,
        search_predictions=search.predictions,
        heldout_labels=other.labels,
        heldout_predictions=other.predictions,
    )
    if check.suspicious:
        print(check.warning(target=target), file=sys.stderr, flush=True)
    return check


def _check_grid(task: str, lambdas: Sequence[float]) -> None:
    get_task(task)
    if not lambdas:
        raise SearchError("no lambdas to screen")
    check_coefficients(lambdas, what="lambdas")
    if any(lam <= 0 for lam in lambdas):
        raise SearchError(f"lambdas must be positive, got {list(lambdas)}")


def _candidates(target: str, *, db_url: str | None) -> tuple[Resolved, list[Pinned]]:
    """The target pinned with its base, and the base's compatible candidates in the registry."""
    resolved = resolve_target(target, db_url=db_url)
    candidates = compatible_candidates(resolved, db_url=db_url)
    if not candidates:
        raise SearchError(
            f"no compatible candidates for base {resolved.base.repo_id} in the registry: "
            "run `taskvec registry sync` first"
        )
    return resolved, candidates


def _screening_row(
    *,
    task: str,
    resolved: Resolved,
    candidate: Pinned,
    tried: list[dict[str, Any]],
    target_score: float,
    split: Split,
    settings: dict[str, Any],
    worker: str,
) -> dict[str, Any]:
    """The stored screening of one candidate: its grid, best lambda and gain, and how it was scored."""
    best = max(tried, key=lambda r: (r["score"], -r["lambda"]))
    return {
        "task": task,
        "target_repo": resolved.target.repo_id,
        "target_revision": resolved.target.revision,
        "candidate_repo": candidate.repo_id,
        "candidate_revision": candidate.revision,
        "base_repo": resolved.base.repo_id,
        "base_revision": resolved.base.revision,
        "lambdas": tried,
        "best_lambda": best["lambda"],
        "best_score": best["score"],
        "target_score": target_score,
        "gain": best["score"] - target_score,
        "n_scored": int(best["n"]),
        "split_fingerprint": split.fingerprint,
        "scorer": settings,
        "worker": worker,
    }


def _prepared(
    *,
    task: str,
    resolved: Resolved,
    split: Split,
    mode: str,
    harm_margin: float,
    split_seed: int,
    data_dir: Path | None,
    placement: Placement,
) -> tuple[Scorer, ScoreResult, dict[str, Any]]:
    """The live target's scorer on the split, its result there (checked: `check_target`), and the scorer
    settings every row stores."""
    model, tokenizer = load_seq2seq(resolved.target.path, device=placement.device)
    scorer = Scorer(model, tokenizer, split, mode=mode, autocast_dtype=placement.autocast)
    target_result = scorer.score()
    check_target(
        target=resolved.target.repo_id,
        target_dir=resolved.target.path,
        split=split,
        search=target_result,
        heldout=lambda: Scorer(
            model,
            tokenizer,
            load_split(task, split="heldout", data_dir=data_dir, seed=split_seed),
            mode=mode,
            autocast_dtype=placement.autocast,
        ).score(),
    )
    settings = ScorerSettings(
        **scorer.settings,
        split_seed=split_seed,
        data=ScorerSettings.data_name(data_dir),
        search_size=len(split),
        harm_margin=harm_margin,
        search_from=split.source,
    ).to_dict()
    return scorer, target_result, settings


def _screen_todo(
    todo: Sequence[Pinned],
    *,
    task: str,
    resolved: Resolved,
    split: Split,
    mode: str,
    lambdas: Sequence[float],
    harm_margin: float,
    split_seed: int,
    data_dir: Path | None,
    vector_cache: Path | None,
    db_url: str | None,
    progress: bool,
    placement: Placement,
    plan: RacePlan = RacePlan(racing=False, how="grid"),
    streaming: StreamSettings = StreamSettings(),
) -> None:
    """Score the target once (checking it never trained on the split), then each candidate over the grid,
    committing each row as it is scored (or race them as `plan` says: `search.screen.racing`)."""
    scorer, target_result, settings = _prepared(
        task=task,
        resolved=resolved,
        split=split,
        mode=mode,
        harm_margin=harm_margin,
        split_seed=split_seed,
        data_dir=data_dir,
        placement=placement,
    )
    model, target_score = scorer.model, float(target_result.score)
    worker = worker_id()
    if plan.races(len(todo)):
        row_for = functools.partial(
            _screening_row, task=task, resolved=resolved, split=split, settings=settings, worker=worker
        )
        setup = RaceSetup(
            scorer, target_result, tuple(lambdas), plan.how, harm_margin, RaceRule(keep=plan.keep)
        )
        race_todo(todo, setup=setup, plan=plan, resolved=resolved, row_for=row_for, streaming=streaming,
                  vector_cache=vector_cache, db_url=db_url, progress=progress)  # fmt: skip
        return
    stream = streaming.open(todo, base_revision=resolved.base.revision, vector_cache=vector_cache)
    with progress_bar(*counted_columns("{task.description}", eta=True), enabled=progress) as bar, stream:
        job = bar.add_task(f"screen {task}", total=len(todo))
        for cand in stream:  # located, the next one downloading meanwhile
            bar.update(job, description=f"screen {task}: {cand.repo_id}")
            composer = open_composer(
                model,
                target=resolved.target.path,
                base=resolved.base,
                ingredients=[cand],
                cache_dir=vector_cache,
            )
            stream.release(cand)  # the vector is extracted into the vector cache: the snapshot can go
            tried = screen_lambdas(
                scorer,
                composer,
                lambdas=lambdas,
                target_score=target_score,
                harm_margin=harm_margin,
                how=plan.how,
            )
            row = _screening_row(
                task=task,
                resolved=resolved,
                candidate=cand,
                tried=tried,
                target_score=target_score,
                split=split,
                settings=settings,
                worker=worker,
            )
            save_screening(row, db_url=db_url, target=target_result, replace=True)  # a race's in-flight row
            stream.screened(cand, gain=row["gain"])
            bar.advance(job)


def screen(
    *,
    task: str,
    target: str,
    db_url: str | None = None,
    data_dir: Path | None = None,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    limit: int | None = None,
    search_size: int | None = None,
    split_seed: int = 0,
    mode: str = "rank",
    harm_margin: float = HARM_MARGIN,
    vector_cache: Path | None = None,
    progress: bool = True,
    search_from: SearchSource = "train",
    exclude: Sequence[str] = (),
    device: str | None = None,
    dtype: str = "auto",
    racing: bool | None = None,
    lambda_search: str = DEFAULT_LAMBDA_SEARCH,
    race_keep: int = RACE_KEEP,
    max_cached: int | None = None,
    keep_vectors: int = KEEP_VECTORS,
    stream_stats: StreamStats | None = None,
) -> list[dict[str, Any]]:
    """Screen every compatible candidate of the target's base (resuming where a previous run stopped).

    Args:
        task, target: GLUE task of the target; its repo id as synced into the registry, or its folder.
        db_url, data_dir: taskvec database URL; local GLUE parquet folder (None: the Hub).
        lambdas, harm_margin: lambda grid; see `search.screen.grid.is_clearly_harmful`.
        limit: screen at most this many new candidates in this run.
        search_size, split_seed: examples in the search split (None: the data module's default); its seed.
        mode: scoring mode (`rank` or `generate`).
        vector_cache, progress: folder of task vectors (default: the registry's cache); a progress bar.
        search_from: carve the search split from `train` or one half of `validation` (unknown provenance).
        exclude: shell-style patterns of repo ids neither screened nor returned (e.g. `org/*-large`).
        device, dtype: where and in what precision to score (`search.scoring.device.resolve`; stored).
        racing, lambda_search, race_keep: see `search.screen.racing.RacePlan` (None: race above 32).
        max_cached, keep_vectors, stream_stats: at most `max_cached` downloaded snapshots on disk at once,
            the best `keep_vectors` new vectors kept; the cost filled into `stream_stats` (`.stream`).

    Returns:
        Every screening of this target on this split (earlier runs' too): full-split rows first, then
        those a race dropped on a prefix, each by best gain (`search.screen.store.rank_key`).

    Raises:
        SearchError: unknown task, empty registry, a target not compatible with its base, no candidates.
        DataError, ModelError, RegistryError: unreadable data or models (one line each).
    """
    placement = _checked(task, lambdas, search_from=search_from, device=device, dtype=dtype)
    resolved, candidates = _candidates(target, db_url=db_url)
    split = load_split(
        task, split="search", data_dir=data_dir, size=search_size, seed=split_seed, source=search_from
    )
    rev, fingerprint = resolved.target.revision, split.fingerprint
    states = stored_states(task=task, target_revision=rev, fingerprint=fingerprint, db_url=db_url)
    plan = RacePlan(racing, lambda_search, race_keep, stored=_still_racing(states))
    done = set(states) - set(plan.stored)
    todo = _todo(candidates, done=done, exclude=exclude, limit=limit)
    if todo:
        _screen_todo(
            todo,
            task=task,
            resolved=resolved,
            split=split,
            mode=mode,
            lambdas=lambdas,
            harm_margin=harm_margin,
            split_seed=split_seed,
            data_dir=data_dir,
            vector_cache=vector_cache,
            db_url=db_url,
            progress=progress,
            placement=placement,
            plan=plan,
            streaming=StreamSettings(max_cached, keep_vectors, stream_stats),
        )
    rows = screened_candidates(task=task, target_revision=rev, split_fingerprint=fingerprint, db_url=db_url)
    return sorted((r for r in rows if not _excluded(r["candidate_repo"], exclude)), key=rank_key)


def _checked(
    task: str, lambdas: Sequence[float], *, search_from: str, device: str | None, dtype: str
) -> Placement:
    """Check the options that need no database; where and how precisely to score (fails before any work)."""
    _check_grid(task, lambdas)
    check_source(search_from)
    return resolve(device, dtype)


def _todo(
    candidates: Sequence[Pinned], *, done: set[str], exclude: Sequence[str], limit: int | None
) -> list[Pinned]:
    """The candidates still to screen: not screened yet, not excluded, at most `limit`."""
    left_out = [c.repo_id for c in candidates if _excluded(c.repo_id, exclude)]
    todo = [c for c in candidates if c.revision not in done and c.repo_id not in left_out]
    return todo if limit is None else todo[: max(0, limit)]


def _still_racing(states: dict[str, tuple[str, int | None]]) -> dict[str, int | None]:
    """Revision -> n_scored of the rows a killed race left racing (`stored_states`)."""
    return {rev: n for rev, (state, n) in states.items() if state == "racing"}


def _excluded(repo_id: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(repo_id, p) for p in patterns)
