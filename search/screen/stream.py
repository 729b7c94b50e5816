"""Candidates streamed from their sources with at most `max_cached` downloaded snapshots on disk at once.

At Hub scale the candidates' snapshots do not fit on disk together (427 t5-base fine-tunes are about
390 GB). `stream_candidates` fetches them in order on a background thread, holding at most `max_cached`
at once (the one being scored and those prefetched after it), so downloading candidate i+1 overlaps
scoring candidate i. A snapshot the stream downloaded itself (into a folder of its own under
`TASKVEC_HOME/downloads`) is deleted when the caller releases its candidate; one that was in the user's
Hub cache already, or a folder source's repo, is used where it is and never deleted
(`registry.pins.fetch_snapshot`). A candidate whose vector is in the vector cache needs no snapshot at
all and is not fetched. `VectorKeeper` then bounds the vector cache: of the vectors a run wrote, those of
the best `keep` candidates by gain stay cached, the others are deleted.

Racing rounds reuse the stream: the first round `take`s each candidate (in order, waiting on the
prefetch) and `release`s it once its composer holds the vector, which is then in the vector cache; later
rounds compose from the cache and need no snapshot (`needs_snapshot`).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from registry.constants import home, vector_cache_dir
from registry.pins import Fetched, Pinned, discard_snapshot, fetch_snapshot
from search.vectors.cache import cache_path, is_cached

KEEP_VECTORS = 16  # the search's default --top-k: the vectors a search over the screened best will use
DOWNLOADS_DIR = "downloads"
_VECTOR_DTYPES = (torch.float32, torch.bfloat16)


@dataclass
class StreamStats:
    """What streaming cost, filled in while it runs (the screen summary prints it).

    Attributes:
        downloads: snapshots downloaded.
        bytes_downloaded: their bytes.
        deleted: downloaded snapshots deleted after use.
        peak_snapshots: the most downloaded snapshots on disk at once.
        peak_disk: the most bytes on disk at once of downloaded snapshots and vectors this run wrote.
        wait_s: time the caller waited for a candidate's download.
        vectors_deleted: vectors this run wrote and deleted (not among the best `keep`).
        max_cached, keep_vectors: the stream's bound and how many new vectors it keeps.
    """

    downloads: int = 0
    bytes_downloaded: int = 0
    deleted: int = 0
    peak_snapshots: int = 0
    peak_disk: int = 0
    wait_s: float = 0.0
    vectors_deleted: int = 0
    max_cached: int | None = None
    keep_vectors: int = KEEP_VECTORS
    _disk: int = field(default=0, repr=False)
    _snapshots: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def disk(self, delta: int, *, snapshots: int = 0) -> None:
        """Bytes (and downloaded snapshots) added to disk, or removed when negative."""
        with self._lock:
            self._disk += delta
            self._snapshots += snapshots
            self.peak_disk = max(self.peak_disk, self._disk)
            self.peak_snapshots = max(self.peak_snapshots, self._snapshots)

    def fetched(self, fetched: Fetched) -> None:
        """A fetch finished (the prefetch thread's or the caller's): count what it downloaded."""
        if fetched.owned is None:
            return
        with self._lock:
            self.downloads += 1
            self.bytes_downloaded += fetched.downloaded
        self.disk(fetched.size, snapshots=1)

    def discarded(self, fetched: Fetched) -> None:
        """A downloaded snapshot was deleted."""
        with self._lock:
            self.deleted += 1
        self.disk(-fetched.size, snapshots=-1)


@dataclass(frozen=True)
class StreamSettings:
    """How a screen streams its candidates (`screen(max_cached=..., keep_vectors=..., stream_stats=...)`).

    Attributes:
        max_cached: at most this many downloaded snapshots on disk at once; None: no bound, nothing deleted.
        keep_vectors: with a bound, the vectors of the best this many candidates a run wrote stay cached.
        stats: filled in with what streaming cost.
    """

    max_cached: int | None = None
    keep_vectors: int = KEEP_VECTORS
    stats: StreamStats | None = None

    def open(
        self, todo: Sequence[Pinned], *, base_revision: str, vector_cache: Path | None
    ) -> CandidateStream:
        """The stream over `todo` (a context manager: closing deletes what it still holds)."""
        return stream_candidates(
            todo,
            max_cached=self.max_cached,
            keep_vectors=self.keep_vectors,
            stats=self.stats,
            base_revision=base_revision,
            vector_cache=vector_cache,
        )


def needs_snapshot(pinned: Pinned, *, base_revision: str, cache_dir: Path | None) -> bool:
    """Whether composing `pinned` needs its snapshot: its vector is in the vector cache at no dtype."""
    return not any(
        is_cached(
            base_revision=base_revision, candidate_revision=pinned.revision, cache_dir=cache_dir, dtype=d
        )
        for d in _VECTOR_DTYPES
    )


class CandidateStream:
    """Candidates in order, located, with at most `max_cached` fetched and not yet released at once.

    `max_cached` None keeps today's behaviour: downloads go to the user's Hub cache and stay there, one
    candidate is prefetched ahead, and every candidate is located (none skipped for a cached vector).
    """

    def __init__(
        self,
        todo: Sequence[Pinned],
        *,
        max_cached: int | None,
        base_revision: str,
        vector_cache: Path | None,
        stats: StreamStats | None = None,
        download_root: Path | None = None,
        keep_vectors: int = KEEP_VECTORS,
    ) -> None:
        if max_cached is not None and max_cached < 1:
            raise ValueError(f"max_cached must be at least 1, got {max_cached}")
        self.todo = list(todo)
        self.stats = stats if stats is not None else StreamStats()
        self.bounded = max_cached is not None
        self.stats.max_cached, self.stats.keep_vectors = max_cached, keep_vectors
        self.keeper = (
            VectorKeeper(
                keep=keep_vectors, base_revision=base_revision, vector_cache=vector_cache, stats=self.stats
            )
            if self.bounded
            else None
        )
        self._fetch = [
            c
            for c in self.todo
            if not self.bounded or needs_snapshot(c, base_revision=base_revision, cache_dir=vector_cache)
        ]
        self._download_dir = _private_dir(download_root or home() / DOWNLOADS_DIR) if self.bounded else None
        self._slots = threading.Semaphore(max_cached or 2)
        self._ready: queue.Queue[Fetched | Exception | None] = queue.Queue()
        self._skip: set[str] = set()  # revisions the caller went past: the producer does not fetch them
        self._noted: set[str] = set()  # revisions whose cached vectors the keeper has noted
        self._held: dict[str, tuple[Fetched, bool]] = {}  # revision -> (fetched, holds a prefetch slot)
        self._base_revision, self._vector_cache = base_revision, vector_cache
        self._stop = threading.Event()
        self._next = 0  # index in `_fetch` of the next candidate the producer hands over
        self._thread = threading.Thread(target=self._produce, name="taskvec-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        for pinned in self._fetch:
            if pinned.revision in self._skip:
                self._ready.put(None)  # skipped by the caller before it was fetched: nothing to fetch
                continue
            while not self._slots.acquire(timeout=0.2):
                if self._stop.is_set():
                    return
            if self._stop.is_set():
                self._slots.release()
                return
            try:
                fetched = fetch_snapshot(pinned, download_dir=self._download_dir)
            except Exception as exc:  # handed to the caller, raised where it takes this candidate
                self._slots.release()
                self._ready.put(exc)
                continue
            self.stats.fetched(fetched)
            if self._stop.is_set():
                self._discard(fetched)
                return
            self._ready.put(fetched)

    def take(self, pinned: Pinned) -> Pinned:
        """`pinned` located: the prefetched one when it is still ahead in the stream's order, else fetched now.

        Candidates skipped on the way (a resumed race) have their prefetched snapshots deleted. A bounded
        stream hands back a candidate whose vector is cached as it is (composing it reads the vector cache
        only); one taken again after its release, vector gone, is fetched now (and deleted on release).
        """
        if self.keeper is not None and pinned.revision not in self._noted:
            self._noted.add(pinned.revision)
            self.keeper.before(pinned)
        ahead = [c.revision for c in self._fetch[self._next :]]
        if pinned.revision in ahead:
            skipped = ahead[: ahead.index(pinned.revision)]
            self._skip.update(skipped)  # not fetched from now on; those fetched already are deleted
            for _ in skipped:
                item = self._ready.get()
                if isinstance(item, Fetched):
                    self._discard(item)
            self._next += len(skipped) + 1
            item = self._wait()
            self._held[pinned.revision] = (item, True)
            return item.pinned
        if self.bounded and not needs_snapshot(
            pinned, base_revision=self._base_revision, cache_dir=self._vector_cache
        ):
            return pinned
        started = time.monotonic()
        fetched = fetch_snapshot(pinned, download_dir=self._download_dir)
        self.stats.wait_s += time.monotonic() - started
        self.stats.fetched(fetched)
        self._held[pinned.revision] = (fetched, False)
        return fetched.pinned

    def _wait(self) -> Fetched:
        """The next prefetched candidate (counting the wait); a failed fetch raises here."""
        started = time.monotonic()
        item = self._ready.get()
        self.stats.wait_s += time.monotonic() - started
        if not isinstance(item, Fetched):  # never None here: a taken candidate is never skipped
            raise item if isinstance(item, BaseException) else RuntimeError("stream out of order")
        return item

    def release(self, pinned: Pinned) -> None:
        """The caller is done with `pinned` (its vector extracted): delete a snapshot the stream downloaded."""
        held = self._held.pop(pinned.revision, None)
        if held is not None:
            self._discard(*held)

    def _discard(self, fetched: Fetched, slotted: bool = True) -> None:
        if fetched.owned is not None:
            discard_snapshot(fetched)
            self.stats.discarded(fetched)
        if slotted:
            self._slots.release()

    def __iter__(self) -> Iterator[Pinned]:
        """Each candidate located in turn; released when the caller asks for the next one.

        A bounded stream notes a candidate's cached vectors when it is first taken; `screened` then keeps
        or deletes the one composing it wrote.
        """
        for pinned in self.todo:
            located = self.take(pinned)
            yield located
            self.release(located)

    def screened(self, pinned: Pinned, *, gain: float) -> None:
        """`pinned` is screened with this gain: a bounded stream keeps its new vector only among the best."""
        if self.keeper is not None:
            self.keeper.after(pinned, gain=gain)

    def close(self) -> None:
        """Stop prefetching and delete every snapshot still held (an interrupted or failed screen too)."""
        self._stop.set()
        for revision in list(self._held):
            self._discard(*self._held.pop(revision))
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Fetched):
                self._discard(item)
        self._thread.join(timeout=1.0)  # a download in flight discards its own result when it ends
        if self._download_dir is not None and not self._thread.is_alive():
            shutil.rmtree(self._download_dir, ignore_errors=True)

    def __enter__(self) -> CandidateStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_candidates(
    todo: Sequence[Pinned],
    *,
    max_cached: int | None,
    base_revision: str,
    vector_cache: Path | None,
    stats: StreamStats | None = None,
    download_root: Path | None = None,
    keep_vectors: int = KEEP_VECTORS,
) -> CandidateStream:
    """A `CandidateStream` over `todo` (use it as a context manager: closing deletes what it holds)."""
    return CandidateStream(
        todo,
        max_cached=max_cached,
        base_revision=base_revision,
        vector_cache=vector_cache,
        stats=stats,
        download_root=download_root,
        keep_vectors=keep_vectors,
    )


class VectorKeeper:
    """Of the vector cache files a run writes, keeps those of the best `keep` candidates by gain."""

    def __init__(
        self, *, keep: int, base_revision: str, vector_cache: Path | None, stats: StreamStats
    ) -> None:
        self.keep = keep
        self.base_revision = base_revision
        self.root = vector_cache_dir() if vector_cache is None else Path(vector_cache)
        self.stats = stats
        self._before: dict[str, set[Path]] = {}
        self._kept: list[tuple[float, str, list[Path], int]] = []  # a min-heap: the worst kept first

    def _paths(self, revision: str) -> list[Path]:
        return [
            cache_path(
                cache_dir=self.root, base_revision=self.base_revision, candidate_revision=revision, dtype=d
            )
            for d in _VECTOR_DTYPES
        ]

    def before(self, pinned: Pinned) -> None:
        """Note the candidate's cached vectors before it is composed (those are never deleted)."""
        self._before[pinned.revision] = {p for p in self._paths(pinned.revision) if p.is_file()}

    def after(self, pinned: Pinned, *, gain: float) -> None:
        """The candidate is screened: keep the vector it wrote if it is among the best, else delete one."""
        existed = self._before.pop(pinned.revision, set())
        new = [p for p in self._paths(pinned.revision) if p.is_file() and p not in existed]
        if not new:
            return
        size = sum(p.stat().st_size for p in new)
        self.stats.disk(size)
        heapq.heappush(self._kept, (gain, pinned.revision, new, size))
        if len(self._kept) > self.keep:
            _, _, paths, freed = heapq.heappop(self._kept)
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self.stats.disk(-freed)
            self.stats.vectors_deleted += 1


def _private_dir(root: Path) -> Path:
    """A download folder of this process under `root`, after removing those of processes now gone."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        pid = old.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)  # a screen killed mid-download left it
    folder = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
