"""The composition search: an Optuna study over the top-K screened candidates of one or several tasks.

A trial composes `theta_T + combine(lambda_i tau_i)` in place on one live model per worker and scores it
on nested prefixes of each task's search split (`objective`); the held-out split is scored only after the
search, for the top-N trials (`heldout`). See `space` for the candidates, `context` for what the study
freezes, `objectives` for what several tasks maximise.

Resumability (ARCHITECTURE invariant 5): the study lives in an RDB storage (SQLite beside the taskvec DB
by default) under a deterministic name; `n_trials` is the study's total of finished trials (complete +
pruned), so rerunning the same command after a crash tops the study up to that total. Trials of dead
workers are failed by heartbeat and retried. Each completed trial is written to the leaderboard right
after it completes, and a sync pass at start and end writes any completed trial still missing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.progress import TextColumn

from registry.db import redact_url
from registry.progress import counted_columns, progress_bar, stderr_console
from search.screen.store import screened_candidates
from search.study.baselines import live_baselines, load_baselines, save_baselines
from search.study.config import SearchConfig, SearchSummary, config_record
from search.study.context import store_config, stored_config
from search.study.datasource import with_screened_data
from search.study.heldout import score_top_heldout
from search.study.live import LiveStudy, open_live
from search.study.objective import FINISHED, InterruptGate, Objective, QuotaReached, trial_counts
from search.study.records import query, study_best
from search.study.sampling import RungPruner, make_pruner, make_sampler
from search.study.storage import check_storage_url, fail_own_running, fail_unbeaten_trials, storage_url
from search.study.surrogate import SurrogateProposer, proposer_for
from search.study.trials import sync_leaderboard, trial_feasible, trial_value, write_trial


@dataclass(frozen=True)
class RunHooks:
    """How a worker process reports to the parent that started it (`search.study.workers`).

    Attributes:
        started: called with the study's name once the study is open and the target scored; it may
            block until the parent lets the workers start their trials together.
        progress: called with `(finished trials, status text)` at each turn of the trial loop.
    """

    started: Callable[[str], None]
    progress: Callable[[int, str], None]


@dataclass
class _Run:
    """This worker's run: the live study, its objective, and what it did."""

    config: SearchConfig
    live: LiveStudy
    objective: Objective
    started: float
    trials_here: int = 0
    stopped: str = "done"
    proposer: SurrogateProposer | None = None


def run_search(
    config: SearchConfig, *, progress: bool = True, hooks: RunHooks | None = None
) -> SearchSummary:
    """Run (or resume, or join) the study until it has `n_trials` finished trials or time runs out.

    Args:
        config: the search (one task, or several with a multi-task objective).
        progress: show a live progress line with the best score so far.
        hooks: a worker process's reports to its parent (`search.study.workers`).

    Returns:
        The study's summary after this worker stopped.

    Raises:
        SearchError: bad options, no screened candidates or references, a study of another search,
            unreachable storage.
        RegistryError, ModelError, DataError: from the registry, the models or the data (one line each).
        KeyboardInterrupt: after the completed trials are safely in the leaderboard.
    """
    config.validate()
    check_storage_url(storage_url(config))  # a mistyped scheme fails before the registry is read
    config, data_note = with_screened_data(config)
    if data_note is not None:
        _say(data_note)
    run = _start(config)
    if progress:
        _announce(run)
    if hooks is not None:
        hooks.started(run.live.name)
    try:
        _loop(run, progress=progress, hooks=hooks)
    except KeyboardInterrupt:
        fail_own_running(run.live.study, run.objective.worker)
        _sync(run)
        raise
    _sync(run)
    if config.heldout_top_n > 0:
        score_top_heldout(run.live, top_n=config.heldout_top_n, db_url=config.db_url)
        _baselines(run, progress=progress)
    return _summary(run)


def _baselines(run: _Run, *, progress: bool) -> None:
    """Once the study is finished, score and store its baselines (once: a rerun finds them stored).

    A worker stopped by its timeout leaves them to the run that finishes the study: the search's best is
    one of them, and it is only known then.
    """
    config, live = run.config, run.live
    if not config.baselines or trial_counts(live.study).finished < config.n_trials:
        return
    stored = load_baselines(study=live.name, db_url=config.db_url)
    best = study_best(study=live.name, db_url=config.db_url)
    kept = None if stored is None else stored.get("search-best")
    if stored is not None and (best is None or (kept is not None and kept.trial == best["trial_number"])):
        return
    if progress:  # about a dozen passes over the splits: at real scale minutes, so say what runs
        stderr_console().print(
            f"study {live.name}: scoring the baselines beside its best (target, best single, add-all, "
            "global lambda) on both splits",
            highlight=False,
        )
    save_baselines(
        live_baselines(live, kind=config.kind, db_url=config.db_url),
        task=live.context.label,
        db_url=config.db_url,
    )


