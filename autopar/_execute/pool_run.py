"""Drives one call on one backend: cut the input into chunks, keep a bounded number in
flight, hand results back in order (or as they finish), and clean up on any way out.

    items -> Chunker -> submit (Backend.window() chunks in flight at most) -> collect
                                       |
        failure / timeout / Ctrl-C / dead worker / caller stops early: cancel what has
        not started; on timeout, Ctrl-C or a dead worker also abort the pool (kill running
        processes) and replace it. Either way, hand the pool back to the registry.

Under a per-item policy, on a pool that outlives a dead worker (dask), the run keeps the
items of each chunk in flight: a chunk whose worker died runs again item by item
(:mod:`.isolate`) instead of ending the call.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import (
    Any,
    Callable,
    Collection,
    Deque,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from ..errors import AutoparTimeoutError, RemoteTraceback, WorkerCrashedError, annotate
from . import blas_limits, registry
from .backends.base import Backend
from .chunking import Chunker
from .outcomes import Policy
from .worker import ChunkResult, Failure

_InFlight = Tuple[int, int, "Future[Any]"]  # start index, item count, future


class PoolRun:
    """One call on one backend. Iterate :meth:`ordered` or :meth:`unordered` once.

    Both yield whole chunks (lists of results): flattening them with
    ``itertools.chain.from_iterable`` costs nothing per item, a generator resumed per item
    would cost about as much as a cheap function itself.

    The backend comes from :func:`~autopar._execute.registry.acquire`, which counts this
    call as one of its users; the run hands it back when it ends, or when it is dropped unstarted.
    """

    def __init__(
        self,
        backend: Backend,
        fn: Callable[..., Any],
        chunker: Chunker,
        *,
        workers: int,
        star: bool,
        timeout: Optional[float],
        on_chunk: Optional[Callable[[ChunkResult, int], None]] = None,
        stop_after: Optional[Callable[[], bool]] = None,
        policy: Optional[Policy] = None,
    ) -> None:
        # First, so that a failing prepare() below still hands the pool back.
        self.release = weakref.finalize(self, registry.release, backend)
        self.release.atexit = False  # at exit the pools are stopped whoever holds them
        self.backend = backend
        self.payload = backend.prepare(fn, workers)
        self.chunker = chunker
        self.window = max(1, backend.window(workers))
        self.star = star
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.on_chunk = on_chunk
        self.stop_after = stop_after  # asked before each chunk: True ends the run early
        # Threads sharing one BLAS would each start a BLAS thread per core: capped while
        # the run iterates, released on any way out with the rest of the clean-up.
        self.blas = blas_limits.limited(workers if backend.shares_blas else 1)
        self.done = 0
        self.pending: Collection[_InFlight] = ()
        # Under a policy, on a pool that outlives a dead worker: start -> the chunk's
        # (index, item) pairs, while it is in flight; None otherwise (nothing kept).
        self.policy = policy
        self.kept: Optional[Dict[int, Sequence[Any]]] = None
        if policy is not None and backend.rerunnable():
            self.kept = {}
        self.alone: Optional[Future[Any]] = None  # the task .isolate is waiting for

    def _fill(self, add: Callable[[_InFlight], None]) -> None:
        """Submit chunks until ``window`` are in flight or the input runs out."""
        while len(self.pending) < self.window:
            if self.stop_after is not None and self.stop_after():
                return
            chunk = self.chunker.next()
            if chunk is None:
                return
            start, items = chunk
            try:
                future = self.backend.submit(
                    self.payload, start, items, star=self.star, deadline=self.deadline
                )
            except WorkerCrashedError as exc:
                # Raise it where results are collected, after the chunks before this one.
                future = Future()
                future.set_exception(exc)
                add((start, len(items), future))
                return
            if self.kept is not None:
                self.kept[start] = items
            add((start, len(items), future))

    def remaining(self) -> Optional[float]:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def timed_out(self) -> AutoparTimeoutError:
        return AutoparTimeoutError(
            f"the call did not finish within timeout={self.timeout:g}s "
            f"({self.done} items done); pending items were cancelled and stuck workers "
            f"replaced. Raise timeout= if the work is just slow"
        )

    def _results(self, entry: _InFlight) -> List[Any]:
        start, count, future = entry
        kept = None if self.kept is None else self.kept.pop(start, None)
        try:
            result = self.backend.collect(future, start, count)
        except WorkerCrashedError as crash:
            if kept is not None and self.policy is not None and self.backend.rerunnable():
                from .isolate import run_alone

                results = run_alone(self, self.policy, kept)
                self.done += len(results)
                return results
            registry.park_if_exiting()
            raise self._crashed(entry, crash) from crash.__cause__
        self.chunker.observe(result, count)
        self.done += len(result.results)
        if self.on_chunk is not None:
            self.on_chunk(result, count)
        if result.failure is not None:
            raise self.failed(result.failure)
        return result.results

    def failed(self, failure: Failure) -> BaseException:
        """The exception a chunk's failure ends the call with."""
        exc = failure.exc
        if type(exc) is AutoparTimeoutError:  # (an ItemTimeoutError is the item's own)
            return self.timed_out()
        if self.backend.ships_by_pickle and failure.tb:
            exc.__cause__ = RemoteTraceback(failure.tb)
        return annotate(exc, failure.index, f"{self.backend.kind} worker")

    def _crashed(self, entry: _InFlight, exc: WorkerCrashedError) -> WorkerCrashedError:
        """The crash as seen by the whole call: every chunk lost, every result saved."""
        lost: List[int] = []
        partial: Dict[int, Any] = {}
        for start, count, future in sorted({entry, *self.pending}):
            saved = self._salvage(start, count, future)
            partial.update(zip(range(start, start + count), saved))
            lost.extend(range(start + len(saved), start + count))
        error = WorkerCrashedError.lost(lost, exc)
        error.partial_results = partial
        return error

    def saved(self) -> Dict[int, Any]:
        """Index -> result for the chunks in flight that have come back."""
        out: Dict[int, Any] = {}
        for start, count, future in self.pending:
            out.update(zip(range(start, start + count), self._salvage(start, count, future)))
        return out

    def _salvage(self, start: int, count: int, future: Future[Any]) -> List[Any]:
        """The results of a chunk that finished before the crash (those before a failure)."""
        if not future.done() or future.cancelled() or future.exception() is not None:
            return []
        try:
            return self.backend.collect(future, start, count).results
        except Exception:  # a chunk whose results cannot be read back is lost like the rest
            return []

    def ordered(self) -> Iterator[List[Any]]:
        pending: Deque[_InFlight] = deque()
        self.pending = pending
        with _Cleanup(self), self.blas:
            self._fill(pending.append)
            while pending:
                entry = pending[0]
                # (A serial chunk is done on submit: no need to pay for a waiter.)
                if not entry[2].done() and not wait([entry[2]], self.remaining()).done:
                    raise self.timed_out()
                pending.popleft()
                results = self._results(entry)
                self._fill(pending.append)
                yield results

    def unordered(self) -> Iterator[List[Any]]:
        pending: Set[_InFlight] = set()
        self.pending = pending
        with _Cleanup(self), self.blas:
            self._fill(pending.add)
            while pending:
                done, _ = wait([e[2] for e in pending], self.remaining(), FIRST_COMPLETED)
                if not done:
                    raise self.timed_out()
                finished = [e for e in pending if e[2] in done]
                for entry in sorted(finished):
                    pending.discard(entry)
                    results = self._results(entry)
                    self._fill(pending.add)
                    yield results


class _Cleanup:
    """On any way out: cancel chunks not started, abort the pool if its work must stop
    (timeout, Ctrl-C, a dead worker), and hand the pool back."""

    def __init__(self, run: PoolRun) -> None:
        self.run = run

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        try:
            if kind is not None:
                self._stop(kind)
        finally:
            self.run.release()

    def _stop(self, kind: type[BaseException]) -> None:
        backend = self.run.backend
        futures = [f for _, _, f in self.run.pending]
        if self.run.alone is not None:
            futures.append(self.run.alone)
        running = [f for f in futures if not backend.cancel(f)]
        for future in futures:
            backend.abandon(future)
        if issubclass(kind, WorkerCrashedError) or (
            running and issubclass(kind, (AutoparTimeoutError, KeyboardInterrupt))
        ):
            # Kill what runs where the kind allows it (processes); a thread pool that holds
            # stuck threads is retired instead, so they no longer take capacity.
            registry.discard(backend)
