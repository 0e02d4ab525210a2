"""Processes: a shared ``ProcessPoolExecutor``; the only kind that runs pure Python in parallel.

Data flow for one chunk::

    caller                                   worker process
    ------                                   --------------
    prepare(fn) -> payload: the pickled function (once per call; cloudpickle for
                   lambdas/closures), or from LARGE_FUNCTION size a FunctionRef to it
                   in shared memory, arrays it carries beside it (see shared_memory.py)
    submit: pickle items -> bytes  ------>   run_chunk_pickled(payload, start, items)
            (an unpicklable item is             unpickle fn (cached per process), items,
             named by index here)               run, pickle ChunkResult  (an unpicklable
    collect: unpickle ChunkResult  <------      result is named by index there)

Large buffers among items and results travel through shared memory, one segment per chunk
each way, with only their pickle through the pipe (see shared_buffers.py); the items'
segments are lent by a SegmentPool and reused across chunks (see segment_pool.py).

Start method: forkserver on Linux, spawn elsewhere (``AUTOPAR_START_METHOD``), never plain
fork, which copies the caller's threads' locks mid-flight. The module is imported only
when a process pool is first needed, so ``import autopar`` stays light.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import sys
import threading
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, List, Optional, Sequence, Tuple

from ..._config import Config, cpu_count
from ...errors import AutoparError, PicklingFailedError, WorkerCrashedError
from .. import forkserver, shared_buffers
from ..main_guard import processes_start_cleanly, unguarded_error
from ..segment_pool import SegmentPool
from ..shared_memory import SharedFunctions, unlink_all
from ..worker import ChunkResult, dumps, find_unpicklable, init_process, run_chunk_pickled
from .base import Backend, Replacement, pickle_function, small_pickle

log = logging.getLogger("autopar")


# Python 3.11 added max_tasks_per_child; before it, the pool is replaced after as many tasks.
_NATIVE_RECYCLE = sys.version_info >= (3, 11)


def _why_stopped(exc: BaseException) -> str:
    if isinstance(exc, BrokenProcessPool):
        return "killed, crashed or out of memory"
    return "the shared pool was stopped by another call's timeout or Ctrl-C, or by shutdown()"


def _unjam(manager: threading.Thread, writer: Any) -> None:
    """Let an executor's manager thread end after its workers were killed.

    A worker killed while writing its result leaves half a message in the result pipe, and
    the manager thread, already reading it, waits for the rest forever; exit then hangs
    joining it. Zeros written to the pipe complete the message, which fails to unpickle:
    the manager sees a broken pool and ends, as it does for any dead worker.
    """
    manager.join(timeout=0.5)
    if manager.is_alive():
        log.debug("autopar: unjamming the result pipe of an aborted process pool")
        threading.Thread(target=_feed_zeros, args=(writer, manager), daemon=True).start()
        manager.join(timeout=5)


def _feed_zeros(writer: Any, manager: threading.Thread) -> None:
    fd = writer.fileno()
    os.set_blocking(fd, False)  # a full pipe must not block this thread forever
    block = bytes(2**16)
    deadline = time.monotonic() + 30
    while manager.is_alive() and time.monotonic() < deadline:
        try:
            os.write(fd, block)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:  # the pipe was closed: the manager is ending
            return


class ProcessBackend(Backend):
    kind = "process"
    ships_by_pickle = True
    can_abort = True

    @classmethod
    def default_workers(cls, config: Config, n_items: Optional[int]) -> int:
        return cpu_count()

    def __init__(self, config: Config, workers: int) -> None:
        if not processes_start_cleanly(config.start_method):
            raise AutoparError(unguarded_error(config.start_method))
        super().__init__(config, workers)
        self._executor = self._new_executor()
        self._tasks = 0
        self._functions = SharedFunctions()
        self._segments = SegmentPool(shared_buffers.ALIGN)
        self._chunks = shared_buffers.Chunks(self._segments)  # large buffers in flight
        # _recycle_lock guards _executor and _tasks where recycling swaps executors.
        self._recycle_lock = threading.Lock()

    def _new_executor(self) -> ProcessPoolExecutor:
        config = self.config
        context = forkserver.context(config.start_method)
        kwargs: dict[str, Any] = {}
        if _NATIVE_RECYCLE and config.max_tasks_per_child:
            kwargs["max_tasks_per_child"] = config.max_tasks_per_child
        return ProcessPoolExecutor(
            max_workers=self.capacity,
            mp_context=context,
            initializer=init_process,
            initargs=(os.getpid(),),
            **kwargs,
        )

    def _recycled_executor(self) -> ProcessPoolExecutor:
        """The executor for the next task. Before Python 3.11 there is no per-worker
        recycling: after max_tasks_per_child tasks a worker, the whole pool is swapped for
        a fresh one (the old one finishes what it holds, then its workers exit)."""
        limit = self.config.max_tasks_per_child
        with self._recycle_lock:
            if limit and not _NATIVE_RECYCLE and self._tasks >= limit * self.capacity:
                old, self._executor, self._tasks = self._executor, self._new_executor(), 0
                old.shutdown(wait=False)
            self._tasks += 1
            return self._executor

    def replacement(self, config: Config, workers: int) -> Optional[Replacement]:
        if getattr(self._executor, "_broken", False):
            return Replacement("a worker process died", broken=True)
        if config.start_method != self.config.start_method:
            return Replacement(f"start method changed to {config.start_method}")
        if config.max_tasks_per_child != self.config.max_tasks_per_child:
            return Replacement("AUTOPAR_MAX_TASKS_PER_CHILD changed")
        return super().replacement(config, workers)

    def prepare(self, fn: Callable[..., Any], workers: int = 1) -> Any:
        # Large buffers the function carries (a model's arrays) lie apart in its segment,
        # where each worker maps them instead of unpickling a copy (shared_memory.py).
        keeper = shared_buffers.Keeper(shared_buffers.MIN_SHARED)
        parts = pickle_function(fn, "in a process", keeper)
        small = None if keeper.kept else small_pickle(parts)
        return small if small is not None else self._functions.ref(parts, keeper.kept)

    def _pack(self, values: List[Any], star: bool) -> Tuple[int, Any]:
        """(the buffer threshold, ``values`` packed for a worker).

        The threshold is measured on first need (tens of milliseconds of this process's
        time, which would slow a call running beside a pool's start): a chunk with nothing
        of MIN_SHARED bytes, under any threshold, needs none. Until it is known, results
        use MAX_SHARED, above any threshold a machine can measure."""
        known = shared_buffers.known()
        threshold = shared_buffers.threshold() if known else shared_buffers.MIN_SHARED
        while True:
            data = shared_buffers.pack(
                dumps,
                values,
                threshold,
                functools.partial(shared_buffers.wrap_flat, values, threshold, star=star),
                self._segments.lend,
            )
            if known or (isinstance(data, bytes) and len(data) < threshold):
                return (threshold if known else shared_buffers.MAX_SHARED), data
            if isinstance(data, shared_buffers.Shipped):
                self._segments.give_back(data.name, reuse=True)
            known, threshold = True, shared_buffers.threshold()

    def submit(
        self,
        payload: Any,
        start: int,
        items: Sequence[Any],
        *,
        star: bool,
        deadline: Optional[float],
    ) -> Future[Any]:
        values = list(items)
        try:
            threshold, data = self._pack(values, star)
        except Exception:
            index, exc = find_unpicklable(items)
            raise PicklingFailedError(
                f"item {start + index} cannot be pickled to reach a process worker "
                f"({type(exc).__name__}: {exc}); use kind='thread' or make the item picklable",
                start + index,
            ) from exc
        segment = data.name if isinstance(data, shared_buffers.Shipped) else None
        returned = shared_buffers.result_name()
        executor = self._recycled_executor()
        try:
            future = executor.submit(
                run_chunk_pickled,
                payload,
                start,
                data,
                star,
                deadline,
                len(items),
                (threshold, returned),
            )
        except (BrokenProcessPool, RuntimeError) as exc:
            if segment is not None:
                self._segments.give_back(segment, reuse=False)
            # Broken by a dead worker, or stopped by another call's timeout or Ctrl-C (the
            # pool is shared) after this call began: either way nothing more runs here.
            raise WorkerCrashedError(str(exc), reason=_why_stopped(exc)) from exc
        self._chunks.track(future, segment, returned)
        return future

    def collect(self, future: Future[Any], start: int, count: int) -> ChunkResult:
        try:
            raw = future.result()
        except (BrokenProcessPool, CancelledError) as exc:
            raise WorkerCrashedError(str(exc), reason=_why_stopped(exc)) from exc
        self._chunks.collected(future, raw)
        if type(raw) is shared_buffers.SegmentHeld:
            raw = raw.reply
        if type(raw) is bytes:
            return pickle.loads(raw)  # type: ignore[no-any-return]
        return shared_buffers.load(raw, unlink=True)  # type: ignore[no-any-return]

    def cancel(self, future: Future[Any]) -> bool:
        # A broken pool's manager thread fails every pending chunk itself, and before
        # Python 3.12 it raises on one already cancelled, dying with a traceback before
        # it has cleaned up (the race a dead worker starts with the caller's clean-up).
        # The same CPython fault, for chunks cancelled before the pool broke, is met in
        # abort(), which swaps those for stand-ins before it kills the workers.
        if getattr(self._executor, "_broken", False):
            return False
        return future.cancel()

    def abandon(self, future: Future[Any]) -> None:
        self._chunks.abandon(future)

    def abort(self) -> None:
        """Kill every worker: the only way to stop a task that is running."""
        executor = self._executor
        processes = list((getattr(executor, "_processes", None) or {}).values())
        # shutdown() forgets these: keep them to free the manager thread afterwards.
        manager = getattr(executor, "_executor_manager_thread", None)
        results = getattr(executor, "_result_queue", None)
        # Python before 3.12 fails every pending future when it finds a worker dead, and
        # raises (printing a traceback from its manager thread) on one already cancelled,
        # as the caller's clean-up cancels them: give those items a stand-in to fail.
        # (Once the pool is broken, cancel() cancels nothing: see there.)
        for item in list((getattr(executor, "_pending_work_items", None) or {}).values()):
            if item.future.cancelled():
                item.future = Future()
        for process in processes:
            if process.is_alive():
                process.kill()
        executor.shutdown(wait=False, cancel_futures=False)
        for process in processes:
            process.join(timeout=5)
        if manager is not None and results is not None:
            _unjam(manager, results._writer)
        self._functions.close()
        self._chunks.close()
        self._segments.close()

    def shutdown(self) -> None:
        # Work still running here belongs to a call that was abandoned (its caller timed out
        # or was interrupted): waiting for it could hang the program's exit, so kill it.
        if getattr(self._executor, "_pending_work_items", None):
            self.abort()
        else:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._functions.close()
        self._chunks.close()
        self._segments.close()

    @classmethod
    def close_shared(cls) -> None:
        # Segments outlive no pool, but one whose pool was dropped without a shutdown
        # (replaced mid-call) is unlinked here at the latest.
        unlink_all()
