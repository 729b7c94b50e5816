"""The surrogate: predict a composition's search score from what screening computed, correct it with the
study's exact trials, and propose the next exact trial.

Additive prediction (the paper's near-orthogonality): each candidate's effect on every example's label
log-probs adds, so for coefficients `c`

    lp(c) = lp_T + sum_i [lp_i(c_i) - lp_T]

where `lp_T` is the target's per-example label log-probs and `lp_i(lambda)` candidate i's, interpolated
linearly between its screened lambdas (lambda 0 is the target itself) and extrapolated linearly beyond
the last one. The additive score is the task's metric on the argmax of `lp(c)`; at a screened lambda of
one candidate it is exactly that screening's score.

Correction: a Gaussian process over the coefficients (scaled by `lambda_max`) models the residual
`exact - additive` of the study's completed trials, so the corrected prediction is the additive one plus
the residual's posterior mean (far from any trial: the mean residual). Proposal: the best upper
confidence bound (mean + `kappa` std) over a pool of random, local and refined compositions, enqueued into
the study as its next trial. The study, pruner and leaderboard see only exact scores; the prediction is
kept as the trial's `surrogate_score`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.trial import TrialState
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, WhiteKernel

from search.screen.store import LambdaLogprobs, screening_logprobs
from search.study.context import StudyContext
from search.study.space import coefficients_from_params, lambda_param, use_param
from search.tasks.glue import get_task

SURROGATE_ATTR = "surrogate_score"
MIN_FIT = 3  # fewer completed trials than this: no residual model, only the additive prediction
REOPTIMIZE_EVERY = 5  # the proposer re-optimizes the GP's hyperparameters every this many refits


@dataclass(frozen=True)
class Grid:
    """The screening grid of a study's candidates on one search split, examples aligned.

    Attributes:
        task: the task.
        labels: (n,) gold label id per example.
        label_ids: (L,) the task's label ids (the log-probs' columns).
        target: (n, L) the target's label log-probs.
        lambdas: per candidate, its screened lambdas ascending, starting with 0 (the target).
        logprobs: per candidate, (k, n, L) the log-probs at those lambdas.
    """

    task: str
    labels: np.ndarray
    label_ids: np.ndarray
    target: np.ndarray
    lambdas: tuple[np.ndarray, ...]
    logprobs: tuple[np.ndarray, ...]

    @property
    def n_candidates(self) -> int:
        return len(self.lambdas)

    def additive_logprobs(self, coefs: np.ndarray) -> np.ndarray:
        """(B, n, L) predicted label log-probs of the compositions `coefs` (B, m)."""
        coefs = np.atleast_2d(np.asarray(coefs, dtype=np.float64))
        out = np.broadcast_to(self.target, (len(coefs), *self.target.shape)).astype(np.float64)
        for i, (lams, lps) in enumerate(zip(self.lambdas, self.logprobs, strict=True)):
            c = coefs[:, i]
            if not np.any(c != 0.0):
                continue
            k = np.clip(np.searchsorted(lams, c, side="right") - 1, 0, len(lams) - 2)
            # Unclipped weight: beyond the last screened lambda the last segment's slope continues.
            w = ((c - lams[k]) / (lams[k + 1] - lams[k]))[:, None, None]
            out = out + (lps[k] + w * (lps[k + 1] - lps[k]) - self.target)
        return out

    def scores(self, logprobs: np.ndarray) -> np.ndarray:
        """(B,) the task's score x100 of the argmax predictions of `logprobs` (B, n, L)."""
        preds = self.label_ids[np.argmax(logprobs, axis=-1)]
        return batch_scores(self.task, self.labels, preds)

    def additive_scores(self, coefs: np.ndarray) -> np.ndarray:
        """(B,) the additive prediction's score of each composition."""
        return self.scores(self.additive_logprobs(coefs))


