"""The study's context: what is frozen into the study once (`StudyContext`), and what each worker measures.

`StudyContext` is stored in the study's user attribute `taskvec` when the study is created and never
rewritten, so a resumed study and every worker joining it search the same space with the same settings.
`TargetScores` is what each worker computes for itself on joining (the target's own scores, deterministic)
and is never stored in the study; it goes into every leaderboard row.

One study shape: a study scores one or several tasks. The stored forms keep the compact layout one-task
studies always had (a single value where several tasks store task -> value, see `one_or_each`), so rows
and studies written before read and compare the same. Studies created before tasks, objectives, controls
and references existed lack those keys; `StudyContext.from_attr` reads them as one task, objective
`score`, no controls and no separately scored references.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from search.errors import SearchError
from search.scoring.settings import ScorerSettings
from search.study.config import SearchConfig
from search.study.objectives import Control, combine

STUDY_ATTR = "taskvec"
# The resolved settings of the command that created the study (flags, environment, config file and
# defaults, after the data source and candidates were decided): `taskvec leaderboard --study S --config`.
CONFIG_ATTR = "taskvec_config"


def combined_fingerprint(fingerprints: Mapping[str, str]) -> str:
    """One fingerprint for several tasks' splits (task order matters: it is the reporting order)."""
    text = ";".join(f"{task}:{fp}" for task, fp in fingerprints.items())
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Pin:
    """A model pinned by repo id and revision (where it lies on disk is `registry.pins`' answer)."""

    repo_id: str
    revision: str

    def to_dict(self) -> dict[str, str]:
        return {"repo_id": self.repo_id, "revision": self.revision}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pin:
        return cls(repo_id=data["repo_id"], revision=data["revision"])


@dataclass(frozen=True)
class Candidate:
    """One ingredient of the search space.

    Attributes:
        repo_id, revision: the pinned fine-tuned model.
        best_lambda: its best screened coefficient (a reference of several tasks: 1.0).
        gain: its screening gain (a reference: 0.0).
        role: `reference` (a task's own fine-tuned model) or `helper` (a screened helper of a reference);
            None where the candidates are the target's own screened helpers (a one-task study).
        task: the task it is the reference of, or whose reference it helps (None with `role`).
    """

    repo_id: str
    revision: str
    best_lambda: float
    gain: float
    role: str | None = None
    task: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "best_lambda": self.best_lambda,
            "gain": self.gain,
        }
        if self.role is not None:
            out.update(role=self.role, task=self.task)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(
            repo_id=data["repo_id"],
            revision=data["revision"],
            best_lambda=float(data["best_lambda"]),
            gain=float(data["gain"]),
            role=data.get("role"),
            task=data.get("task"),
        )


@dataclass(frozen=True)
class Reference:
    """A task's own fine-tuned model, scored on its splits (the divisor of `normalized-mean`)."""

    repo_id: str
    revision: str
    score_search: float
    score_heldout: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "score_search": self.score_search,
            "score_heldout": self.score_heldout,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        return cls(
            repo_id=data["repo_id"],
            revision=data["revision"],
            score_search=float(data["score_search"]),
            score_heldout=float(data["score_heldout"]),
        )


