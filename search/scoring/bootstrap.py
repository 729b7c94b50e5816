"""Paired bootstrap intervals of a gain: how far one model's score beats another's, and how surely.

Both models' per-example predictions on the same examples are resampled together (the same example
indices for both, drawn with replacement), the task's metric is recomputed on every resample, and the
interval is the percentile interval of the resampled differences (invariant 6). The metric is recomputed
from per-resample confusion counts, which gives the values `TaskSpec.compute_metrics` gives on the same
resample (MRPC's F1 and accuracy, CoLA's MCC with an unparseable prediction a class of its own, a
degenerate resample's MCC 0 as scikit-learn returns it) without calling scikit-learn 2000 times.

A multi-task objective resamples each task's examples independently (paired within the task) and
recombines the resampled per-task scores as the objective does; `normalized-mean`'s references (the tasks'
own fine-tuned models' held-out scores) are kept fixed: their predictions are not stored.

Predictions are stored compactly as one character per example (`encode_labels`): the label id's digit,
`-` for an unparseable prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.errors import SearchError
from search.tasks.glue import INVALID_LABEL, TaskSpec, get_task

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
METHOD = "paired-bootstrap-percentile"
# Resamples drawn per block: bounds memory at block * n indices whatever the number of resamples.
_BLOCK = 256


@dataclass(frozen=True)
class GainInterval:
    """A gain (a's score minus b's, points x100) with its paired bootstrap interval.

    Attributes:
        gain: the gain on all the examples (the point estimate).
        lo, hi: the percentile interval's ends.
        level: its coverage, e.g. 0.95.
        resamples: bootstrap resamples drawn.
        seed: the resampling seed.
        n: examples per task (task -> n).
    """

    gain: float
    lo: float
    hi: float
    level: float
    resamples: int
    seed: int
    n: dict[str, int]

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0 (a gain, or a loss, that resampling does not explain)."""
        return self.lo > 0.0 or self.hi < 0.0

    def to_dict(self) -> dict[str, Any]:
        """The `gain_ci` a leaderboard row stores."""
        return {
            "lo": self.lo,
            "hi": self.hi,
            "gain": self.gain,
            "level": self.level,
            "resamples": self.resamples,
            "seed": self.seed,
            "n": dict(self.n),
            "method": METHOD,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GainInterval:
        return cls(
            gain=float(data["gain"]),
            lo=float(data["lo"]),
            hi=float(data["hi"]),
            level=float(data["level"]),
            resamples=int(data["resamples"]),
            seed=int(data["seed"]),
            n={t: int(v) for t, v in (data.get("n") or {}).items()},
        )


def encode_labels(values: Sequence[int] | np.ndarray) -> str:
    """Label ids as one character each: the digit, `-` for INVALID_LABEL (any id outside 0..9).

    Raises:
        SearchError: for an id above 9 (no GLUE task has that many labels).
    """
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    if (arr > 9).any():
        raise SearchError(f"cannot store label id {int(arr.max())} as one digit")
    return "".join("-" if v < 0 else chr(48 + int(v)) for v in arr)


def decode_labels(text: str) -> np.ndarray:
    """The inverse of `encode_labels` (`-` -> INVALID_LABEL)."""
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    return np.where(codes < 0, INVALID_LABEL, codes)


def _codes(spec: TaskSpec, labels: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, int]:
    """One code per example, gold index * (L + 1) + predicted index (L for a non-label), and L."""
    ids = np.asarray(spec.label_ids, dtype=np.int64)
    n_labels = len(ids)
    if not np.isin(labels, ids).all():
        raise SearchError(f"{spec.name}: gold labels outside {spec.label_ids}")
    gold = np.searchsorted(ids, labels)
    valid = np.isin(predictions, ids)
    pred = np.where(valid, np.searchsorted(ids, np.where(valid, predictions, ids[0])), n_labels)
    return gold * (n_labels + 1) + pred, n_labels


def _metric(spec: TaskSpec, counts: np.ndarray) -> np.ndarray:
    """The paper's score x100 per resample from confusion counts (resamples, L, L + 1)."""
    n_labels = counts.shape[1]
    counts = counts.astype(np.float64)
    total = counts.sum(axis=(1, 2))
    if spec.metric == "mcc":
        # scikit-learn's matthews_corrcoef on the confusion matrix, the invalid column a class of its own.
        t_sum = counts.sum(axis=2)
        p_sum = counts.sum(axis=1)
        correct = np.trace(counts[:, :, :n_labels], axis1=1, axis2=2)
        cov_ytyp = correct * total - (t_sum * p_sum[:, :n_labels]).sum(axis=1)
        cov_ypyp = total**2 - (p_sum * p_sum).sum(axis=1)
        cov_ytyt = total**2 - (t_sum * t_sum).sum(axis=1)
        denom = cov_ytyt * cov_ypyp
        safe = np.where(denom == 0, 1.0, denom)
        return np.where(denom == 0, 0.0, 100.0 * cov_ytyp / np.sqrt(safe))
    # Accuracy and F1 count an invalid prediction as the first other label, as compute_metrics does.
    square = counts[:, :, :n_labels].copy()
    for g in range(n_labels):
        square[:, g, 1 if g == 0 else 0] += counts[:, g, n_labels]
    acc = 100.0 * np.trace(square, axis1=1, axis2=2) / total
    if spec.metric == "accuracy":
        return acc
    if spec.metric == "f1_acc":
        pos = list(spec.label_ids).index(1)
        tp = square[:, pos, pos]
        fp = square[:, :, pos].sum(axis=1) - tp
        fn = square[:, pos, :].sum(axis=1) - tp
        denom = 2 * tp + fp + fn
        f1 = np.where(denom == 0, 0.0, 100.0 * 2 * tp / np.where(denom == 0, 1.0, denom))
        return (f1 + acc) / 2.0
    raise SearchError(f"{spec.name}: no bootstrap for metric {spec.metric!r}")


def resampled_scores(
    *, task: str, labels: Sequence[int] | np.ndarray, predictions: np.ndarray, indices: np.ndarray
) -> np.ndarray:
    """The task's score x100 on each resample: row r of `indices` (resamples, n) lists its examples."""
    spec = get_task(task)
    codes, n_labels = _codes(spec, np.asarray(labels, dtype=np.int64), np.asarray(predictions, np.int64))
    width = n_labels * (n_labels + 1)
    picked = codes[np.asarray(indices, dtype=np.int64)]
    offsets = (np.arange(picked.shape[0], dtype=np.int64) * width)[:, None]
    counts = np.bincount((picked + offsets).ravel(), minlength=picked.shape[0] * width)
    return _metric(spec, counts.reshape(picked.shape[0], n_labels, n_labels + 1))


def _check(task: str, labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    if len(labels) == 0 or not len(labels) == len(a) == len(b):
        raise SearchError(
            f"{task}: a paired bootstrap needs predictions of both models on the same examples "
            f"(got {len(a)} and {len(b)} for {len(labels)} labels)"
        )


def _paired_diffs(
    task: str, labels: np.ndarray, a: np.ndarray, b: np.ndarray, *, resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(a's, b's) scores on the same `resamples` resamples of the examples."""
    n = len(labels)
    score_a, score_b = [], []
    for start in range(0, resamples, _BLOCK):
        idx = rng.integers(0, n, size=(min(_BLOCK, resamples - start), n))
        score_a.append(resampled_scores(task=task, labels=labels, predictions=a, indices=idx))
        score_b.append(resampled_scores(task=task, labels=labels, predictions=b, indices=idx))
    return np.concatenate(score_a), np.concatenate(score_b)


def _interval(diffs: np.ndarray, *, gain: float, level: float, resamples: int, seed: int, n) -> GainInterval:
    if not 0.0 < level < 1.0:
        raise SearchError(f"interval level {level} must lie strictly between 0 and 1")
    lo, hi = np.percentile(diffs, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return GainInterval(
        gain=float(gain), lo=float(lo), hi=float(hi), level=level, resamples=resamples, seed=seed, n=n
    )


def paired_bootstrap(
    *,
    labels: Sequence[int] | np.ndarray,
    preds_a: Sequence[int] | np.ndarray,
    preds_b: Sequence[int] | np.ndarray,
    task: str,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> GainInterval:
    """The paired bootstrap interval of a's gain over b (score(a) - score(b), x100) on one task.

    Args:
        labels: gold label ids of the examples.
        preds_a, preds_b: each model's predicted label ids on the same examples, in the same order
            (INVALID_LABEL for an unparseable generation).
        task: the task whose metric is recomputed per resample (e.g. `mrpc`, `cola`).
        resamples: bootstrap resamples (numpy `default_rng(seed)`).
        seed: the resampling seed: the same inputs and seed give the same interval.
        level: coverage of the percentile interval.

    Raises:
        SearchError: for lengths that differ or no examples, or gold labels outside the task's ids.
    """
    y, a, b = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (labels, preds_a, preds_b))
    _check(task, y, a, b)
    spec = get_task(task)
    gain = spec.compute_metrics(y, a)["score"] - spec.compute_metrics(y, b)["score"]
    sa, sb = _paired_diffs(task, y, a, b, resamples=resamples, rng=np.random.default_rng(seed))
    return _interval(sa - sb, gain=gain, level=level, resamples=resamples, seed=seed, n={task: len(y)})


def combine_scores(
    scores: Mapping[str, np.ndarray | float], *, objective: str, references: Mapping[str, float] | None
) -> np.ndarray:
    """Per-task scores (arrays over resamples, or numbers) combined as `objective` combines them.

    `mean` and `pareto`: the plain mean; `normalized-mean`: 100 * mean(score / reference); `score`: the one
    task's score (the same as `search.study.objectives.combine`, vectorised).

    Raises:
        SearchError: a missing or non-positive reference under normalized-mean, or an unknown objective.
    """
    tasks = sorted(scores)
    if objective in ("score", "mean", "pareto"):
        return np.mean([np.asarray(scores[t], dtype=np.float64) for t in tasks], axis=0)
    if objective != "normalized-mean":
        raise SearchError(f"no bootstrap for objective {objective!r}")
    refs = references or {}
    parts = []
    for t in tasks:
        ref = refs.get(t)
        if ref is None or not ref > 0:
            raise SearchError(f"normalized-mean: {t} needs a positive fine-tuned reference score, got {ref}")
        parts.append(np.asarray(scores[t], dtype=np.float64) / float(ref))
    return 100.0 * np.mean(parts, axis=0)


def paired_bootstrap_objective(
    *,
    labels: Mapping[str, Sequence[int] | np.ndarray],
    preds_a: Mapping[str, Sequence[int] | np.ndarray],
    preds_b: Mapping[str, Sequence[int] | np.ndarray],
    objective: str,
    references: Mapping[str, float] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> GainInterval:
    """The paired bootstrap interval of a's objective minus b's over several tasks.

    Each task's examples are resampled independently (the same indices for a and b within a task, from
    `SeedSequence(seed).spawn` in sorted task order; one task: `default_rng(seed)`, as `paired_bootstrap`),
    each task's metric recomputed, and the per-task scores recombined as `objective` does; `references`
    (normalized-mean's divisors) stay fixed.

    Args:
        labels, preds_a, preds_b: task -> gold ids and each model's predictions on the same examples.
        objective: `mean`, `normalized-mean`, `pareto` (its summary number, the mean) or `score`.
        references: task -> the task's own fine-tuned model's score on these examples (normalized-mean).
        resamples, seed, level: as `paired_bootstrap`.

    Raises:
        SearchError: tasks that differ between the three mappings, lengths that differ, a bad reference.
    """
    tasks = sorted(labels)
    if not tasks or sorted(preds_a) != tasks or sorted(preds_b) != tasks:
        raise SearchError(f"paired bootstrap: tasks differ ({tasks}, {sorted(preds_a)}, {sorted(preds_b)})")
    # One task draws as `paired_bootstrap` does, so both give the same interval on the same predictions.
    children = [seed] if len(tasks) == 1 else np.random.SeedSequence(seed).spawn(len(tasks))
    res_a, res_b, full_a, full_b, n = {}, {}, {}, {}, {}
    for t, child in zip(tasks, children, strict=True):
        y, a, b = (np.asarray(v[t], dtype=np.int64).reshape(-1) for v in (labels, preds_a, preds_b))
        _check(t, y, a, b)
        spec = get_task(t)
        full_a[t], full_b[t] = spec.compute_metrics(y, a)["score"], spec.compute_metrics(y, b)["score"]
        res_a[t], res_b[t] = _paired_diffs(t, y, a, b, resamples=resamples, rng=np.random.default_rng(child))
        n[t] = len(y)
    gain = float(
        combine_scores(full_a, objective=objective, references=references)
        - combine_scores(full_b, objective=objective, references=references)
    )
    diffs = combine_scores(res_a, objective=objective, references=references) - combine_scores(
        res_b, objective=objective, references=references
    )
    return _interval(diffs, gain=gain, level=level, resamples=resamples, seed=seed, n=n)


PREDICTIONS_VERSION = 1


def pack_predictions(per_task: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The stored form of held-out predictions: task -> {fingerprint, labels, row, target} strings.

    Args:
        per_task: task -> {"fingerprint": the split's, "labels", "row", "target": label-id arrays in the
            split's order (gold, the row's predictions, the target's)}.
    """
    return {
        "version": PREDICTIONS_VERSION,
        "tasks": {
            t: {
                "fingerprint": str(v["fingerprint"]),
                **{k: encode_labels(v[k]) for k in ("labels", "row", "target")},
            }
            for t, v in per_task.items()
        },
    }


def unpack_predictions(stored: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """task -> {"labels", "row", "target"} arrays from `pack_predictions`'s form.

    Raises:
        SearchError: for a version this code does not read.
    """
    if stored.get("version") != PREDICTIONS_VERSION:
        raise SearchError(f"stored predictions of version {stored.get('version')!r}: cannot read them")
    return {
        t: {k: decode_labels(v[k]) for k in ("labels", "row", "target")} for t, v in stored["tasks"].items()
    }


def stored_interval(
    stored: Mapping[str, Any],
    *,
    objective: str,
    references: Mapping[str, float] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> GainInterval:
    """The row's gain over the target with its interval, from stored predictions (no rescoring).

    One task: `paired_bootstrap`; several: `paired_bootstrap_objective` with `references` fixed.
    """
    per_task = unpack_predictions(stored)
    if len(per_task) == 1 and objective == "score":
        ((task, v),) = per_task.items()
        return paired_bootstrap(
            labels=v["labels"], preds_a=v["row"], preds_b=v["target"], task=task,
            resamples=resamples, seed=seed, level=level,
        )  # fmt: skip
    return paired_bootstrap_objective(
        labels={t: v["labels"] for t, v in per_task.items()},
        preds_a={t: v["row"] for t, v in per_task.items()},
        preds_b={t: v["target"] for t, v in per_task.items()},
        objective=objective,
        references=references,
        resamples=resamples,
        seed=seed,
        level=level,
    )


def verdict(ci: Mapping[str, Any] | None) -> str | None:
    """What a stored `gain_ci` says: `no significant gain` when its interval contains 0, else a
    `significant gain` (or `significant loss`); None without an interval."""
    if not ci:
        return None
    if float(ci["lo"]) > 0.0:
        return "significant gain"
    if float(ci["hi"]) < 0.0:
        return "significant loss"
    return "no significant gain"
