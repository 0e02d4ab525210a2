"""The one protocol every kind implements; the runner and the registry know nothing else.

A backend runs *chunks*: a start index and a list of items, through
:func:`autopar._execute.worker.run_chunk`, and hands back a future whose outcome
:meth:`Backend.collect` turns into a :class:`~autopar._execute.worker.ChunkResult`. Capabilities
are class attributes, so callers ask "does it pickle?" rather than "is it processes?".
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, ClassVar, NamedTuple, Optional, Sequence, Tuple

from ..._config import Config
from ..shared_buffers import Keeper
from ..worker import ChunkResult

# A pickled function from this size reaches each worker of a kind that ships by pickle
# once (process workers read it from shared memory, dask workers fetch it scattered);
# below it, it travels with each chunk. At 64 KiB a chunk's copy through the pipe costs
# about what making a segment does (~0.1 ms); a function carrying a 50 MiB table costs
# 50 ms a chunk by pipe (benchmarks/bench_heavy.py, the "table" row).
LARGE_FUNCTION = 64 * 1024


def pickle_function(
    fn: Callable[..., Any], where: str, keeper: Optional[Keeper] = None
) -> Tuple[bytes, ...]:
    """``fn`` pickled for ``where`` (by reference, else by value with cloudpickle), in
    the pieces the pickler wrote (see worker.dump_parts: a large bytes value the function
    carries is not copied, and ``keeper`` takes its large out-of-band buffers); a
    PicklingFailedError naming the function when neither works."""
    from ...errors import PicklingFailedError
    from ..worker import dump_parts, function_name

    try:
        return dump_parts(fn, keeper)
    except Exception as exc:
        raise PicklingFailedError(
            f"the function {function_name(fn)!r} cannot be pickled to run "
            f"{where}, even by value: {type(exc).__name__}: {exc}"
        ) from exc


def small_pickle(parts: Tuple[bytes, ...]) -> Optional[bytes]:
    """The pickle whose pieces are ``parts``, whole, if it is small enough to travel with
    each chunk (under LARGE_FUNCTION); None if it must reach each worker once."""
    if sum(len(part) for part in parts) < LARGE_FUNCTION:
        return b"".join(parts)
    return None


class Replacement(NamedTuple):
    """Why a live pool cannot serve a call and must be replaced."""

    why: str
    #: The pool can no longer run anything (a dead worker): the user should hear of it.
    #: Otherwise the replacement is a choice (more workers, other settings).
    broken: bool = False


class Backend:
    """Base class of every backend. Subclasses set the capabilities and override the methods."""

    kind: ClassVar[str]
    #: Items, results and the function are pickled to reach workers.
    ships_by_pickle: ClassVar[bool] = False
    #: Running work can be stopped by :meth:`abort` (processes can be killed, threads cannot).
    can_abort: ClassVar[bool] = False
    #: Chunks run in the caller's thread, one at a time, inside submit().
    inline: ClassVar[bool] = False
    #: Chunks run on threads of this process, sharing its BLAS/OpenMP pools: a run with
    #: several workers caps those pools meanwhile (see autopar._execute.blas_limits).
    shares_blas: ClassVar[bool] = False
    #: Chunks autopar sized may shrink near the input's end (a hand-off is cheap enough).
    shrinks_tail: ClassVar[bool] = True

    @classmethod
    def default_workers(cls, config: Config, n_items: Optional[int]) -> int:
        """Workers for a call that did not name a count (``config.workers`` wins)."""
        return 1

    @classmethod
    def default_chunksize(cls, n_items: Optional[int], workers: int) -> Optional[int]:
        """Items per chunk when none was named; None means adaptive (see the Chunker)."""
        if n_items is None:
            return None
        # About four chunks per worker, as multiprocessing.Pool.map does: few hand-offs, and
        # a slow chunk near the end leaves the others little to wait for.
        return max(1, -(-n_items // (4 * workers)))

    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.capacity = workers

    def replacement(self, config: Config, workers: int) -> Optional[Replacement]:
        """None if this pool can serve a call with ``config``; else why it must be replaced."""
        if workers > self.capacity:
            return Replacement(f"{workers} workers wanted, the pool has {self.capacity}")
        return None

    def prepare(self, fn: Callable[..., Any], workers: int = 1) -> Any:
        """Turn the callable into what submit() sends for one call (the callable itself,
        its pickle, ...); ``workers`` is how many of its chunks may run at once."""
        return fn

    def window(self, workers: int) -> int:
        """Chunks a call with ``workers`` keeps in flight: this is what bounds concurrency.

        A pool that ships chunks to other processes has a round trip between a result and
        the next chunk; when the pool is exactly as large as the call's workers, one more
        chunk per worker waits queued in the pool, so no worker idles through that trip.
        """
        if self.inline:
            return 1
        if self.ships_by_pickle and self.capacity <= workers:
            return 2 * workers
        return workers

    def submit(
        self,
        payload: Any,
        start: int,
        items: Sequence[Any],
        *,
        star: bool,
        deadline: Optional[float],
    ) -> Future[Any]:
        """Start one chunk; the future's outcome goes through collect()."""
        raise NotImplementedError

    def collect(self, future: Future[Any], start: int, count: int) -> ChunkResult:
        """The chunk's result; raises an AutoparError if the worker itself failed."""
        return future.result()  # type: ignore[no-any-return]

    def rerunnable(self) -> bool:
        """Whether a chunk whose worker died can run again on this pool: the death cost
        its task, not the pool (a dask cluster restarts its workers; a broken process
        pool can run nothing more)."""
        return False

    def cancel(self, future: Future[Any]) -> bool:
        """Cancel a chunk that has not started; whether it was cancelled."""
        return future.cancel()

    def abandon(self, future: Future[Any]) -> None:
        """The run will not collect this chunk: free what it holds once it ends."""

    def abort(self) -> None:
        """Stop running work as far as this kind allows, and release the pool."""
        self.shutdown()

    def shutdown(self) -> None:
        """Release the pool; running work may finish."""

    @classmethod
    def close_shared(cls) -> None:
        """Close what the kind holds outside any pool (autopar.shutdown() calls it for
        every kind whose module is loaded); most kinds hold nothing."""
