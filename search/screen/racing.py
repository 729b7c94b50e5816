"""Racing screens: many candidates, most of them dropped on a small prefix of the search split.

Every candidate starts on the first `start` examples of the scorer's fixed order; each round scores the
survivors' lambda search on the shared prefix, drops those that are clearly behind the leaders, and
doubles the prefix; the survivors of the last round are scored on the whole split.

The rule (`eliminate`): the leaders are the `keep` best candidates by best-lambda score on the prefix; a
candidate below them is dropped when it trails the weakest leader (the `keep`-th) by more than `z`
standard errors of the paired difference between the two. The standard error is a paired bootstrap's:
the same resampled examples for both (`search.scoring.bootstrap.resampled_scores`), the task's metric
recomputed on each resample, the standard deviation of the resampled differences. For SST-2 and RTE
(accuracy) that is the standard error of the mean per-example correctness difference; for MRPC
(mean of F1 and accuracy) and CoLA (Matthews correlation), whose scores are not means over examples, the
bootstrap is what gives one. The leaders themselves are never dropped, so the `keep` best on every prefix
always reach the whole split; a screening keeps at least `keep` full-split rows.

Lambdas race too (`RaceRule.lambdas`): a survivor's lambda trailing its best on the same prefix by more
than `z` standard errors of their paired difference (`eliminate`, one leader) is dropped; later rounds score
the rest and coarse-to-fine steps once more next to the best (`search.screen.grid.carry_on`). A row holds
the lambdas scored on its last prefix; a resumed race's first round runs the whole lambda search.

Examples are scored once per (candidate, lambda): a prefix is split into the chunks between consecutive
prefix sizes (`ChunkScorer`), and a lambda tried in an earlier round scores only the new chunk. A
candidate dropped in round r cost its lambdas times the r-th prefix; its screening row keeps that prefix
(`n_scored`) and the round (`eliminated_round`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from registry.pins import Pinned, Resolved
from registry.progress import counted_columns, progress_bar
from search.errors import SearchError
from search.scoring.bootstrap import resampled_scores
from search.scoring.scorer import Scorer, ScoreResult
from search.screen.chunks import ChunkCache, ChunkScorer, prefix_of
from search.screen.grid import DEFAULT_LAMBDA_SEARCH, Arms, check_lambda_search, round_search
from search.screen.store import save_screening
from search.screen.stream import StreamSettings
from search.vectors.compose import open_composer
from search.vectors.composer import Composer

RACE_START = 64  # the smallest prefix judged: on fewer, one example moves accuracy by more than 1.5 points
RACE_KEEP = 8  # leaders never dropped: at least a search's default top-k reach the whole split
RACE_Z = 2.0
RACE_RESAMPLES = 200  # enough for a standard error to within ~5%
RACE_SEED = 0
RACING_THRESHOLD = 32  # `screen` races by default when it has more candidates than this to screen

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class RaceRule:
    """When a candidate is dropped (see the module's docstring).

    Attributes:
        keep: leaders never dropped.
        z: standard errors of the paired difference to the weakest leader that drop a candidate.
        resamples: bootstrap resamples per round.
        seed: the resampling seed.
        lambdas: race each surviving candidate's lambdas too (drop those clearly behind its best).
    """

    keep: int = RACE_KEEP
    z: float = RACE_Z
    resamples: int = RACE_RESAMPLES
    seed: int = RACE_SEED
    lambdas: bool = True


@dataclass(frozen=True)
class RacePlan:
    """How a screen spends its examples.

    Attributes:
        racing: race the candidates; None: race when more than `RACING_THRESHOLD` are to be screened.
        how: the lambda search (`search.screen.grid.LAMBDA_SEARCHES`).
        keep: leaders a race never drops.
        stored: revision -> n_scored of the rows a killed race left racing (a rerun resumes after them).

    Raises:
        SearchError: an unknown lambda search, or `keep` below 1.
    """

    racing: bool | None = None
    how: str = DEFAULT_LAMBDA_SEARCH
    keep: int = RACE_KEEP
    stored: Mapping[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_lambda_search(self.how)
        if self.keep < 1:
            raise SearchError(f"--race-keep must be at least 1, got {self.keep}")

    def races(self, n_todo: int) -> bool:
        """Whether a screen of `n_todo` candidates races."""
        return n_todo > RACING_THRESHOLD if self.racing is None else self.racing


def race_sizes(n_examples: int, *, start: int = RACE_START) -> list[int]:
    """Prefix sizes of the rounds: `start`, doubling, then the whole split (just the split if smaller)."""
    sizes: list[int] = []
    n = max(1, int(start))
    while n < n_examples:
        sizes.append(n)
        n *= 2
    return [*sizes, n_examples]


def eliminate(
    results: Mapping[K, ScoreResult],
    *,
    task: str,
    rule: RaceRule = RaceRule(),
    tie: Callable[[K], Any] = str,
) -> set[K]:
    """The candidates clearly behind the leaders on a shared prefix.

    Args:
        results: each candidate's best-lambda result on the same examples, in the same order.
        task: the task whose metric is resampled.
        rule: keep, z, resamples, seed.
        tie: the order among equal scores (the first leads): by name, unless told otherwise.

    Returns:
        The candidates to drop (never one of the `rule.keep` best).
    """
    ranked = sorted(results, key=lambda k: (-results[k].score, tie(k)))
    if len(ranked) <= rule.keep:
        return set()
    bar = results[ranked[rule.keep - 1]]
    n = len(bar.labels)
    idx = np.random.default_rng(rule.seed).integers(0, n, size=(rule.resamples, n))
    bar_scores = resampled_scores(task=task, labels=bar.labels, predictions=bar.predictions, indices=idx)
    out: set[K] = set()
    for key in ranked[rule.keep :]:
        res = results[key]
        gap = bar.score - res.score
        if gap <= 0:
            continue
        scores = resampled_scores(task=task, labels=res.labels, predictions=res.predictions, indices=idx)
        if gap > rule.z * float(np.std(bar_scores - scores, ddof=1)):
            out.add(key)
    return out


def racing_lambdas(
    tried: Sequence[Mapping[str, Any]], *, task: str, rule: RaceRule = RaceRule()
) -> list[float]:
    """A candidate's lambdas still racing: all of `tried` but those clearly behind its best on the same
    examples (`eliminate` with the best lambda as the one leader; `rule.lambdas` False keeps them all)."""
    lams = [float(t["lambda"]) for t in tried]
    if not rule.lambdas:
        return lams
    one = RaceRule(keep=1, z=rule.z, resamples=rule.resamples, seed=rule.seed)
    # On a tie the smaller lambda leads, as `Standing.best` prefers.
    results = {lam: t["result"] for lam, t in zip(lams, tried, strict=True)}
    dropped = eliminate(results, task=task, rule=one, tie=float)
    return [lam for lam in lams if lam not in dropped]


@dataclass
class Standing(Generic[K]):
    """One candidate in a race.

    Attributes:
        candidate: its key.
        tried: its lambda search on the last prefix it was scored on (`search.screen.grid`'s entries).
        n: that prefix's size.
        round: that round's index.
        eliminated_round: the round it was dropped in (None: still racing, or finished).
    """

    candidate: K
    tried: list[dict[str, Any]]
    n: int
    round: int
    eliminated_round: int | None = None

    @property
    def best(self) -> dict[str, Any]:
        return max(self.tried, key=lambda t: (t["score"], -t["lambda"]))


def race(
    candidates: Sequence[K],
    *,
    task: str,
    sizes: Sequence[int],
    screen_one: Callable[[K, int, Arms | None], list[dict[str, Any]]],
    rule: RaceRule = RaceRule(),
    on_round: Callable[[Sequence[Standing[K]]], None] | None = None,
    each: Callable[[Sequence[K]], Iterable[K]] = iter,
    start_round: int = 0,
) -> list[Standing[K]]:
    """Race `candidates` over the prefixes `sizes`.

    Args:
        candidates: the candidates (any hashable keys).
        task: the task (its metric decides the rule's standard errors).
        sizes: prefix sizes per round (`race_sizes`); the last is the whole split.
        screen_one: `screen_one(candidate, round, arms)` -> its lambda search on `sizes[round]` (entries
            carry their `ScoreResult` under `"result"`); `arms` are its lambdas still racing, None in the
            first round it is scored in (the whole lambda search).
        rule: the elimination rule.
        on_round: called after each round with that round's standings (dropped ones marked): where rows
            are committed, so a killed race loses at most the round in flight.
        each: iterates one round's survivors (e.g. a stream that fetches each snapshot in turn).
        start_round: the round to start in (a resumed race whose earlier rounds are stored).

    Returns:
        Every candidate's last standing, in `candidates` order.
    """
    last = len(sizes) - 1
    standings: dict[K, Standing[K]] = {}
    alive = list(candidates)
    arms: dict[K, Arms] = {}
    for r in range(min(start_round, last), last + 1):
        scored: list[Standing[K]] = []
        for cand in each(alive):
            tried = screen_one(cand, r, arms.get(cand))
            standing = Standing(candidate=cand, tried=tried, n=int(sizes[r]), round=r)
            standings[cand] = standing
            scored.append(standing)
        if r < last:
            dropped = eliminate({s.candidate: s.best["result"] for s in scored}, task=task, rule=rule)
            for s in scored:
                if s.candidate in dropped:
                    s.eliminated_round = r
            alive = [c for c in alive if c not in dropped]
            for s in scored:
                if s.eliminated_round is None:
                    seen = arms[s.candidate].seen if s.candidate in arms else frozenset()
                    arms[s.candidate] = Arms(
                        racing=tuple(racing_lambdas(s.tried, task=task, rule=rule)),
                        seen=seen | {float(t["lambda"]) for t in s.tried},
                    )
        if on_round is not None:
            on_round(scored)
    return [standings[c] for c in candidates if c in standings]


@dataclass(frozen=True)
class RaceSetup:
    """What every candidate of one racing screen shares.

    Attributes:
        scorer: the whole search split's scorer on the live model.
        target: the target's own result on the whole split (its prefixes are the harm rule's reference
            and each row's target score).
        lambdas: the lambda grid.
        how: the lambda search (`search.screen.grid.LAMBDA_SEARCHES`).
        harm_margin: see `search.screen.grid.is_clearly_harmful`.
        rule: the elimination rule.
        start: the first prefix's size.
    """

    scorer: Scorer
    target: ScoreResult
    lambdas: tuple[float, ...]
    how: str
    harm_margin: float
    rule: RaceRule = RaceRule()
    start: int = RACE_START


def resume_round(todo: Sequence[Pinned], *, sizes: Sequence[int], stored: Mapping[str, int | None]) -> int:
    """The round a rerun starts in: after the last round every candidate left racing has stored (0 when
    one has none, e.g. a candidate synced since).

    Args:
        todo: the candidates still to screen.
        sizes: the race's prefix sizes.
        stored: revision -> n_scored of the rows a killed race left racing.
    """
    rounds = []
    for cand in todo:
        n = stored.get(cand.revision)
        if n is None or n not in sizes:
            return 0
        rounds.append(list(sizes).index(n) + 1)
    return min(rounds, default=0)


def screen_race(
    todo: Sequence[Pinned],
    *,
    setup: RaceSetup,
    composer_for: Callable[[Pinned], Composer],
    save: Callable[[Standing[Pinned], float], None],
    stored: Mapping[str, int | None] | None = None,
    each: Callable[[Sequence[Pinned]], Iterable[Pinned]] = iter,
    progress: bool = True,
) -> list[Standing[Pinned]]:
    """Race the candidates `todo` on the live model, saving every standing after each round.

    Args:
        todo: the candidates.
        setup: the shared settings.
        composer_for: a one-vector composer of a candidate on the live model.
        save: `save(standing, target_score_on_its_prefix)` commits one row (replacing the last round's).
        stored: revision -> n_scored of rows a killed race left racing (a rerun resumes after them).
        each: iterates one round's survivors.
        progress: show a progress bar per round.

    Returns:
        Every candidate's last standing.
    """
    sizes = race_sizes(len(setup.scorer.split), start=setup.start)
    chunks = ChunkScorer(setup.scorer, sizes) if len(sizes) > 1 else None
    cache: ChunkCache[Pinned] = ChunkCache(sizes)
    task = setup.scorer.split.task
    with progress_bar(*counted_columns("{task.description}", eta=True), enabled=progress) as bar:
        job = bar.add_task(f"race {task}", total=len(todo))

        def screen_one(cand: Pinned, r: int, arms: Arms | None) -> list[dict[str, Any]]:
            bar.update(job, description=f"race {task} ({sizes[r]} examples): {cand.repo_id}")
            composer = composer_for(cand)

            def evaluate(lam: float) -> ScoreResult:
                if chunks is None:  # one round: the whole split, as a screen without racing scores it
                    composer.apply([lam])
                    return setup.scorer.score()
                return cache.result(
                    cand, lam, upto=r, compute=chunks.chunk, prepare=lambda: composer.apply([lam])
                )

            tried = round_search(
                evaluate,
                how=setup.how,
                lambdas=setup.lambdas,
                harm_margin=setup.harm_margin,
                arms=arms,
                target_score=prefix_of(setup.target, sizes[r]).score,
            )
            composer.apply([0.0])
            bar.advance(job)
            return tried

        def on_round(scored: Sequence[Standing[Pinned]]) -> None:
            for s in scored:
                save(s, prefix_of(setup.target, s.n).score)
                if s.eliminated_round is not None or s.n == sizes[-1]:
                    cache.forget(s.candidate)
            alive = sum(1 for s in scored if s.eliminated_round is None)
            bar.reset(job, total=alive)

        start = resume_round(todo, sizes=sizes, stored=stored or {})
        return race(
            todo,
            task=task,
            sizes=sizes,
            screen_one=screen_one,
            rule=setup.rule,
            on_round=on_round,
            each=each,
            start_round=start,
        )


def race_todo(
    todo: Sequence[Pinned],
    *,
    setup: RaceSetup,
    plan: RacePlan,
    resolved: Resolved,
    row_for: Callable[..., dict[str, Any]],
    streaming: StreamSettings,
    vector_cache: Path | None,
    db_url: str | None,
    progress: bool,
) -> None:
    """A racing screen of `todo` on the live model (`setup.scorer.model`), rows replaced after each round.

    Args:
        todo: the candidates.
        setup: the shared settings of the race.
        plan: its lambda search, leaders kept and stored rounds.
        resolved: the target and base.
        row_for: `row_for(candidate=, tried=, target_score=)` -> a screening row (`search.screen.run`).
        streaming: the snapshot stream's settings (`search.screen.stream`).
        vector_cache: the vector cache.
        db_url: taskvec database URL.
        progress: show a progress bar.
    """

    def save(standing: Standing[Pinned], target_prefix_score: float) -> None:
        row = row_for(candidate=standing.candidate, tried=standing.tried, target_score=target_prefix_score)
        row["eliminated_round"] = standing.eliminated_round
        save_screening(row, db_url=db_url, target=setup.target, replace=True)
        # Done racing: its vector joins the best --keep-vectors, a dropped one ranks below every finisher
        if standing.eliminated_round is not None:
            stream.screened(standing.candidate, gain=-float("inf"))
        elif standing.n == len(setup.scorer.split):
            stream.screened(standing.candidate, gain=standing.best["score"] - target_prefix_score)

    def composer_for(cand: Pinned) -> Composer:  # streamed: later rounds read the vector cache
        found = stream.take(cand)
        composer = open_composer(
            setup.scorer.model,
            target=resolved.target.path,
            base=resolved.base,
            ingredients=[found],
            cache_dir=vector_cache,
        )
        stream.release(found)
        return composer

    with streaming.open(todo, base_revision=resolved.base.revision, vector_cache=vector_cache) as stream:
        screen_race(
            todo, setup=setup, composer_for=composer_for, save=save, stored=plan.stored, progress=progress
        )