def batch_scores(task: str, labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """The task's score x100 (`TaskSpec.compute_metrics`' `score`) of each row of `preds` (B, n), at once.

    The four GLUE tasks here are binary with positive class 1: accuracy, MRPC's mean(F1 of 1, accuracy),
    CoLA's Matthews correlation (0 when undefined, as scikit-learn's).
    """
    metric = get_task(task).metric
    y = np.asarray(labels)[None, :] == 1
    p = np.asarray(preds) == 1
    tp = (y & p).sum(1).astype(np.float64)
    tn = (~y & ~p).sum(1).astype(np.float64)
    fp = (~y & p).sum(1).astype(np.float64)
    fn = (y & ~p).sum(1).astype(np.float64)
    acc = 100.0 * (tp + tn) / y.shape[1]
    if metric == "accuracy":
        return acc
    if metric == "f1_acc":
        denom = 2 * tp + fp + fn
        f1 = np.where(denom > 0, 100.0 * 2 * tp / np.maximum(denom, 1), 0.0)
        return (f1 + acc) / 2.0
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.where(denom > 0, 100.0 * (tp * tn - fp * fn) / np.where(denom > 0, denom, 1.0), 0.0)


def build_grid(*, task: str, labels: np.ndarray, screened: Sequence[Sequence[LambdaLogprobs]]) -> Grid | None:
    """Align the candidates' stored lambdas on the examples they all share.

    Args:
        task: the task.
        labels: gold label per row of the search split (the stored positions index it).
        screened: per candidate, its stored lambdas ascending (lambda 0 first: the target).

    Returns:
        The grid, or None when a candidate has no stored log-probs (screened before they were kept) or no
        lambda besides the target's.
    """
    if not screened or any(len(s) < 2 or s[0].lam != 0.0 for s in screened):
        return None
    common = screened[0][0].positions
    for rows in screened:
        for r in rows:
            common = np.intersect1d(common, r.positions)
    if len(common) == 0:
        return None

    def aligned(r: LambdaLogprobs) -> np.ndarray:
        order = np.argsort(r.positions)
        return r.logprobs[order[np.searchsorted(r.positions[order], common)]].astype(np.float64)

    target = aligned(screened[0][0])
    return Grid(
        task=task,
        labels=np.asarray(labels)[common],
        label_ids=np.asarray(get_task(task).label_ids, dtype=np.int64),
        target=target,
        lambdas=tuple(np.array([r.lam for r in rows]) for rows in screened),
        logprobs=tuple(np.stack([target, *(aligned(r) for r in rows[1:])]) for rows in screened),
    )


def load_grid(
    *,
    task: str,
    target_revision: str,
    split_fingerprint: str,
    candidate_revisions: Sequence[str],
    labels: np.ndarray,
    db_url: str | None,
) -> Grid | None:
    """The stored grid of these candidates (in this order), or None when some have no stored log-probs."""
    stored = screening_logprobs(
        task=task, target_revision=target_revision, split_fingerprint=split_fingerprint, db_url=db_url
    )
    return build_grid(task=task, labels=labels, screened=[stored.get(r, []) for r in candidate_revisions])


@dataclass
class Surrogate:
    """The additive prediction corrected by a GP over the residuals of exact trials.

    Args:
        grid: the screening grid.
        lambda_max: bound of every coefficient (scales the GP's inputs).
    """

    grid: Grid
    lambda_max: float
    gp: GaussianProcessRegressor | None = field(default=None, init=False)
    mean_residual: float = field(default=0.0, init=False)
    kernel: Kernel | None = field(default=None, init=False)

    def fit(self, coefs: np.ndarray, exact: np.ndarray, *, optimize: bool = True) -> Surrogate:
        """Fit the residual model on exact scores of compositions `coefs` (N, m).

        `optimize=False` keeps the kernel's hyperparameters of the last optimized fit (a study refits
        after every trial; re-optimizing each time costs more than a pico model's trial).
        """
        coefs = np.atleast_2d(np.asarray(coefs, dtype=np.float64))
        exact = np.asarray(exact, dtype=np.float64)
        self.gp, self.mean_residual = None, 0.0
        if len(exact) == 0:
            return self
        residual = exact - self.grid.additive_scores(coefs)
        self.mean_residual = float(residual.mean())
        if len(exact) < MIN_FIT:
            return self
        if optimize or self.kernel is None:
            kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(0.5, (0.05, 10.0)) + WhiteKernel(
                0.1, (1e-4, 10.0)
            )
            gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=0)
        else:
            gp = GaussianProcessRegressor(kernel=self.kernel, normalize_y=True, optimizer=None)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a bound reached is a fine fit here
            gp.fit(coefs / self.lambda_max, residual)
        self.gp, self.kernel = gp, gp.kernel_
        return self

    def predict(self, coefs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of the corrected prediction of each composition (B, m); std 0 without a GP."""
        coefs = np.atleast_2d(np.asarray(coefs, dtype=np.float64))
        additive = self.grid.additive_scores(coefs)
        if self.gp is None:
            return additive + self.mean_residual, np.zeros(len(coefs))
        mean, std = self.gp.predict(coefs / self.lambda_max, return_std=True)
        return additive + mean, std


def candidate_pool(
    rng: np.random.Generator, *, m: int, lambda_max: float, around: np.ndarray, size: int
) -> np.ndarray:
    """Compositions to rank: random subsets with uniform coefficients, and jitters of `around` (K, m)."""
    n_rand = size if len(around) == 0 else size // 2
    p_use = rng.uniform(0.15, 0.85, size=(n_rand, 1))
    rand = np.where(rng.random((n_rand, m)) < p_use, rng.uniform(0, lambda_max, (n_rand, m)), 0.0)
    if len(around) == 0:
        return rand
    base = around[rng.integers(0, len(around), size - n_rand)]
    jitter = base + rng.normal(0.0, 0.12 * lambda_max, base.shape) * (base > 0)
    flip = rng.random(base.shape) < 1.0 / max(m, 2)
    jitter = np.where(flip, np.where(base > 0, 0.0, rng.uniform(0, lambda_max, base.shape)), jitter)
    return np.vstack([rand, np.clip(jitter, 0.0, lambda_max)])


def propose(
    surrogate: Surrogate,
    *,
    done: np.ndarray,
    exact: np.ndarray,
    rng: np.random.Generator,
    kappa: float = 1.0,
    pool: int = 1024,
) -> tuple[np.ndarray, float]:
    """The composition with the best upper confidence bound, none of those already scored.

    Returns:
        Its coefficients (m,) and its predicted (corrected) score.
    """
    m = surrogate.grid.n_candidates
    lmax = surrogate.lambda_max
    top = done[np.argsort(-exact)[:5]] if len(done) else np.zeros((0, m))
    first = candidate_pool(rng, m=m, lambda_max=lmax, around=top, size=pool)
    mean, std = surrogate.predict(first)
    best = first[np.argsort(-(mean + kappa * std))[:16]]
    second = candidate_pool(rng, m=m, lambda_max=lmax, around=best, size=pool)
    pool_all = np.vstack([first, second])
    mean, std = surrogate.predict(pool_all)
    ucb = mean + kappa * std
    if len(done):
        seen = np.min(np.abs(pool_all[:, None, :] - done[None, :, :]).max(-1), axis=1) < 1e-3
        ucb = np.where(seen, -np.inf, ucb)
    k = int(np.argmax(ucb))
    return pool_all[k], float(mean[k])


class SurrogateProposer:
    """Proposes a study's next trial by enqueueing the surrogate's pick; 1 in `sampler_every` is left to the
    study's own sampler (exploration the surrogate cannot bias).

    Args:
        grid: the candidates' screening grid, in the study's candidate order.
        repos: the candidates' repo ids in that order (the trial parameters' names).
        lambda_max: bound of every coefficient.
        seed: seed of the proposal pools.
        sampler_every: every this-many-th proposal is the sampler's (0: never).
    """

    def __init__(
        self, *, grid: Grid, repos: Sequence[str], lambda_max: float, seed: int = 0, sampler_every: int = 3
    ) -> None:
        self.surrogate = Surrogate(grid=grid, lambda_max=lambda_max)
        self.repos = list(repos)
        self.rng = np.random.default_rng(seed)
        self.sampler_every = sampler_every
        self.turns = 0

    def refit(self, study: optuna.Study) -> None:
        """Fit the residual model on the study's completed trials (exact full-split scores)."""
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        coefs = np.array([coefficients_from_params(t.params, self.repos) for t in trials]).reshape(
            len(trials), len(self.repos)
        )
        optimize = self.turns % REOPTIMIZE_EVERY == 1
        self.surrogate.fit(coefs, np.array([float(t.value) for t in trials]), optimize=optimize)
        self._done, self._exact = coefs, np.array([float(t.value) for t in trials])

    def predict(self, coefs: Sequence[float]) -> float:
        """The corrected prediction of one composition under the last fit."""
        return float(self.surrogate.predict(np.asarray(coefs)[None, :])[0][0])

    def enqueue(self, study: optuna.Study) -> bool:
        """Refit and enqueue the surrogate's pick as the next trial; False on the sampler's turn."""
        self.turns += 1
        self.refit(study)
        if self.sampler_every and self.turns % self.sampler_every == 0:
            return False
        coefs, predicted = propose(self.surrogate, done=self._done, exact=self._exact, rng=self.rng)
        attrs = {SURROGATE_ATTR: predicted, "proposed_by": "surrogate"}
        study.enqueue_trial(params_of(coefs, self.repos), user_attrs=attrs)
        return True