@dataclass(frozen=True)
class SplitFingerprints:
    """Fingerprints of the study's splits.

    Attributes:
        search, heldout: the objective's splits: one task's own, or `combined_fingerprint` of several.
        tasks: task -> {"search", "heldout"} (several tasks only).
        controls: control task -> {"search", "heldout"} (guarded studies only).
    """

    search: str
    heldout: str
    tasks: dict[str, dict[str, str]] = field(default_factory=dict)
    controls: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, per_task: Mapping[str, Mapping[str, str]], controls: Mapping[str, Mapping[str, str]]
    ) -> SplitFingerprints:
        """From task -> {"search", "heldout"} of the objective's tasks and of the control tasks."""
        several = len(per_task) > 1

        def joined(split: str) -> str:
            fps = {t: fp[split] for t, fp in per_task.items()}
            return combined_fingerprint(fps) if several else next(iter(fps.values()))

        return cls(
            search=joined("search"),
            heldout=joined("heldout"),
            tasks={t: dict(fp) for t, fp in per_task.items()} if several else {},
            controls={t: dict(fp) for t, fp in controls.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"search": self.search, "heldout": self.heldout}
        if self.tasks:
            out["tasks"] = {t: dict(fp) for t, fp in self.tasks.items()}
        if self.controls:
            out["controls"] = {t: dict(fp) for t, fp in self.controls.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitFingerprints:
        return cls(
            search=data["search"],
            heldout=data["heldout"],
            tasks={t: dict(fp) for t, fp in (data.get("tasks") or {}).items()},
            controls={t: dict(fp) for t, fp in (data.get("controls") or {}).items()},
        )


@dataclass(frozen=True)
class StudyContext:
    """What a study searches, frozen into its user attribute `taskvec` when it is created.

    Attributes:
        study: the study's name.
        tasks: the tasks the objective scores, in reporting order.
        objective: the objective kind (`score` for one task).
        target, base: the pinned target (whose weights every composition starts from) and its base.
        method, method_options: the combine method, its options with defaults filled in.
        lambda_max: upper bound of every coefficient.
        controls: the control guards.
        pruning: whether the study was created to prune (the worker's own option decides).
        n_trials_asked: the quota of the command that created the study.
        candidates: the search space's ingredients, in coefficient order.
        references: task -> its own fine-tuned model with its scores, where scored apart from the target
            (several tasks); empty when the target is the task's own model (one task).
        scorer: the scorer settings every row is scored with.
        split_fingerprints: the splits every row is scored on.
    """

    study: str
    tasks: tuple[str, ...]
    objective: str
    target: Pin
    base: Pin
    method: str
    method_options: dict[str, Any]
    lambda_max: float
    controls: tuple[Control, ...]
    pruning: bool
    n_trials_asked: int
    candidates: tuple[Candidate, ...]
    references: dict[str, Reference]
    scorer: ScorerSettings
    split_fingerprints: SplitFingerprints

    @property
    def label(self) -> str:
        """The leaderboard's `task`: the task, or the tasks joined by commas."""
        return ",".join(self.tasks)

    @property
    def repos(self) -> list[str]:
        """Candidate repo ids, in coefficient order."""
        return [c.repo_id for c in self.candidates]

    def reference_scores(self, split: str) -> dict[str, float]:
        """Task -> its reference's score on `split` (`search` or `heldout`)."""
        return {
            t: r.score_search if split == "search" else r.score_heldout for t, r in self.references.items()
        }

    def to_attr(self) -> dict[str, Any]:
        """The stored form (keys in the order, and with the layout, studies always stored)."""
        out: dict[str, Any] = {
            "task": self.label,
            "tasks": list(self.tasks),
            "objective": self.objective,
            "target": self.target.to_dict(),
            "base": self.base.to_dict(),
            "method": self.method,
            "method_options": dict(self.method_options),
            "lambda_max": self.lambda_max,
            "controls": [{"task": c.task, "max_drop": c.max_drop} for c in self.controls],
            "pruning": self.pruning,
            "n_trials_asked": self.n_trials_asked,
        }
        if self.references:
            out["references"] = {t: r.to_dict() for t, r in self.references.items()}
        out["candidates"] = [c.to_dict() for c in self.candidates]
        out["scorer"] = self.scorer.to_dict()
        out["split_fingerprints"] = self.split_fingerprints.to_dict()
        out["study"] = self.study
        return out

    @classmethod
    def from_attr(cls, attr: Mapping[str, Any]) -> StudyContext:
        """Read the stored form, as written now or by any earlier version.

        Raises:
            SearchError: if a key every version stored is missing (not a taskvec study).
        """
        try:
            return cls(
                study=attr["study"],
                tasks=tuple(attr.get("tasks") or [attr["task"]]),
                objective=attr.get("objective", "score"),
                target=Pin.from_dict(attr["target"]),
                base=Pin.from_dict(attr["base"]),
                method=attr["method"],
                method_options=dict(attr["method_options"]),
                lambda_max=float(attr["lambda_max"]),
                controls=tuple(
                    Control(task=c["task"], max_drop=float(c["max_drop"])) for c in attr.get("controls") or []
                ),
                pruning=bool(attr["pruning"]),
                n_trials_asked=int(attr["n_trials_asked"]),
                candidates=tuple(Candidate.from_dict(c) for c in attr["candidates"]),
                references={t: Reference.from_dict(r) for t, r in (attr.get("references") or {}).items()},
                scorer=ScorerSettings.from_dict(attr["scorer"], where=f"study {attr.get('study')!r}"),
                split_fingerprints=SplitFingerprints.from_dict(attr["split_fingerprints"]),
            )
        except KeyError as exc:
            raise SearchError(f"study {attr.get('study')!r}: its taskvec context lacks {exc}") from exc

    def check(self, config: SearchConfig, *, target_revision: str, search_fingerprint: str) -> None:
        """Refuse to run `config` in this study when it searches something else.

        Raises:
            SearchError: another task, target, method, objective, control guards or search split.
        """
        name = self.study
        if list(self.tasks) != list(config.tasks) or self.target.revision != target_revision:
            raise SearchError(
                f"study {name!r} searches {self.label} on {self.target.repo_id}@"
                f"{self.target.revision[:8]}, not this task/target; choose another --study"
            )
        if self.method != config.method:
            raise SearchError(f"study {name!r} uses method {self.method}, not {config.method}")
        if self.objective != config.kind:
            raise SearchError(f"study {name!r} uses objective {self.objective}, not {config.kind}")
        theirs = [(c.task, float(c.max_drop)) for c in self.controls]
        ours = [(c.task, float(c.max_drop)) for c in config.controls]
        if theirs != ours:
            shown = ", ".join(f"{t}:{d:g}" for t, d in theirs) or "none"
            raise SearchError(f"study {name!r} has control guards {shown}; give the same --control options")
        if self.split_fingerprints.search != search_fingerprint:
            raise SearchError(
                f"study {name!r} was run on another search split (fingerprint "
                f"{self.split_fingerprints.search[:12]}, --search-from {self.scorer.search_from}); "
                "use the same --data, split size and --search-from"
            )


def stored_context(study: optuna.Study) -> StudyContext | None:
    """The study's context, or None when it has none (its creator died before recording it)."""
    attr = study.user_attrs.get(STUDY_ATTR)
    return None if attr is None else StudyContext.from_attr(attr)


def store_context(study: optuna.Study, context: StudyContext) -> None:
    """Freeze the context into a new study (never called on a study that has one)."""
    study.set_user_attr(STUDY_ATTR, context.to_attr())


def stored_config(study: optuna.Study) -> dict[str, Any] | None:
    """The resolved settings the study was created with, or None (a study from before they were stored)."""
    record = study.user_attrs.get(CONFIG_ATTR)
    return dict(record) if isinstance(record, Mapping) else None


def store_config(study: optuna.Study, record: Mapping[str, Any]) -> bool:
    """Record the creating command's resolved settings, once; whether this call stored them."""
    if CONFIG_ATTR in study.user_attrs:
        return False
    study.set_user_attr(CONFIG_ATTR, dict(record))
    return True


@dataclass(frozen=True)
class TargetScores:
    """The target's own scores, computed by each worker on joining (deterministic), never stored in the study.

    Attributes:
        tasks: task -> {"search", "heldout"} score of the target.
        search, heldout: the objective of those scores (the mean for pareto).
        controls: control task -> {"search", "heldout"} score of the target.
    """

    tasks: dict[str, dict[str, float]]
    search: float
    heldout: float
    controls: dict[str, dict[str, float]]

    @classmethod
    def of(
        cls,
        context: StudyContext,
        tasks: Mapping[str, Mapping[str, float]],
        controls: Mapping[str, Mapping[str, float]],
    ) -> TargetScores:
        """From the target's per-task scores, combined as the study's objective combines a trial's."""
        kind = "mean" if context.objective == "pareto" else context.objective
        per_task = {t: dict(s) for t, s in tasks.items()}
        return cls(
            tasks=per_task,
            search=combine(
                {t: s["search"] for t, s in per_task.items()},
                kind=kind,
                references=context.reference_scores("search"),
            ),
            heldout=combine(
                {t: s["heldout"] for t, s in per_task.items()},
                kind=kind,
                references=context.reference_scores("heldout"),
            ),
            controls={t: dict(s) for t, s in controls.items()},
        )