def _start(config: SearchConfig) -> _Run:
    """Open the live study, set its sampler and pruner, and write any completed trial still missing."""
    started = time.monotonic()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    live = open_live(config)
    # A worker joining an existing study samples from its own seed, so workers do not propose alike.
    seed = config.seed if live.created else config.seed + os.getpid() % 100_000
    live.study.sampler = make_sampler(config.sampler, seed=seed, n_params=len(live.repos))
    objective = Objective(
        composer=live.composer,
        scorers=live.scorers,
        repos=live.repos,
        lambda_max=live.context.lambda_max,
        n_trials=config.n_trials,
        pruning=config.pruning,
        kind=config.kind,
        references=live.context.reference_scores("search"),
        guards=live.guards,
        gate=InterruptGate(),
    )
    proposer = _proposer(config, live, seed=seed)
    objective.surrogate = None if proposer is None else proposer.predict
    # A Pareto study scores whole splits (one step), which makes this Optuna's NopPruner.
    live.study.pruner = make_pruner(config, objective.steps)
    run = _Run(config=config, live=live, objective=objective, started=started, proposer=proposer)
    _remember(run)
    _sync(run)
    return run


def _proposer(config: SearchConfig, live: LiveStudy, *, seed: int) -> SurrogateProposer | None:
    """The surrogate's proposer when asked for and possible; says which (one line)."""
    if not config.surrogate:
        return None
    task = live.context.tasks[0]
    labels = live.scorers[task].full.labels  # by row of the search split, as the stored positions index
    proposer, note = proposer_for(live.context, labels=labels, seed=seed, db_url=config.db_url)
    _say(note)
    return proposer


def _say(line: str) -> None:
    """One notice on stderr (with or without progress: what the search decided is never silent)."""
    stderr_console().print(line, highlight=False, soft_wrap=True)


def candidate_rule(live: LiveStudy, *, min_gain: float, top_k: int, db_url: str | None) -> str:
    """How many candidates the study searches, of how many screened, and by which rule (one line)."""
    context = live.context
    used = len(context.candidates)
    rule = f"gain > {min_gain:g} on the search split"
    refs = sum(1 for c in context.candidates if c.role == "reference")
    if refs:
        return (
            f"using {used} candidates: {refs} references and {used - refs} of their screened helpers ({rule})"
        )
    screened = screened_candidates(
        task=context.tasks[0],
        target_revision=context.target.revision,
        split_fingerprint=context.split_fingerprints.search,
        db_url=db_url,
    )
    passing = sum(1 for s in screened if s["gain"] > min_gain)
    if passing == 0:
        rule = f"none has {rule}: the {used} best"
    elif passing > used:
        rule += f"; the best {used} of {passing} by --top-k {top_k}"
    return f"using {used} of {len(screened)} screened candidates ({rule})"


def _remember(run: _Run) -> None:
    """Store a new study's resolved settings; say which candidates it uses and whether it joined a study."""
    config, live = run.config, run.live
    stored = None if live.created else stored_config(live.study)
    min_gain = config.min_gain if stored is None else float(stored.get("min_gain", 0.0))
    top_k = config.top_k if stored is None else int(stored.get("top_k", config.top_k))
    _say(candidate_rule(live, min_gain=min_gain, top_k=top_k, db_url=config.db_url))
    if live.created:
        record = config_record(config)
        record.update(
            study_name=live.name,
            storage=redact_url(storage_url(config)),
            db_url=None if config.db_url is None else redact_url(config.db_url),
            n_candidates=len(live.context.candidates),
        )
        store_config(live.study, record)
        return
    counts = trial_counts(live.study)
    line = f"joining the existing study {live.name} ({counts.finished} trials finished)"
    if stored is not None and int(stored.get("seed", config.seed)) != config.seed:
        line += (
            f"; it was created with --seed {stored['seed']}: --seed {config.seed} seeds only this worker's "
            "sampler (leave out --study for a study of its own)"
        )
    _say(line)


def _sync(run: _Run) -> None:
    sync_leaderboard(run.live.study, run.live.context, run.live.target, db_url=run.config.db_url)


