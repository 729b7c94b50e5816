"""One worker's live study: the Optuna study and its context, one model rewritten in place, its scorers.

`open_live` runs the steps in order: load the splits, find (or load) the study's context, load the target
and its scorers, create or join the study, check it searches what was asked, open the composer, and score
the target and the control guards. A new study's missing screenings or references fail before any model
loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import optuna
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from registry.pins import Pinned, Resolved, checkpoint_dirs, resolve_target
from search.errors import SearchError
from search.scoring.device import Placement
from search.scoring.models import load_seq2seq
from search.scoring.prefix import NestedPrefixScorer, prefix_sizes
from search.scoring.scorer import Scorer, ScoreResult
from search.scoring.settings import ScorerSettings
from search.screen.run import check_target
from search.study.config import SearchConfig, default_study_name, filled_method_options
from search.study.context import (
    Pin,
    Reference,
    SplitFingerprints,
    StudyContext,
    TargetScores,
    store_context,
    stored_context,
)
from search.study.objective import GuardScorer
from search.study.objectives import combine
from search.study.space import Space, find_space, warm_start
from search.study.storage import create_or_join, find_study, open_storage
from search.tables import one_or_each
from search.tasks.data import Split, load_split
from search.vectors import Composer
from search.vectors.cache import cached_pairs
from search.vectors.compose import open_composer


@dataclass(frozen=True)
class Splits:
    """The search and held-out splits of every task the study scores, objective tasks and controls."""

    search: dict[str, Split]
    heldout: dict[str, Split]

    def fingerprints(self, tasks: Sequence[str]) -> dict[str, dict[str, str]]:
        """Task -> {"search", "heldout"} fingerprints."""
        return {
            t: {"search": self.search[t].fingerprint, "heldout": self.heldout[t].fingerprint} for t in tasks
        }

    def study_fingerprints(self, config: SearchConfig) -> SplitFingerprints:
        """The fingerprints a study of `config` records."""
        return SplitFingerprints.of(
            self.fingerprints(config.tasks), self.fingerprints([c.task for c in config.controls])
        )


@dataclass(frozen=True)
class LiveStudy:
    """One worker's live search.

    Attributes:
        study: the Optuna study.
        context: what it searches, as frozen into it.
        created: whether this worker created it.
        composer: the target's weights and the candidates' vectors; rewrites the one live model.
        scorers: task -> nested-prefix scorer on its search split.
        heldout: task (objective tasks and controls) -> scorer on its held-out split.
        guards: the control guards, with the target's scores.
        target: the target's own scores, measured by this worker.
    """

    study: optuna.Study
    context: StudyContext
    created: bool
    composer: Composer
    scorers: dict[str, NestedPrefixScorer]
    heldout: dict[str, Scorer]
    guards: list[GuardScorer]
    target: TargetScores

    @property
    def name(self) -> str:
        return self.context.study

    @property
    def repos(self) -> list[str]:
        return self.context.repos


def load_splits(config: SearchConfig) -> Splits:
    """The splits of the objective's tasks and the control tasks (carved as `config.search_from` says)."""
    search, heldout = {}, {}
    for task in (*config.tasks, *(c.task for c in config.controls)):
        kwargs = dict(data_dir=config.data_dir, seed=config.split_seed, source=config.search_from)
        search[task] = load_split(task, split="search", size=config.search_size, **kwargs)
        heldout[task] = load_split(task, split="heldout", **kwargs)
    return Splits(search=search, heldout=heldout)


