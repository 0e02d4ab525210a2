"""Drives one call on one backend: cut the input into chunks, keep a bounded number in
flight, hand results back in order (or as they finish), and clean up on any way out.

    items -> Chunker -> submit (Backend.window() chunks in flight at most) -> collect
                                       |
        failure / timeout / Ctrl-C / dead worker / caller stops early: cancel what has
        not started; on timeout, Ctrl-C or a dead worker also abort the pool (kill running
        processes) and replace it. Either way, hand the pool back to the registry.
"""

from __future__ import annotations

import itertools
import sys
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
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from . import _pools
from ._worker import ChunkResult, run_chunk
from .backends.base import Backend
from .errors import AutoparTimeoutError, RemoteTraceback, WorkerCrashedError, annotate

# With the chunk size left open and no length known, chunks start at one item and double
# until a chunk takes this long, so per-chunk hand-off stays a small share of the work.
TARGET_CHUNK_SECONDS = 0.005
MAX_ADAPTIVE_CHUNK = 4096
# ... and stop growing before a chunk's items or results pass this many bytes, so that
# streaming large items (imap over a generator of 1 MiB blobs) keeps memory flat: with
# ``window`` chunks in flight, about window x 4 MiB of items and as much of results. A
# memory bound, not a speed threshold: tests/faults/test_streaming.py holds it to account.
MAX_CHUNK_BYTES = 4 * 2**20


