"""Several worker processes on one study, one per device (`taskvec search --workers N` / `--devices 0,1`).

The parent starts N spawned processes; each runs the ordinary search loop (`run_search`) on its own
device and joins the same study through a storage safe for several local processes (SQLite with
`BEGIN IMMEDIATE` transactions, `storage.serialise_sqlite`, or PostgreSQL). The trial budget is the
study's total, enforced per trial by the objective's quota, so N workers finish exactly `n_trials`
between them. Workers start their trials together once all have opened the study (their notices come
first, then the parent's one progress bar over the study's finished trials).

Ctrl-C: the workers run in a process group of their own, so a terminal's Ctrl-C reaches only the parent,
which forwards one SIGINT to each; each fails its trial in flight and writes its completed ones, as a
single search does, and rerunning the command resumes. A worker whose parent died stops the same way.
Only the first worker scores the held-out split and the baselines once the study is finished (the others
would repeat the same work).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue as queue_module
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import torch
from rich.progress import TextColumn

from registry.errors import TaskvecError
from registry.locks import sqlite_file
from registry.progress import counted_columns, progress_bar, stderr_console
from search.errors import SearchError
from search.study.config import SearchConfig, SearchSummary
from search.study.run import RunHooks, run_search
from search.study.storage import check_storage_url, storage_url

# Seconds between the parent's looks at its workers (and a worker's at its parent).
_POLL_S = 0.5


def worker_devices(
    *, workers: int | None, devices: str | None, device: str | None = None
) -> list[str | None]:
    """The device of each worker: `--devices 0,1` -> `cuda:0`, `cuda:1`; else `workers` of `device`.

    Without `--devices`, workers on a CUDA device (`auto`, `cuda` or none given) spread over the GPUs
    there are (worker i on `cuda:i mod count`); None leaves the worker on the search's own device.

    Raises:
        SearchError: both options disagreeing on the count, an empty list, or fewer than one worker.
    """
    if devices is not None:
        names = [d.strip() for d in devices.split(",") if d.strip()]
        if not names:
            raise SearchError(f"--devices {devices!r}: give device numbers (0,1,2,3) or names (cuda:0,cpu)")
        if workers not in (None, 1, len(names)):
            raise SearchError(f"--workers {workers} but --devices lists {len(names)}: one worker per device")
        return [f"cuda:{d}" if d.isdigit() else d for d in names]
    count = 1 if workers is None else workers
    if count < 1:
        raise SearchError(f"--workers must be at least 1, got {count}")
    gpus = torch.cuda.device_count() if device in (None, "auto", "cuda") else 0
    if count > 1 and gpus > 1:
        return [f"cuda:{i % gpus}" for i in range(count)]
    return [device] * count


def check_shared_storage(config: SearchConfig) -> None:
    """Refuse a storage that several processes cannot share (an in-memory SQLite database)."""
    url = storage_url(config)
    check_storage_url(url)
    if url.startswith("sqlite") and sqlite_file(url) is None:
        raise SearchError(f"{url}: an in-memory storage cannot be shared by workers (use a SQLite file)")


def worker_config(config: SearchConfig, *, index: int, device: str | None) -> SearchConfig:
    """Worker `index`'s search: its device, and held-out scoring left to worker 0."""
    changes: dict[str, Any] = {}
    if index > 0:
        changes["heldout_top_n"] = 0
    if device is not None and "device" in {f.name for f in dataclasses.fields(config)}:
        changes["device"] = device
    return dataclasses.replace(config, **changes)


@dataclass
class _Pool:
    """The parent's view of its workers and what they reported."""

    procs: list[BaseProcess]
    devices: list[str | None]
    queue: Any
    go: Any
    started: dict[int, str] = field(default_factory=dict)
    finished: int = 0
    status: str = ""
    summaries: dict[int, SearchSummary] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    interrupted: set[int] = field(default_factory=set)
    stopping: bool = False

    def handle(self, message: tuple) -> None:
        kind, index, *rest = message
        if kind == "started":
            self.started[index] = rest[0]
        elif kind == "progress":
            self.finished, self.status = max(self.finished, rest[0]), rest[1]
        elif kind == "done":
            self.summaries[index] = rest[0]
        elif kind == "error":
            self.errors[index] = rest[0]
        elif kind == "interrupted":
            self.interrupted.add(index)

    def drain(self, *, timeout: float) -> None:
        with contextlib.suppress(queue_module.Empty):
            self.handle(self.queue.get(timeout=timeout))
            while True:
                self.handle(self.queue.get_nowait())

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.procs)

    def stop(self) -> None:
        """Forward one SIGINT to every live worker (once), and let any still waiting to start go."""
        if self.stopping:
            return
        self.stopping = True
        for proc in self.procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGINT)
        self.go.set()

    def lost(self) -> dict[int, str]:
        """Workers that exited without a word (killed, crashed), with their exit codes."""
        said = set(self.summaries) | set(self.errors) | self.interrupted
        return {
            i: f"exited with code {p.exitcode} before reporting"
            for i, p in enumerate(self.procs)
            if i not in said and p.exitcode not in (None, 0)
        }

    def failed(self) -> bool:
        """A worker reported an error or exited without a word (a message sent just before its exit is
        in the pipe by then: drained before deciding)."""
        if not self.errors and self.lost():
            self.drain(timeout=_POLL_S)
        return bool(self.errors or self.lost())

    def label(self, index: int) -> str:
        device = self.devices[index]
        return f"worker {index}" + ("" if device is None else f" ({device})")