def build_scorers(
    config: SearchConfig, *, splits: Splits, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> dict[str, NestedPrefixScorer]:
    """Task -> nested-prefix scorer on its search split, prefixes on the pruner's rungs."""
    pruning = config.pruning and config.kind != "pareto"
    return {
        t: NestedPrefixScorer(
            model,
            tokenizer,
            splits.search[t],
            sizes=prefix_sizes(
                len(splits.search[t]),
                rungs=config.prefix_rungs,
                reduction_factor=config.reduction_factor,
                pruning=pruning,
            ),
            mode=config.mode,
            autocast_dtype=config.placement.autocast,
        )
        for t in config.tasks
    }


def score_reference(
    path: Path, *, search_split: Split, heldout_split: Split, mode: str, placement: Placement | None = None
) -> tuple[float, float]:
    """A fine-tuned reference's own (search, held-out) scores on its task's splits (on `placement`'s
    device and dtype, as the study's rows are scored; None: the CPU in fp32)."""
    device, autocast = (placement.device, placement.autocast) if placement else ("cpu", None)
    model, tokenizer = load_seq2seq(path, device=device)
    kwargs = dict(mode=mode, autocast_dtype=autocast)
    search = float(Scorer(model, tokenizer, search_split, **kwargs).score().score)
    heldout = float(Scorer(model, tokenizer, heldout_split, **kwargs).score().score)
    return search, heldout


def build_context(
    config: SearchConfig,
    *,
    name: str,
    resolved: Resolved,
    space: Space,
    splits: Splits,
    scorers: dict[str, NestedPrefixScorer],
) -> StudyContext:
    """A new study's context: the space found, its references scored, the scorer and split settings.

    Raises:
        SearchError: a non-positive reference score under `normalized-mean`.
    """
    references = {}
    for task, ref in space.references.items():
        score_search, score_heldout = score_reference(
            ref.path,
            search_split=splits.search[task],
            heldout_split=splits.heldout[task],
            mode=config.mode,
            placement=config.placement,
        )
        references[task] = Reference(ref.repo_id, ref.revision, score_search, score_heldout)
    if config.kind == "normalized-mean":  # fail now, not at the first trial, on a non-positive reference
        scores = {t: r.score_search for t, r in references.items()}
        combine(scores, kind=config.kind, references=scores)
    first = scorers[config.tasks[0]].settings
    scorer = ScorerSettings(
        mode=first["mode"],
        order_seed=first["order_seed"],
        max_input_length=first["max_input_length"],
        autocast=first["autocast"],
        label_words=one_or_each({t: scorers[t].settings["label_words"] for t in config.tasks}),
        split_seed=config.split_seed,
        data=ScorerSettings.data_name(config.data_dir),
        search_size=one_or_each({t: len(splits.search[t]) for t in config.tasks}),
        search_from=config.search_from,
        device=first["device"],
    )
    return StudyContext(
        study=name,
        tasks=config.tasks,
        objective=config.kind,
        target=Pin(resolved.target.repo_id, resolved.target.revision),
        base=Pin(resolved.base.repo_id, resolved.base.revision),
        method=config.method,
        method_options=filled_method_options(config.method, config.method_options),
        lambda_max=config.lambda_max,
        controls=config.controls,
        pruning=config.pruning and config.kind != "pareto",
        n_trials_asked=config.n_trials,
        candidates=space.candidates,
        references=references,
        scorer=scorer,
        split_fingerprints=splits.study_fingerprints(config),
    )


def join_study(
    config: SearchConfig,
    *,
    storage: optuna.storages.BaseStorage,
    name: str,
    new_context: Callable[[], StudyContext] | None,
) -> tuple[optuna.Study, StudyContext, bool]:
    """Create the study (freezing its context and enqueuing the warm start) or join it.

    Of two workers starting together only one creates the study (the storage's unique name decides);
    a study whose creator died before recording its context gets it from whoever comes next.

    Args:
        config: the search.
        storage: the Optuna storage.
        name: the study's name.
        new_context: builds the context of a study that has none (None: it had one when looked up).
    """
    n_objectives = len(config.tasks) if config.kind == "pareto" else 1
    study, created = create_or_join(storage, name, n_objectives=n_objectives)
    context = stored_context(study)
    if context is None:
        if new_context is None:  # a study's context is never removed, so this is not a taskvec study
            raise SearchError(f"study {name!r} has no taskvec context (was it created by `taskvec search`?)")
        context = new_context()
        store_context(study, context)
        if not study.trials:
            for params in warm_start(context.candidates, lambda_max=context.lambda_max):
                study.enqueue_trial(params, skip_if_exists=True)
    return study, context, created


def load_study(*, storage: optuna.storages.BaseStorage, name: str) -> tuple[optuna.Study, StudyContext]:
    """An existing study and its context (for work on a finished search, e.g. the baseline).

    Raises:
        SearchError: no such study, or one not created by `taskvec search`.
    """
    study = find_study(storage, name)
    if study is None:
        raise SearchError(f"no study named {name!r}: run the search first")
    context = stored_context(study)
    if context is None:
        raise SearchError(f"study {name!r} has no taskvec context (was it created by `taskvec search`?)")
    return study, context


def lacks_context(*, storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Whether the study is still to be created, or has no context yet (its creator died first)."""
    study = find_study(storage, name)
    return study is None or stored_context(study) is None


def study_composer(
    model: PreTrainedModel, context: StudyContext, *, resolved: Resolved, config: SearchConfig
) -> Composer:
    """The composer over the study's candidates, on the live model."""
    pairs = [(c.repo_id, c.revision) for c in context.candidates]
    # A vector in the cache needs no snapshot: after a streamed screen deleted them, the study's top-K
    # would otherwise be downloaded again.
    cached = cached_pairs(pairs, base_revision=resolved.base.revision, cache_dir=config.vector_cache)
    dirs = checkpoint_dirs(pairs, db_url=config.db_url, unlocated=cached)
    return open_composer(
        model,
        target=resolved.target.path,
        base=resolved.base,
        ingredients=[Pinned(r, v, d) for (r, v), d in zip(pairs, dirs, strict=True)],
        method=context.method,
        method_options=context.method_options,
        cache_dir=config.vector_cache,
    )


def score_target(
    context: StudyContext,
    *,
    composer: Composer,
    scorers: dict[str, NestedPrefixScorer],
    heldout: dict[str, Scorer],
    guard_splits: dict[str, Split],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    mode: str,
    check: Callable[[str, ScoreResult, ScoreResult], object] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[TargetScores, list[GuardScorer]]:
    """The target's own scores (all coefficients 0), and the control guards bound to the live model.

    Computed once per worker (deterministic), stored with every row, never in the study. `check` is
    called with each objective task and the target's search and held-out results (the contamination
    check: both are scored here anyway).
    """
    composer.apply([0.0] * len(context.candidates))
    tasks = {}
    for t, s in scorers.items():
        search, held = s.full.score(), heldout[t].score()
        tasks[t] = {"search": float(search.score), "heldout": float(held.score)}
        if check is not None:
            check(t, search, held)
    guards, controls = [], {}
    for control in context.controls:
        guard_scorer = Scorer(
            model, tokenizer, guard_splits[control.task], mode=mode, autocast_dtype=autocast_dtype
        )
        target_search = float(guard_scorer.score().score)
        controls[control.task] = {
            "search": target_search,
            "heldout": float(heldout[control.task].score().score),
        }
        guards.append(GuardScorer(control=control, scorer=guard_scorer, target_score=target_search))
    return TargetScores.of(context, tasks, controls), guards


def _check_target(
    task: str, search: ScoreResult, heldout: ScoreResult, *, resolved: Resolved, splits: Splits
) -> None:
    """Warn when the target may have trained on its search split (`search.screen.run.check_target`)."""
    check_target(
        target=resolved.target.repo_id,
        target_dir=resolved.target.path,
        split=splits.search[task],
        search=search,
        heldout=lambda: heldout,
    )


def check_placement(context: StudyContext, placement: Placement) -> None:
    """Refuse to score a study's trials on another device type or in another precision than its rows.

    A study's name includes both (`search.study.config`), so this only fires for a `--study` given by name.

    Raises:
        SearchError: naming the study's device and dtype and this run's.
    """
    theirs = (context.scorer.device, context.scorer.dtype_name)
    ours = (placement.device_type, placement.dtype_name)
    if theirs != ours:
        raise SearchError(
            f"study {context.study!r} is scored on {theirs[0]} in {theirs[1]}, this run on {ours[0]} in "
            f"{ours[1]}: pass --device {theirs[0]} --dtype {theirs[1]}, or choose another --study"
        )


def open_live(config: SearchConfig, *, create: bool = True) -> LiveStudy:
    """Resolve the target, open (create, join or only load) the study, and build the live model and scorers.

    Args:
        config: the search.
        create: create or join the study; False only loads an existing one.

    Raises:
        SearchError, RegistryError, ModelError, DataError: one line each.
    """
    config.validate()
    resolved = resolve_target(config.target, db_url=config.db_url)
    storage = open_storage(config)
    splits = load_splits(config)
    space = None
    if create or config.study_name is None:
        # Before any model loads: a new study fails here on missing screenings or references, and the
        # default name counts the candidates the rule chose (not the --top-k asked for).
        fingerprints = {t: fp["search"] for t, fp in splits.fingerprints(config.tasks).items()}
        space = find_space(config, resolved, fingerprints=fingerprints)
    name = config.study_name or default_study_name(
        config, target_revision=resolved.target.revision, n_candidates=len(space.candidates)
    )
    if not create or not lacks_context(storage=storage, name=name):
        space = None  # the study exists: its own candidates, frozen at creation, are searched
    placement = config.placement
    model, tokenizer = load_seq2seq(resolved.target.path, device=placement.device)
    scorers = build_scorers(config, splits=splits, model=model, tokenizer=tokenizer)
    if create:
        new_context = None
        if space is not None:
            new_context = partial(
                build_context,
                config,
                name=name,
                resolved=resolved,
                space=space,
                splits=splits,
                scorers=scorers,
            )
        study, context, created = join_study(config, storage=storage, name=name, new_context=new_context)
    else:
        (study, context), created = load_study(storage=storage, name=name), False
    fingerprints = splits.study_fingerprints(config)
    context.check(config, target_revision=resolved.target.revision, search_fingerprint=fingerprints.search)
    check_placement(context, placement)
    composer = study_composer(model, context, resolved=resolved, config=config)
    heldout = {
        t: Scorer(model, tokenizer, split, mode=config.mode, autocast_dtype=placement.autocast)
        for t, split in splits.heldout.items()
    }
    target, guards = score_target(
        context,
        composer=composer,
        scorers=scorers,
        heldout=heldout,
        guard_splits=splits.search,
        model=model,
        tokenizer=tokenizer,
        mode=config.mode,
        check=partial(_check_target, resolved=resolved, splits=splits) if create else None,
        autocast_dtype=placement.autocast,
    )
    return LiveStudy(
        study=study,
        context=context,
        created=created,
        composer=composer,
        scorers=scorers,
        heldout=heldout,
        guards=guards,
        target=target,
    )
