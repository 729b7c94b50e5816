"""GLUE task specs in T5's text-to-text format: prompts, label words, GLUE label ids and metrics.

Scores are the paper's metric x100: MRPC mean(F1 of class 1, accuracy), CoLA Matthews correlation,
RTE and SST-2 accuracy. Metrics come from scikit-learn exactly as GLUE defines them (`evaluate` needs
the Hub). An unparseable prediction (label id -1, e.g. a generation that is not a label word) always
counts as wrong, as in T5: a wrong label for accuracy and F1, a class of its own for MCC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from search.errors import DataError

GLUE_TASKS = ("mrpc", "rte", "cola", "sst2")
GLUE_HUB_DATASET = "nyu-mll/glue"
INVALID_LABEL = -1


METRIC_NAMES = {"accuracy": "accuracy", "mcc": "Matthews corr.", "f1_acc": "mean(F1, accuracy)"}


@dataclass(frozen=True)
class TaskSpec:
    """One classification task in T5 format.

    Attributes:
        name: GLUE config name (`mrpc`, `rte`, `cola`, `sst2`, ...).
        text_fields: dataset columns that make up the input, in prompt order.
        label_words: GLUE label id -> the word T5 emits for it.
        metric: `accuracy`, `mcc` or `f1_acc` (mean of F1 of class 1 and accuracy).
        prompt_names: names printed before each text field in the prompt (defaults to the columns).
    """

    name: str
    text_fields: tuple[str, ...]
    label_words: Mapping[int, str]
    metric: str
    prompt_names: tuple[str, ...] = field(default=())

    @property
    def label_ids(self) -> tuple[int, ...]:
        """GLUE label ids in ascending order (the order of the scorer's label columns)."""
        return tuple(sorted(self.label_words))

    @property
    def metric_name(self) -> str:
        """The paper's metric as a reader names it (every printed score says which it is)."""
        return METRIC_NAMES[self.metric]

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns a GLUE parquet file of this task must have."""
        return (*self.text_fields, "label", "idx")

    def format_input(self, row: Mapping[str, object]) -> str:
        """The T5 prompt for one example, e.g. `rte sentence1: ... sentence2: ...`."""
        names = self.prompt_names or self.text_fields
        parts = [self.name]
        for name, col in zip(names, self.text_fields, strict=True):
            parts.append(f"{name}: {row[col]}")
        return " ".join(parts)

    def target_text(self, label: int) -> str:
        """The label word T5 is trained to emit for GLUE label id `label`."""
        return self.label_words[int(label)]

    def parse_prediction(self, text: str) -> int:
        """Map a generated string back to a label id, or INVALID_LABEL if it is no label word."""
        text = text.strip()
        for label, word in self.label_words.items():
            if text == word:
                return label
        return INVALID_LABEL

    def compute_metrics(self, labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
        """All metrics of this task, x100, plus `score` (the paper's metric).

        Args:
            labels: gold GLUE label ids.
            predictions: predicted label ids; anything else (INVALID_LABEL) counts as wrong.

        Returns:
            `{"accuracy", "score"}` plus `mcc` (CoLA) or `f1` (MRPC), all x100.

        Raises:
            DataError: if there are no examples, the two sequences differ in length, or a gold label is
                not one of the task's ids.
        """
        # scikit-learn costs about a second to import: only commands that score pay it (the leaderboard,
        # which names metrics through this module, must start fast).
        from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        p = np.asarray(predictions, dtype=np.int64).reshape(-1)
        if len(y) == 0 or len(y) != len(p):
            raise DataError(f"{self.name}: cannot score {len(p)} predictions against {len(y)} labels")
        ids = np.asarray(self.label_ids, dtype=np.int64)
        bad_gold = ~np.isin(y, ids)
        if bad_gold.any():
            # e.g. GLUE's test split (labels -1): such examples cannot be scored.
            raise DataError(
                f"{self.name}: gold label {int(y[bad_gold][0])} is not one of the task's ids {self.label_ids}"
            )
        # Anything that is not a label id (INVALID_LABEL from an unparseable generation) counts as wrong.
        invalid = ~np.isin(p, ids)
        raw = np.where(invalid, INVALID_LABEL, p)
        if invalid.any():
            # For F1 and accuracy: replace it by a wrong label, as T5's `f1_score_with_invalid` does.
            p = p.copy()
            other = {lab: next(o for o in self.label_ids if o != lab) for lab in self.label_ids}
            p[invalid] = [other[int(t)] for t in y[invalid]]
        acc = 100.0 * float(accuracy_score(y, p))
        if self.metric == "accuracy":
            return {"accuracy": acc, "score": acc}
        if self.metric == "mcc":
            # As T5 computes it: INVALID_LABEL stays a class of its own, so invalid outputs carry no
            # information (all invalid -> 0) instead of looking perfectly anti-correlated (-100) as the
            # wrong-label substitution would make them. sklearn returns 0.0 when one class is never
            # predicted (the GLUE convention).
            mcc = 100.0 * float(matthews_corrcoef(y, raw))
            return {"mcc": mcc, "accuracy": acc, "score": mcc}
        if self.metric == "f1_acc":
            f1 = 100.0 * float(f1_score(y, p, pos_label=1, average="binary", zero_division=0.0))
            return {"f1": f1, "accuracy": acc, "score": (f1 + acc) / 2.0}
        raise ValueError(f"unknown metric {self.metric!r}")


TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", ("sentence",), {0: "unacceptable", 1: "acceptable"}, "mcc"),
    "sst2": TaskSpec("sst2", ("sentence",), {0: "negative", 1: "positive"}, "accuracy"),
    "mrpc": TaskSpec("mrpc", ("sentence1", "sentence2"), {0: "not_equivalent", 1: "equivalent"}, "f1_acc"),
    "rte": TaskSpec("rte", ("sentence1", "sentence2"), {0: "entailment", 1: "not_entailment"}, "accuracy"),
}
"""The four target tasks of the paper's T5 experiment."""

AUX_TASKS: dict[str, TaskSpec] = {
    "qqp": TaskSpec("qqp", ("question1", "question2"), {0: "not_duplicate", 1: "duplicate"}, "f1_acc"),
    "mnli": TaskSpec(
        "mnli",
        ("hypothesis", "premise"),
        {0: "entailment", 1: "neutral", 2: "contradiction"},
        "accuracy",
    ),
    # The pico zoo's unrelated task: which domain a review sentence comes from.
    "topic": TaskSpec("topic", ("sentence",), {0: "cinema", 1: "dining"}, "accuracy"),
}
"""Other tasks checkpoints are fine-tuned on (candidates); extended by the pico zoo."""


def get_task(name: str) -> TaskSpec:
    """Look a task up by name.

    Raises:
        DataError: for an unknown task, listing the known ones.
    """
    spec = TASKS.get(name) or AUX_TASKS.get(name)
    if spec is None:
        known = ", ".join([*TASKS, *AUX_TASKS])
        raise DataError(f"unknown task {name!r} (known: {known})")
    return spec
