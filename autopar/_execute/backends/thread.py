"""Threads: a shared pool of daemon threads; good for waiting work and GIL-free C code.

A call does not hand each chunk to the pool. It queues its chunks in a _ChunkQueue, and
up to ``workers`` pool tasks (drainers) each run queued chunks one after another. The
runner keeps one chunk per drainer queued ahead, so a thread that finishes a chunk starts
the next at once, instead of idling through a round trip to the caller (collect, then
submit), which costs about as much as a short chunk.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future
from typing import Any, Callable, Deque, Optional, Sequence, Tuple

from ..._config import Config, cpu_count
from ..thread_pool import DaemonThreadPool
from ..worker import run_chunk
from .base import Backend

_Chunk = Tuple["Future[Any]", int, Sequence[Any], bool, Optional[float]]


class _ChunkQueue:
    """One call's queued chunks and the drainers running them (at most ``workers``)."""

    def __init__(self, fn: Callable[..., Any], workers: int) -> None:
        self.fn, self.workers = fn, max(1, workers)
        # _lock guards _queue and _active.
        self._lock = threading.Lock()
        self._queue: Deque[_Chunk] = collections.deque()
        self._active = 0

    def add(self, chunk: _Chunk) -> bool:
        """Queue a chunk; True if a new drainer must be started for it."""
        with self._lock:
            self._queue.append(chunk)
            if self._active < self.workers:
                self._active += 1
                return True
            return False

    def drain(self) -> None:
        """A drainer: run queued chunks until none is left; cancelled chunks are skipped."""
        while True:
            with self._lock:
                if not self._queue:
                    self._active -= 1
                    return
                future, start, items, star, deadline = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(
                    run_chunk(self.fn, start, items, star=star, mark_thread=True, deadline=deadline)
                )
            except BaseException as exc:  # run_chunk catches the function's own errors
                future.set_exception(exc)
            del future, items


class ThreadBackend(Backend):
    kind = "thread"
    shares_blas = True

    @classmethod
    def default_workers(cls, config: Config, n_items: Optional[int]) -> int:
        # concurrent.futures' rule; kind="auto" sizes thread counts by measured waiting.
        return min(32, cpu_count() + 4)

    def __init__(self, config: Config, workers: int) -> None:
        # Threads start on demand, so a large capacity costs nothing until it is used.
        super().__init__(config, max(workers, config.max_threads))
        self._pool = DaemonThreadPool(self.capacity, record_starts=True)

    def prepare(self, fn: Callable[..., Any], workers: int = 1) -> _ChunkQueue:
        return _ChunkQueue(fn, workers)

    def window(self, workers: int) -> int:
        return 2 * workers  # one chunk queued behind each running one

    def submit(
        self,
        payload: Any,
        start: int,
        items: Sequence[Any],
        *,
        star: bool,
        deadline: Optional[float],
    ) -> Future[Any]:
        future: Future[Any] = Future()
        if payload.add((future, start, items, star, deadline)):
            self._pool.submit(payload.drain)
        return future

    @property
    def started_threads(self) -> int:
        return self._pool.size

    def shutdown(self) -> None:
        # A thread stuck in user code cannot be stopped; being a daemon, it cannot block exit.
        self._pool.shutdown()
