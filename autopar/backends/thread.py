"""Threads: a shared pool of daemon threads; good for waiting work and GIL-free C code."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Optional, Sequence

from .._config import Config, cpu_count
from .._threadpool import DaemonThreadPool
from .._worker import run_chunk
from .base import Backend


class ThreadBackend(Backend):
    kind = "thread"

    @classmethod
    def default_workers(cls, config: Config, n_items: Optional[int]) -> int:
        # concurrent.futures' rule; kind="auto" sizes thread counts by measured waiting.
        return min(32, cpu_count() + 4)

    def __init__(self, config: Config, workers: int) -> None:
        # Threads start on demand, so a large capacity costs nothing until it is used.
        super().__init__(config, max(workers, config.max_threads))
        self._pool = DaemonThreadPool(self.capacity)

    def submit(
        self, payload: Any, start: int, items: Sequence[Any], star: bool, deadline: Optional[float]
    ) -> Future[Any]:
        return self._pool.submit(run_chunk, payload, start, items, star, True, deadline)

    @property
    def started_threads(self) -> int:
        return self._pool.size

    def shutdown(self) -> None:
        # A thread stuck in user code cannot be stopped; being a daemon, it cannot block exit.
        self._pool.shutdown()
