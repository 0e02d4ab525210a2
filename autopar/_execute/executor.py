"""Run a plan: the call record, and the path from a plan to result chunks.

    Call + Plan -> execute() -> serial in one go (run_inline)
                             -> serial in chunks, watched between them (run_inline_chunks)
                             -> or a PoolRun on the program-wide pool of the plan's kind

Nothing here decides anything: the plan arrives made (by :mod:`autopar._router` for a
named kind, by :mod:`autopar._auto` for ``kind="auto"``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from .._config import Config
from ..errors import WorkerCrashedError, annotate
from ..plan import Plan
from . import registry
from .chunking import MAX_ADAPTIVE_CHUNK, MAX_INLINE_CHUNK, Chunker
from .outcomes import Policy
from .pool_run import PoolRun
from .worker import ChunkResult, function_name, run_chunk


class Call(NamedTuple):
    """One map/imap/starmap call: the function, its settings, its input, its output form.

    ``fn`` runs in this process; ``to_ship`` is the same function in the form that
    pickles by reference where it can (the decorated wrapper), for kinds that ship it.
    (A named tuple: every call makes one, and it costs a quarter of a frozen dataclass.)
    """

    fn: Callable[..., Any]
    to_ship: Callable[..., Any]
    config: Config
    items: Iterable[Any]
    n_items: Optional[int]
    ordered: bool
    star: bool
    eager: bool = False  # the caller takes every result at once (map, starmap): no streaming
    # A per-item policy: items are (index, item) pairs and fn a Guarded (see .outcomes).
    policy: Optional[Policy] = None

    @property
    def name(self) -> str:
        return function_name(self.fn)


def execute(
    plan: Plan,
    call: Call,
    *,
    start_index: int = 0,
    on_chunk: Optional[Callable[[ChunkResult, int], None]] = None,
    stop_after: Optional[Callable[[], bool]] = None,
) -> Iterator[List[Any]]:
    """Run ``plan`` over the call's items on the program-wide pool of its kind, by chunks.

    ``start_index`` is the index of the first item in ``call.items`` (auto's calibration
    may have run those before it). ``on_chunk(result, items)`` sees every chunk's timing.
    ``stop_after()``, asked before each chunk is handed out, ends the run early once it
    is true: chunks already handed out finish and come back, the rest of the input stays
    unread in ``call.items`` (an iterator) for whoever runs it next. With it, a serial
    plan runs in chunks of ``plan.chunksize`` too, so that it can be asked.
    """
    config = call.config
    if call.policy is not None and plan.kind == "process":
        from .supervised import run_supervised

        return run_supervised(plan, call)
    inline = registry.backend_class(plan.kind).inline
    if inline and unchunked(call) and stop_after is None:
        return run_inline(call.fn, call.items, star=call.star, start=start_index, on_chunk=on_chunk)
    if inline and config.timeout is None and call.policy is None:
        return run_inline_chunks(
            call,
            Chunker(call.items, plan.chunksize, start_index, most=_most(call, inline=True)),
            on_chunk=on_chunk,
            stop_after=stop_after,
        )
    backend = registry.acquire(plan.kind, config, plan.workers)  # PoolRun releases it
    run = PoolRun(
        backend,
        call.to_ship if backend.ships_by_pickle else call.fn,
        Chunker(
            call.items,
            plan.chunksize,
            start_index,
            shrink_tail=_shrink_tail(plan, call) if backend.shrinks_tail else None,
            most=_most(call, inline=backend.inline),
        ),
        workers=plan.workers,
        star=call.star,
        timeout=config.timeout,
        on_chunk=on_chunk,
        stop_after=stop_after,
        policy=call.policy,
    )
    return run.ordered() if call.ordered else run.unordered()


def _most(call: Call, *, inline: bool) -> int:
    """The largest adaptive chunk: chunks run in the caller's thread for a caller that
    keeps every result anyway (a map) are bounded only by the checks between them."""
    return MAX_INLINE_CHUNK if inline and call.eager else MAX_ADAPTIVE_CHUNK


def _shrink_tail(plan: Plan, call: Call) -> Optional[Tuple[int, int]]:
    """(total items, workers) for chunks that shrink near the end, where the chunk size
    is autopar's own choice for input of known length; None where the user named it."""
    if call.n_items is None or call.config.chunksize is not None or plan.workers < 2:
        return None
    return call.n_items, plan.workers


def unchunked(call: Call) -> bool:
    """Whether an inline (serial) plan can run the call in one go, unchunked: no timeout
    to check between chunks, and no stream or progress bar to feed chunk by chunk."""
    config = call.config
    return config.timeout is None and call.eager and not config.progress


def flatten(chunks: Iterator[List[Any]]) -> Iterator[Any]:
    """Results one by one, closing the chunk source (cancelling work) if the caller stops."""
    try:
        for chunk in chunks:
            yield from chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def run_inline(
    fn: Callable[..., Any],
    items: Iterable[Any],
    *,
    star: bool,
    start: int = 0,
    on_chunk: Optional[Callable[[ChunkResult, int], None]] = None,
) -> Iterator[List[Any]]:
    """Every item in the caller's thread in one go, as one chunk: a serial plan whose
    caller takes all results at once, with no timeout to check.

    Chunks would buy nothing here and cost copies, a pool lease and a future per chunk
    (the ``tiny`` row of benchmarks/RESULTS.md is within a few percent of plain map).
    """
    result = run_chunk(fn, start, items, star=star)
    if result.failure is not None:
        raise annotate(result.failure.exc, result.failure.index, "serial worker")
    if on_chunk is not None:
        on_chunk(result, len(result.results))
    yield result.results


def run_inline_chunks(
    call: Call,
    chunker: Chunker,
    *,
    on_chunk: Optional[Callable[[ChunkResult, int], None]],
    stop_after: Optional[Callable[[], bool]],
) -> Iterator[List[Any]]:
    """A serial plan in chunks in the caller's thread, each read from the input as it
    runs (see Chunker.next_lazily), with ``on_chunk`` and ``stop_after`` between chunks
    as on a pool. Only for calls without a timeout or a per-item policy: those run on a
    PoolRun, which checks the timeout between items.

    For a caller that takes every result at once (a map with no progress bar), every
    chunk appends to one list, handed out when the run ends or stops: copying each
    chunk's results into the call's list cost cheap items a tenth of plain map's time.
    """
    whole = call.eager and not call.config.progress
    results: List[Any] = []
    while stop_after is None or not stop_after():
        chunk = chunker.next_lazily()
        if chunk is None:
            break
        start, asked, items = chunk
        if not whole:
            results = []
        first = len(results)
        result = run_chunk(call.fn, start, items, star=call.star, into=results)
        if result.failure is not None:
            raise annotate(result.failure.exc, result.failure.index, "serial worker")
        count = len(results) - first
        chunker.ran(asked, count)
        if count == 0:
            break
        chunker.observe(result, count, first)
        if on_chunk is not None:
            on_chunk(result, count)
        if not whole:
            yield results
    if whole and results:
        yield results


def checked_items(items: Iterable[Any], *, materialize: bool) -> Iterable[Any]:
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

    The first chunk becomes the result: chunks are fresh lists that nothing else keeps,
    and copying a one-chunk call's results would cost as much as a cheap call's work.
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
