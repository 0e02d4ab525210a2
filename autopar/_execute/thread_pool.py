"""A thread pool of daemon threads that grow on demand and can be abandoned.

Why not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined at interpreter
exit, so one stuck task (the reason a caller used ``timeout=``) would hang the program's
exit. Here threads are daemons, started only when no idle thread can take a task, and a
pool that holds a stuck thread is simply dropped and replaced.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Deque, List, Optional, Tuple

# How long starting a thread took, latest first out: what a pool that records its starts
# saw (the thread backend's and the probe's). The cost model reads the median of these,
# so one slow start on a busy moment does not size thread counts for the whole program.
START_TIMES_KEPT = 31
_start_times: Deque[float] = collections.deque(maxlen=START_TIMES_KEPT)
# _start_lock guards _start_times.
_start_lock = threading.Lock()


def note_start(seconds: float) -> None:
    """Record that starting a thread took ``seconds``."""
    with _start_lock:
        _start_times.append(seconds)


def start_times() -> List[float]:
    """The latest recorded thread starts, oldest first."""
    with _start_lock:
        return list(_start_times)


# One pool of helper threads for auto's measuring (the probe's threads, and the pilot's
# of a first call): idle threads are reused by the next call (starting a thread costs
# more than many cheap items: "thread start" in `python -m autopar info`), and a
# per-thread value an item built on one stays there for the next. _helpers_lock guards
# _helpers; a forked child starts without either.
_helpers_lock = threading.Lock()
_helpers: Optional[DaemonThreadPool] = None


def helpers() -> DaemonThreadPool:
    """The program's pool of measuring threads (see above)."""
    global _helpers
    with _helpers_lock:
        if _helpers is None:
            _helpers = DaemonThreadPool(1 << 30, name="autopar-probe", record_starts=True)
        return _helpers


def cpu_clock() -> Optional[int]:
    """This thread's CPU clock, readable from other threads (POSIX), else None."""
    try:
        return time.pthread_getcpuclockid(threading.get_ident())
    except (AttributeError, OSError):
        return None


def _fresh_after_fork() -> None:
    global _start_lock, _helpers_lock, _helpers
    _start_lock = threading.Lock()  # (another thread may have held it at the fork)
    _helpers_lock, _helpers = threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_after_fork)


_Task = Optional[Tuple["Future[Any]", Callable[..., Any], Tuple[Any, ...]]]


class DaemonThreadPool:
    """Runs submitted callables on up to ``max_workers`` daemon threads."""

    def __init__(
        self,
        max_workers: int,
        name: str = "autopar-thread",
        *,
        record_starts: bool = False,
    ) -> None:
        self.max_workers = max_workers
        self._name = name
        self._record_starts = record_starts  # note_start() for every thread started
        # A deque and a count of its tasks, not queue.SimpleQueue: importing the queue
        # module cost a fresh program's first call about 0.9 ms (a task costs a chunk's
        # hand-off either way, microseconds).
        self._tasks: Deque[_Task] = collections.deque()
        self._queued = threading.Semaphore(0)
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
            self._tasks.append((future, fn, args))
            self._queued.release()
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
        if started and self._record_starts:
            note_start(started)
        return future

    @property
    def size(self) -> int:
        """How many threads have been started."""
        with self._lock:
            return len(self._threads)

    def _work(self) -> None:
        while True:
            self._queued.acquire()
            task = self._tasks.popleft()
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
                self._tasks.append(None)
                self._queued.release()
