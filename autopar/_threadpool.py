"""A thread pool of daemon threads that grow on demand and can be abandoned.

Why not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined at interpreter
exit, so one stuck task (the reason a caller used ``timeout=``) would hang the program's
exit. Here threads are daemons, started only when no idle thread can take a task, and a
pool that holds a stuck thread is simply dropped and replaced.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Optional, Tuple

_Task = Optional[Tuple["Future[Any]", Callable[..., Any], Tuple[Any, ...]]]


class DaemonThreadPool:
    """Runs submitted callables on up to ``max_workers`` daemon threads."""

    def __init__(
        self,
        max_workers: int,
        name: str = "autopar-thread",
        on_start: Optional[Callable[[float], None]] = None,
    ) -> None:
        self.max_workers = max_workers
        self._name = name
        self._on_start = on_start  # told how many seconds each thread took to start
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        # _lock guards _threads, _idle and _closed.
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        started = 0.0
        with self._lock:
            if self._closed:
                raise RuntimeError("submit() on a thread pool that was shut down")
            self._tasks.put((future, fn, args))
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                t0 = time.perf_counter()
                thread.start()
                started = time.perf_counter() - t0
        if started and self._on_start is not None:
            self._on_start(started)
        return future

    @property
    def size(self) -> int:
        """How many threads have been started."""
        with self._lock:
            return len(self._threads)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, fn, args = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            del task, future, fn, args
            with self._lock:
                if self._closed:
                    return
                self._idle += 1

    def shutdown(self) -> None:
        """Stop accepting work; idle threads exit, busy ones exit after their task."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._tasks.put(None)
