"""From a call to a running :class:`~autopar._runner.Run`: settle the config, plan, go.

The decorator calls :func:`start`; a named kind is planned here from the backend's own
defaults, ``kind="auto"`` is planned by :mod:`autopar._auto`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from . import _pools
from ._config import Config
from ._runner import Chunker, Run, run_here
from ._worker import ChunkResult, in_worker
from .plan import Plan

log = logging.getLogger("autopar")


class FunctionState:
    """What one decorated function remembers between calls (its last plan, learned costs)."""

    def __init__(self) -> None:
        # Plain attribute writes are atomic; readers see one whole Plan or another.
        self.last_plan: Optional[Plan] = None
        self.memory: Any = None  # owned by autopar._auto, guarded there
        # (environment config, it merged with the decorator's options): one tuple, so a
        # reader sees a matching pair.
        self.configured: Tuple[Any, Any] = (None, None)
        # kind="auto" only: autopar._auto.Express once the function is known to be serial
        # at any size; map and starmap try it first.
        self.express: Any = None


def plan_named(kind: str, config: Config, n_items: Optional[int], reason: str) -> Plan:
    """The plan for a kind the user named (or that nesting forced)."""
    cls = _pools.backend_class(kind)
    workers = config.workers or cls.default_workers(config, n_items)
    if n_items is not None:
        workers = max(1, min(workers, n_items))
    chunksize = config.chunksize or cls.default_chunksize(n_items, workers)
    return Plan(kind, workers, chunksize, reason, n_items)


class Call(NamedTuple):
    """One map/imap/starmap call: the function, its settings, its input, its output form.

    ``fn`` runs in this process; ``shippable`` is the same function in a form that pickles
    by reference where it can (the decorated wrapper), for kinds that ship it. (A named
    tuple: every call makes one, and it is a quarter of a frozen dataclass's cost.)
    """

    state: FunctionState
    fn: Callable[..., Any]
    shippable: Callable[..., Any]
    config: Config
    items: Iterable[Any]
    n_items: Optional[int]
    ordered: bool
    star: bool
    eager: bool = False  # the caller takes every result at once (map, starmap): no streaming

    @property
    def name(self) -> str:
        return str(getattr(self.fn, "__qualname__", self.fn))


def start(call: Call) -> Iterator[List[Any]]:
    """Plan the call, record the plan on its function, and return the lazy result chunks."""
    config, n_items = call.config, call.n_items
    if in_worker():
        plan = plan_named(
            "serial",
            config,
            n_items,
            "nested call inside an autopar worker: run serially "
            "so workers are not multiplied and the pool cannot deadlock on itself",
        )
    elif config.kind == "auto":
        return _auto_start(call)
    else:
        plan = plan_named(config.kind, config, n_items, f"kind={config.kind!r} was requested")
    call.state.last_plan = plan
    log.debug("autopar: %s -> %s", call.name, plan)
    return execute(plan, call)


def _auto_start(call: Call) -> Iterator[List[Any]]:
    global _auto_start
    from ._auto import start  # (imports this module: loaded on first use)

    _auto_start = start
    return start(call)


def execute(
    plan: Plan,
    call: Call,
    *,
    start_index: int = 0,
    on_chunk: Optional[Callable[[ChunkResult, int], None]] = None,
) -> Iterator[List[Any]]:
    """Run ``plan`` over the call's items on the program-wide pool of its kind, by chunks.

    ``start_index`` is the index of the first item in ``call.items`` (auto's calibration
    may have run those before it).
    """
    config = call.config
    if _pools.backend_class(plan.kind).inline and unchunked(call):
        return run_here(call.fn, call.items, call.star, start_index, on_chunk)
    backend = _pools.acquire(plan.kind, config, plan.workers)  # Run releases it
    run = Run(
        backend,
        call.shippable if backend.ships_by_pickle else call.fn,
        Chunker(
            call.items,
            plan.chunksize,
            start_index,
            taper=_taper(plan, call) if backend.tapers else None,
        ),
        workers=plan.workers,
        star=call.star,
        timeout=config.timeout,
        on_chunk=on_chunk,
    )
    return run.ordered() if call.ordered else run.unordered()


def _taper(plan: Plan, call: Call) -> Optional[Tuple[int, int]]:
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