def run_workers(
    config: SearchConfig, *, devices: Sequence[str | None], progress: bool = True
) -> SearchSummary:
    """Run the search with one worker process per entry of `devices` on one study.

    Returns:
        The study's summary (from worker 0, which scored the held-out split), with the trials of all
        workers in `trials_here` and the parent's wall time.

    Raises:
        SearchError: bad options, an unshareable storage, or a worker's error (its one line, named).
        KeyboardInterrupt: after every worker stopped (their completed trials saved).
    """
    config.validate()
    check_shared_storage(config)
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")  # fork would copy a parent's torch and CUDA state
    pool = _Pool(procs=[], devices=list(devices), queue=context.Queue(), go=context.Event())
    for index, device in enumerate(devices):
        pool.procs.append(
            context.Process(
                target=_worker_main,
                kwargs={
                    "index": index,
                    "config": worker_config(config, index=index, device=device),
                    "queue": pool.queue,
                    "go": pool.go,
                    "parent": os.getpid(),
                },
                name=f"taskvec-worker-{index}",
            )
        )
    try:
        for proc in pool.procs:
            proc.start()
        _watch(pool, config=config, progress=progress)
    except KeyboardInterrupt:
        _stop_and_wait(pool)
        raise
    return _result(pool, started=started)


def _watch(pool: _Pool, *, config: SearchConfig, progress: bool) -> None:
    """Wait for the workers, with one progress bar once they all started; stop them all if one fails."""
    while not pool.go.is_set() and pool.alive():
        pool.drain(timeout=_POLL_S)
        if pool.failed():
            pool.stop()
        elif len(pool.started) == len(pool.procs):
            pool.go.set()
    if progress and pool.started and not pool.stopping:
        name = next(iter(pool.started.values()))
        where = ", ".join(str(d) for d in pool.devices) if any(pool.devices) else "the default device"
        stderr_console().print(
            f"study [bold]{name}[/] ({len(pool.procs)} workers on {where})", highlight=False, soft_wrap=True
        )
    columns = counted_columns("{task.description}", eta=True, extra=(TextColumn("{task.fields[best]}"),))
    with progress_bar(*columns, enabled=progress and not pool.stopping) as bar:
        job = bar.add_task(f"search {config.label}", total=config.n_trials, best="")
        while pool.alive() or not pool.queue.empty():
            pool.drain(timeout=_POLL_S)
            bar.update(job, completed=min(pool.finished, config.n_trials), best=pool.status)
            if pool.failed():
                pool.stop()
    for proc in pool.procs:
        proc.join()


def _stop_and_wait(pool: _Pool) -> None:
    """Ctrl-C in the parent: forward it and wait until every worker has saved its work (further Ctrl-C
    ignored meanwhile, as the single search ignores them while it unwinds)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        pool.stop()
        while pool.alive():
            pool.drain(timeout=_POLL_S)
        for proc in pool.procs:
            proc.join()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _result(pool: _Pool, *, started: float) -> SearchSummary:
    problems = {**pool.lost(), **pool.errors}
    if problems:
        index = min(problems)
        raise SearchError(f"{pool.label(index)}: {problems[index]}")
    if pool.interrupted:  # a worker stopped by a signal of its own (its parent's death cannot be it here)
        raise KeyboardInterrupt
    first = pool.summaries[min(pool.summaries)]
    return dataclasses.replace(
        first,
        trials_here=sum(s.trials_here for s in pool.summaries.values()),
        elapsed_s=time.monotonic() - started,
        stopped="timeout" if any(s.stopped == "timeout" for s in pool.summaries.values()) else first.stopped,
    )


def _worker_main(*, index: int, config: SearchConfig, queue: Any, go: Any, parent: int) -> None:
    """One worker process: the search loop, reporting to the parent through `queue`."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the parent only; it forwards one SIGINT to each worker
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()

    def started(name: str) -> None:
        queue.put(("started", index, name))
        while not go.wait(timeout=_POLL_S):  # short waits: a SIGINT is handled between them
            pass

    hooks = RunHooks(started=started, progress=lambda n, status: queue.put(("progress", index, n, status)))
    try:
        try:
            summary = run_search(config, progress=False, hooks=hooks)
        finally:  # from here a forwarded SIGINT would only break the exit (torch's atexit callbacks)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:
        queue.put(("interrupted", index))
        sys.exit(130)
    except TaskvecError as exc:
        queue.put(("error", index, str(exc)))
        sys.exit(1)
    except Exception as exc:  # anything else still reaches the user as one line, named by worker
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        queue.put(("error", index, f"{type(exc).__name__}: {first}".rstrip(": ")))
        sys.exit(1)
    queue.put(("done", index, summary))


def _watch_parent(parent: int) -> None:
    """Stop this worker as Ctrl-C would once its parent is gone (killed: nobody would forward one)."""
    while os.getppid() == parent:
        time.sleep(_POLL_S * 2)
    os.kill(os.getpid(), signal.SIGINT)
