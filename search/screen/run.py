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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from registry.pins import Pinned, Resolved, compatible_candidates, located, resolve_target
from registry.progress import counted_columns, progress_bar
from search.errors import SearchError
from search.scoring.contamination import ContaminationCheck, contamination_check
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Scorer, ScoreResult
from search.scoring.settings import ScorerSettings
from search.screen.store import already_screened, save_screening, screened_candidates
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


def is_clearly_harmful(score: float, *, target_score: float, best_score: float, margin: float) -> bool:
    """A lambda is clearly harmful when it scores more than `margin` below both the target and the best."""
    return score < target_score - margin and score < best_score - margin


def screen_lambdas(
    scorer: Scorer,
    composer: Composer,
    *,
    lambdas: Sequence[float],
    target_score: float,
    harm_margin: float = HARM_MARGIN,
) -> list[dict[str, Any]]:
    """Score the single-vector composition at each lambda (ascending), stopping on clear harm.

    Args:
        scorer: bound to the live model and the search split.
        composer: with exactly one vector; `apply([lam])` sets `theta_T + lam * tau`.
        lambdas: the grid.
        target_score: the target's own search score.
        harm_margin: points below target and best that count as clearly harmful.

    Returns:
        `[{"lambda", "score", "n"}]` for the lambdas actually tried.
    """
    tried: list[dict[str, Any]] = []
    best = -float("inf")
    for lam in sorted(set(lambdas)):
        composer.apply([float(lam)])
        result = scorer.score()
        tried.append({"lambda": float(lam), "score": float(result.score), "n": int(result.n)})
        best = max(best, result.score)
        if is_clearly_harmful(result.score, target_score=target_score, best_score=best, margin=harm_margin):
            break
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
        "split_fingerprint": split.fingerprint,
        "scorer": settings,
        "worker": worker,
    }


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
) -> None:
    """Score the target once (checking it never trained on the split), then each candidate over the grid,
    committing each row as it is scored."""
    model, tokenizer = load_seq2seq(resolved.target.path)
    scorer = Scorer(model, tokenizer, split, mode=mode)
    target_result = scorer.score()
    target_score = float(target_result.score)
    check_target(
        target=resolved.target.repo_id,
        target_dir=resolved.target.path,
        split=split,
        search=target_result,
        heldout=lambda: Scorer(
            model, tokenizer, load_split(task, split="heldout", data_dir=data_dir, seed=split_seed), mode=mode
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
    worker = worker_id()
    with progress_bar(*counted_columns("{task.description}", eta=True), enabled=progress) as bar:
        job = bar.add_task(f"screen {task}", total=len(todo))
        for cand in todo:
            bar.update(job, description=f"screen {task}: {cand.repo_id}")
            composer = open_composer(
                model,
                target=resolved.target.path,
                base=resolved.base,
                ingredients=[located(cand)],
                cache_dir=vector_cache,
            )
            tried = screen_lambdas(
                scorer, composer, lambdas=lambdas, target_score=target_score, harm_margin=harm_margin
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
            save_screening(row, db_url=db_url)
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
) -> list[dict[str, Any]]:
    """Screen every compatible candidate of the target's base (resuming where a previous run stopped).

    Args:
        task: GLUE task of the target.
        target: the target's repo id as synced into the registry, or its folder.
        db_url: taskvec database URL.
        data_dir: local GLUE parquet folder (None: the Hub).
        lambdas: lambda grid.
        limit: screen at most this many new candidates in this run.
        search_size: examples in the search split (default: the data module's default).
        split_seed: seed of the stratified search split.
        mode: scoring mode (`rank` or `generate`).
        harm_margin: see `screen_lambdas`.
        vector_cache: folder of precomputed task vectors (default: the registry's cache).
        progress: show a progress bar.
        search_from: carve the search split from `train` or from one half of `validation` (for a target
            that may have trained on all of train).
        exclude: shell-style patterns of repo ids left out (e.g. `org/*-large`): neither screened nor
            returned, so a search never takes them.

    Returns:
        Every screening of this target on this split (earlier runs' too), best gain first.

    Raises:
        SearchError: unknown task, empty registry, a target not compatible with its base, no candidates.
        DataError, ModelError, RegistryError: unreadable data or models (one line each).
    """
    _check_grid(task, lambdas)
    check_source(search_from)
    resolved, candidates = _candidates(target, db_url=db_url)
    split = load_split(
        task, split="search", data_dir=data_dir, size=search_size, seed=split_seed, source=search_from
    )
    done = already_screened(
        task=task, target_revision=resolved.target.revision, fingerprint=split.fingerprint, db_url=db_url
    )
    left_out = [c.repo_id for c in candidates if _excluded(c.repo_id, exclude)]
    todo = [c for c in candidates if c.revision not in done and c.repo_id not in left_out]
    if limit is not None:
        todo = todo[: max(0, limit)]
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
        )
    rows = screened_candidates(
        task=task,
        target_revision=resolved.target.revision,
        split_fingerprint=split.fingerprint,
        db_url=db_url,
    )
    rows = [r for r in rows if not _excluded(r["candidate_repo"], exclude)]
    return sorted(rows, key=lambda r: (-r["gain"], r["candidate_repo"]))


def _excluded(repo_id: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(repo_id, p) for p in patterns)