def params_of(coefs: Sequence[float], repos: Sequence[str]) -> dict[str, object]:
    """Trial parameters of a composition (the search space's names)."""
    params: dict[str, object] = {}
    for repo, c in zip(repos, coefs, strict=True):
        params[use_param(repo)] = bool(c > 0)
        if c > 0:
            params[lambda_param(repo)] = float(c)
    return params


def proposer_for(
    context: StudyContext, *, labels: np.ndarray, seed: int, db_url: str | None
) -> tuple[SurrogateProposer | None, str]:
    """The study's proposer, or None with the reason it is off (one line either way).

    Args:
        context: the study (a one-task study of the target's screened helpers).
        labels: gold label per row of the study's search split.
        seed: seed of the proposal pools.
        db_url: taskvec database URL (the stored screening log-probs).
    """
    if len(context.tasks) != 1 or any(c.role is not None for c in context.candidates):
        return None, "surrogate: off (it predicts one task's compositions of screened helpers)"
    grid = load_grid(
        task=context.tasks[0],
        target_revision=context.target.revision,
        split_fingerprint=context.split_fingerprints.search,
        candidate_revisions=[c.revision for c in context.candidates],
        labels=labels,
        db_url=db_url,
    )
    if grid is None:
        return None, "surrogate: off (screenings stored before per-example log-probs were kept: rescreen)"
    proposer = SurrogateProposer(grid=grid, repos=context.repos, lambda_max=context.lambda_max, seed=seed)
    return proposer, (
        f"surrogate: on (additive from {grid.n_candidates} screened grids on {len(grid.labels)} examples, "
        "GP-corrected by the exact trials; it proposes, exact scores decide)"
    )