def _loop(run: _Run, *, progress: bool, hooks: RunHooks | None = None) -> None:
    """Run trials until the study has its total, or this worker's time is up."""
    config, study, gate = run.config, run.live.study, run.objective.gate
    deadline = None if config.timeout_s is None else run.started + config.timeout_s

    def on_trial_end(_: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            write_trial(trial, run.live.context, run.live.target, db_url=config.db_url)
        # A trial that lost the race for the study's last place ends failed (QuotaReached): not one of ours.
        if trial.state in FINISHED:
            run.trials_here += 1

    columns = counted_columns("{task.description}", eta=True, extra=(TextColumn("{task.fields[best]}"),))
    with gate, progress_bar(*columns, enabled=progress) as bar:
        # Starting from the trials a resumed study already has keeps them out of the ETA's speed.
        done = min(trial_counts(study).finished, config.n_trials) if progress else 0
        job = bar.add_task(f"search {config.label}", total=config.n_trials, completed=done, best="")
        while True:
            gate.check()
            counts = trial_counts(study)
            if progress:
                status = _best_text(run) + (f" · {counts.pruned} pruned" if run.objective.pruning else "")
                bar.update(job, completed=min(counts.finished, config.n_trials), best=status)
            if hooks is not None:
                hooks.progress(counts.finished, _best_text(run))
            if counts.finished >= config.n_trials:
                break
            if deadline is not None and time.monotonic() >= deadline:
                run.stopped = "timeout"
                break
            if counts.finished + counts.running >= config.n_trials and counts.waiting == 0:
                # Only other workers' trials are left: wait for them to finish, or to be declared dead
                # by heartbeat (or by never beating) and re-enqueued.
                optuna.storages.fail_stale_trials(study)
                fail_unbeaten_trials(study, grace_s=config.grace_period)
                time.sleep(min(config.heartbeat_interval, 2.0))
                continue
            if run.proposer is not None and counts.waiting == 0:
                run.proposer.enqueue(study)  # the surrogate's pick (or, on the sampler's turn, nothing)
            study.optimize(run.objective, n_trials=1, catch=(QuotaReached,), callbacks=[on_trial_end])
        gate.check()


def _announce(run: _Run) -> None:
    """One line on stderr: the study, its storage, and what it searches."""
    config, context = run.config, run.live.context
    what = (
        f"{len(context.candidates)} candidates over {context.label} ({context.objective}), "
        f"rungs at {run.objective.steps} examples"
    )
    pruner = run.live.study.pruner
    if isinstance(pruner, RungPruner):  # the warm-up follows the quota: say what this one waits for
        what += f", pruning once {pruner.min_trials} trials reach a rung"
    if context.controls:
        what += ", controls " + ", ".join(c.as_text() for c in context.controls)
    stderr_console().print(
        f"study [bold]{context.study}[/] ({redact_url(storage_url(config))}): {what}", highlight=False
    )


def _best_text(run: _Run) -> str:
    target = run.live.target.search
    complete = [
        t
        for t in run.live.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if trial_feasible(t)
    ]
    if not complete:
        return f"target {target:.2f}"
    best = max(complete, key=trial_value)
    what = "best mean" if run.live.context.objective == "pareto" else "best"
    return f"{what} {trial_value(best):.2f} (trial {best.number}) vs target {target:.2f}"


def _summary(run: _Run) -> SearchSummary:
    config, live = run.config, run.live
    counts = trial_counts(live.study)
    best = study_best(study=live.name, db_url=config.db_url)
    examples = sum(
        int(t.user_attrs.get("examples_scored", 0))
        for t in live.study.get_trials(deepcopy=False, states=FINISHED)
    )
    rows = query(db_url=config.db_url, study=live.name)
    return SearchSummary(
        study_name=live.name,
        storage=redact_url(storage_url(config)),
        task=config.label,
        n_finished=counts.finished,
        n_complete=counts.complete,
        n_pruned=counts.pruned,
        trials_here=run.trials_here,
        examples_scored=examples,
        best_trial=None if best is None else best["trial_number"],
        best_score_search=None if best is None else best["score_search"],
        best_score_heldout=None if best is None else best["score_heldout"],
        target_score_search=live.target.search,
        target_score_heldout=live.target.heldout,
        candidates=tuple(live.repos),
        elapsed_s=time.monotonic() - run.started,
        stopped=run.stopped,
        objective=config.kind,
        # Per-task scores only where there are several (a one-task summary's score is its task's).
        best_scores=None
        if best is None or len(live.context.tasks) == 1
        else {t: s["search"] for t, s in best["scores"].items()},
        n_infeasible=sum(1 for r in rows if not r["feasible"]),
        n_pareto=sum(1 for r in rows if r["pareto"]),
        best_gain_ci=None if best is None else best["gain_ci"],
    )
