"""Drives one call on one backend: cut the input into chunks, keep a bounded number in
flight, hand results back in order (or as they finish), and clean up on any way out.

    items -> Chunker -> submit (at most `window` chunks in flight) -> collect -> results
                                       |
        failure / timeout / Ctrl-C / caller stops early: cancel what has not started;
        on timeout and Ctrl-C also abort the pool (kill running processes) and replace it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Set, Tuple

from . import _pools
from ._worker import ChunkResult
from .backends.base import Backend
from .errors import AutoparTimeoutError, RemoteTraceback, annotate

# With the chunk size left open and no length known, chunks start at one item and double
# until a chunk takes this long, so per-chunk hand-off stays a small share of the work.
TARGET_CHUNK_SECONDS = 0.005
MAX_ADAPTIVE_CHUNK = 4096


class Chunker:
    """Reads the input lazily, one chunk at a time; the size may change between chunks."""

    def __init__(self, items: Iterable[Any], size: Optional[int], start: int = 0) -> None:
        self._items = iter(items)
        self.adaptive = size is None
        self.size = size or 1
        self.next_index = start
        self.exhausted = False

    def next(self) -> Optional[Tuple[int, List[Any]]]:
        if self.exhausted:
            return None
        chunk = list(itertools.islice(self._items, self.size))
        if len(chunk) < self.size:
            self.exhausted = True
        if not chunk:
            return None
        start = self.next_index
        self.next_index += len(chunk)
        return start, chunk

    def observe(self, result: ChunkResult, count: int) -> None:
        """Grow an adaptive chunk size while chunks are cheap next to their hand-off."""
        if self.adaptive and count >= self.size and result.wall < TARGET_CHUNK_SECONDS:
            self.size = min(self.size * 2, MAX_ADAPTIVE_CHUNK)


_InFlight = Tuple[int, int, "Future[Any]"]  # start index, item count, future


class Run:
    """One call on one backend. Iterate :meth:`ordered` or :meth:`unordered` once.

    Both yield whole chunks (lists of results): flattening them with
    ``itertools.chain.from_iterable`` costs nothing per item, a generator resumed per item
    would cost about as much as a cheap function itself.
    """

    def __init__(
        self,
        backend: Backend,
        fn: Callable[..., Any],
        chunker: Chunker,
        *,
        window: int,
        star: bool,
        timeout: Optional[float],
        on_chunk: Optional[Callable[[ChunkResult, int], None]] = None,
    ) -> None:
        self.backend = backend
        self.payload = backend.prepare(fn)
        self.chunker = chunker
        self.window = 1 if backend.inline else max(1, window)
        self.star = star
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.on_chunk = on_chunk
        self.done = 0

    def _fill(self, pending: Any, add: Callable[[_InFlight], None]) -> None:
        """Submit chunks until ``window`` are in flight or the input runs out."""
        while len(pending) < self.window:
            chunk = self.chunker.next()
            if chunk is None:
                return
            start, items = chunk
            future = self.backend.submit(self.payload, start, items, self.star, self.deadline)
            add((start, len(items), future))

    def _remaining(self) -> Optional[float]:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _timed_out(self) -> AutoparTimeoutError:
        return AutoparTimeoutError(
            f"the call did not finish within timeout={self.timeout:g}s "
            f"({self.done} items done); pending items were cancelled"
        )

    def _results(self, entry: _InFlight) -> List[Any]:
        start, count, future = entry
        result = self.backend.collect(future, start, count)
        self.chunker.observe(result, count)
        self.done += len(result.results)
        if self.on_chunk is not None:
            self.on_chunk(result, count)
        failure = result.failure
        if failure is not None:
            exc = failure.exc
            if isinstance(exc, AutoparTimeoutError):
                raise self._timed_out()
            if self.backend.ships_by_pickle and failure.tb:
                exc.__cause__ = RemoteTraceback(failure.tb)
            raise annotate(exc, failure.index, f"{self.backend.kind} worker")
        return result.results

    def ordered(self) -> Iterator[List[Any]]:
        pending: Deque[_InFlight] = deque()
        with _Cleanup(self.backend, pending):
            self._fill(pending, pending.append)
            while pending:
                entry = pending[0]
                if not wait([entry[2]], timeout=self._remaining()).done:
                    raise self._timed_out()
                pending.popleft()
                results = self._results(entry)
                self._fill(pending, pending.append)
                yield results

    def unordered(self) -> Iterator[List[Any]]:
        pending: Set[_InFlight] = set()
        with _Cleanup(self.backend, pending):
            self._fill(pending, pending.add)
            while pending:
                done, _ = wait([e[2] for e in pending], self._remaining(), FIRST_COMPLETED)
                if not done:
                    raise self._timed_out()
                finished = [e for e in pending if e[2] in done]
                for entry in sorted(finished):
                    pending.discard(entry)
                    results = self._results(entry)
                    self._fill(pending, pending.add)
                    yield results


class _Cleanup:
    """On any exit but success: cancel chunks not started; on timeout or Ctrl-C, abort."""

    def __init__(self, backend: Backend, pending: Any) -> None:
        self.backend = backend
        self.pending = pending

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None or not self.pending:
            return
        running = [f for _, _, f in self.pending if not f.cancel()]
        if running and issubclass(kind, (AutoparTimeoutError, KeyboardInterrupt)):
            # Kill what runs where the kind allows it (processes); a thread pool that holds
            # stuck threads is retired instead, so they no longer take capacity.
            _pools.discard(self.backend)