def _footprint(values: Sequence[Any]) -> int:
    """Bytes ``values`` hold, estimated from the shallow sizes of a sample of 8 to 15.

    Shallow sizes see bytes, str and numpy buffers, the large items that matter here, and
    a sample keeps the estimate cheap next to the work of a chunk.
    """
    if not values:
        return 0
    sample = values[:: max(1, len(values) // 8)]
    return sum(map(sys.getsizeof, sample)) * len(values) // len(sample)


class Chunker:
    """Reads the input lazily, one chunk at a time; the size may change between chunks.

    ``taper=(total, workers)``: chunks shrink as the input's end nears (see _tapered).

    An adaptive size (no chunksize named, input of unknown length) doubles while a chunk
    runs in under TARGET_CHUNK_SECONDS and its items and results stay under half of
    MAX_CHUNK_BYTES, up to MAX_ADAPTIVE_CHUNK items; it halves when a chunk holds more
    than MAX_CHUNK_BYTES. So at most about ``window x MAX_CHUNK_BYTES`` of input (and as
    much of results) is in flight, however large the items are.
    """

    def __init__(
        self,
        items: Iterable[Any],
        size: Optional[int],
        start: int = 0,
        *,
        taper: Optional[Tuple[int, int]] = None,
    ) -> None:
        self._items = iter(items)
        self.adaptive = size is None
        self.size = size or 1
        self.next_index = start
        self.exhausted = False
        self._roomy = True  # the last chunk read could double and stay within the byte cap
        self._taper = taper

    def next(self) -> Optional[Tuple[int, List[Any]]]:
        if self.exhausted:
            return None
        size = self.size
        if self._taper is not None:
            size = self._tapered(size, *self._taper)
        chunk = list(itertools.islice(self._items, size))
        if len(chunk) < size:
            self.exhausted = True
        if not chunk:
            return None
        if self.adaptive:
            self._fit(_footprint(chunk))
        start = self.next_index
        self.next_index += len(chunk)
        return start, chunk

    def _tapered(self, size: int, total: int, workers: int) -> int:
        """Near the end of ``total`` items: chunks of what is left / (2 x workers), down to
        an eighth of ``size``, so that no worker is left with a long last chunk while the
        others idle. (Items that grow dearer along the input put the most work there: 300
        of them rising to 4 ms took 0.32 s on 2 processes in chunks of 38, 0.30 to 0.31 s
        tapered; an even split of their work would take 0.26 s.)"""
        left = total - self.next_index
        return max(1, size // 8, min(size, -(-left // (2 * workers))))

    def _fit(self, nbytes: int) -> None:
        self._roomy = nbytes * 2 <= MAX_CHUNK_BYTES
        if nbytes > MAX_CHUNK_BYTES:
            self.size = max(1, self.size // 2)

    def observe(self, result: ChunkResult, count: int) -> None:
        """Grow an adaptive chunk size while chunks are cheap next to their hand-off."""
        if not self.adaptive:
            return
        nbytes = _footprint(result.results)
        if nbytes > MAX_CHUNK_BYTES:
            self.size = max(1, self.size // 2)
        elif (
            self._roomy
            and nbytes * 2 <= MAX_CHUNK_BYTES
            and count >= self.size
            and result.wall < TARGET_CHUNK_SECONDS
        ):
            self.size = min(self.size * 2, MAX_ADAPTIVE_CHUNK)


_InFlight = Tuple[int, int, "Future[Any]"]  # start index, item count, future


class Run:
    """One call on one backend. Iterate :meth:`ordered` or :meth:`unordered` once.

    Both yield whole chunks (lists of results): flattening them with
    ``itertools.chain.from_iterable`` costs nothing per item, a generator resumed per item
    would cost about as much as a cheap function itself.

    The backend comes from :func:`autopar._pools.acquire`, which counts this call as one of
    its users; the run hands it back when it ends, or when it is dropped unstarted.
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
    ) -> None:
        # First, so that a failing prepare() below still hands the pool back.
        self.release = weakref.finalize(self, _pools.release, backend)
        self.release.atexit = False  # at exit the pools are stopped whoever holds them
        self.backend = backend
        self.payload = backend.prepare(fn, workers)
        self.chunker = chunker
        self.window = max(1, backend.window(workers))
        self.star = star
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.on_chunk = on_chunk
        self.done = 0
        self.pending: Collection[_InFlight] = ()

    def _fill(self, add: Callable[[_InFlight], None]) -> None:
        """Submit chunks until ``window`` are in flight or the input runs out."""
        while len(self.pending) < self.window:
            chunk = self.chunker.next()
            if chunk is None:
                return
            start, items = chunk
            try:
                future = self.backend.submit(self.payload, start, items, self.star, self.deadline)
            except WorkerCrashedError as exc:
                # Raise it where results are collected, after the chunks before this one.
                future = Future()
                future.set_exception(exc)
                add((start, len(items), future))
                return
            add((start, len(items), future))

    def _remaining(self) -> Optional[float]:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _timed_out(self) -> AutoparTimeoutError:
        return AutoparTimeoutError(
            f"the call did not finish within timeout={self.timeout:g}s "
            f"({self.done} items done); pending items were cancelled and stuck workers "
            f"replaced. Raise timeout= if the work is just slow"
        )

    def _results(self, entry: _InFlight) -> List[Any]:
        start, count, future = entry
        try:
            result = self.backend.collect(future, start, count)
        except WorkerCrashedError as crash:
            _pools.park_if_exiting()
            raise self._crashed(entry, crash) from crash.__cause__
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
        with _Cleanup(self):
            self._fill(pending.append)
            while pending:
                entry = pending[0]
                # (A serial chunk is done on submit: no need to pay for a waiter.)
                if not entry[2].done() and not wait([entry[2]], self._remaining()).done:
                    raise self._timed_out()
                pending.popleft()
                results = self._results(entry)
                self._fill(pending.append)
                yield results

    def unordered(self) -> Iterator[List[Any]]:
        pending: Set[_InFlight] = set()
        self.pending = pending
        with _Cleanup(self):
            self._fill(pending.add)
            while pending:
                done, _ = wait([e[2] for e in pending], self._remaining(), FIRST_COMPLETED)
                if not done:
                    raise self._timed_out()
                finished = [e for e in pending if e[2] in done]
                for entry in sorted(finished):
                    pending.discard(entry)
                    results = self._results(entry)
                    self._fill(pending.add)
                    yield results


def run_here(
    fn: Callable[..., Any],
    items: Iterable[Any],
    star: bool,
    start: int = 0,
    on_chunk: Optional[Callable[[ChunkResult, int], None]] = None,
) -> Iterator[List[Any]]:
    """Every item in the caller's thread in one go, as one chunk: a serial plan whose
    caller takes all results at once, with no timeout to check.

    Cutting such a call into chunks buys nothing and costs copies: 200,000 tiny items ran
    1.15x slower than plain map in chunks of 16,384, and the general runner adds about
    0.1 ms a call (a pool lease, a future per chunk).
    """
    result = run_chunk(fn, start, items, star)
    if result.failure is not None:
        raise annotate(result.failure.exc, result.failure.index, "serial worker")
    if on_chunk is not None:
        on_chunk(result, len(result.results))
    yield result.results


def checked_items(items: Iterable[Any], materialize: bool) -> Iterable[Any]:
    """``items``, as a list if ``materialize``; a TypeError naming it if it is not iterable."""
    if isinstance(items, (list, tuple, range)):
        return items
    try:
        iterator = iter(items)
    except TypeError:
        raise TypeError(
            f"items must be an iterable (a list, a generator, ...), not "
            f"{type(items).__name__}; to run one item, call the function itself"
        ) from None
    return list(iterator) if materialize else items


def gather(chunks: Iterator[List[Any]]) -> List[Any]:
    """All results, flattened, for a map: on a crash, what came back goes on the error.

    The first chunk becomes the result (chunks are fresh lists that nothing else keeps):
    copying a one-chunk call's 200,000 results made it 1.13x slower than plain map.
    """
    out: List[Any] = []
    try:
        for chunk in chunks:
            if out:
                out.extend(chunk)
            else:
                out = chunk
    except WorkerCrashedError as exc:
        exc.partial_results.update(enumerate(out))
        raise
    return out


class _Cleanup:
    """On any way out: cancel chunks not started, abort the pool if its work must stop
    (timeout, Ctrl-C, a dead worker), and hand the pool back."""

    def __init__(self, run: Run) -> None:
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
        running = [f for _, _, f in self.run.pending if not f.cancel()]
        if issubclass(kind, WorkerCrashedError) or (
            running and issubclass(kind, (AutoparTimeoutError, KeyboardInterrupt))
        ):
            # Kill what runs where the kind allows it (processes); a thread pool that holds
            # stuck threads is retired instead, so they no longer take capacity.
            _pools.discard(backend)
