"""BLAS and OpenMP thread pools capped while a thread plan runs: k threads, each calling a
BLAS that starts one thread per core, would ask for k x cores threads.

    PoolRun on a backend that shares_blas, k > 1 workers
        with limited(k):            cap = max(1, cpus // k)
            acquire(cap)  ...  release(cap)
                 |
        one limiter for the program (_lock): the caps of the runs in progress, as a
        multiset; the least of them is in force; the first acquire reads each library's
        own thread count, the last release puts it back

threadpoolctl is optional. Without it, or with no module imported that loads a BLAS or
OpenMP library (numpy, scipy, torch, ...), ``limited()`` does nothing, for the price of a
dictionary-view test (about 0.2 us a call; benchmarks/bench_blas.py measures it).
Process workers cap their BLAS through environment variables instead
(:data:`autopar._execute.worker.BLAS_THREAD_VARS`).

What the cap reaches is threadpoolctl's: OpenBLAS (pthreads), MKL and BLIS keep one
count for the process; an OpenMP runtime keeps one per thread, so a count set in the
caller's thread does not reach the pool's threads (docs/containers-and-big-machines.md).
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import warnings
from typing import Any, ContextManager, Counter, List, Optional, Tuple

from .._config import cpu_count

# Modules whose import loads a BLAS or OpenMP library that threadpoolctl can limit; with
# none of them imported there is nothing to cap, and no reason to import threadpoolctl.
BLAS_MODULES = ("numpy", "scipy", "torch", "numexpr", "mkl")

_NOTHING: ContextManager[None] = contextlib.nullcontext()

# _lock guards everything below: the caps in force, each library's own count read before
# the first of them, the count applied, and the controller (with the modules it saw).
_lock = threading.Lock()
_caps: Counter[int] = collections.Counter()
_originals: Optional[List[Tuple[Any, int]]] = None  # (library controller, its own count)
_applied: Optional[int] = None
_controller: Any = None
_controller_sees: Tuple[str, ...] = ()
# Whether threadpoolctl imports; None until first asked. Written once, read without the
# lock: a stale None only costs one more look under it.
_available: Optional[bool] = None


def cap_for(workers: int) -> int:
    """BLAS threads each of ``workers`` threads may use: the CPU budget shared out."""
    return max(1, cpu_count() // max(1, workers))


def limited(workers: int) -> ContextManager[None]:
    """A context that caps BLAS/OpenMP pools to :func:`cap_for` ``(workers)`` while inside;
    a shared no-op where there is nothing to cap (one worker, no BLAS, no threadpoolctl)."""
    if workers < 2 or _available is False or sys.modules.keys().isdisjoint(BLAS_MODULES):
        return _NOTHING
    return _Capped(cap_for(workers))


class _Capped:
    """One run's hold on the limiter; entered once."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.held = False

    def __enter__(self) -> None:
        self.held = _acquire(self.cap)

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.held = False
            _release(self.cap)


def _acquire(cap: int) -> bool:
    """Add ``cap`` to the caps in force; False if there is no library to cap."""
    global _originals
    with _lock:
        if not _caps:
            libraries = _libraries()
            if not libraries:
                return False
            _originals = [(lib, lib.num_threads) for lib in libraries]
        _caps[cap] += 1
        try:
            _apply(min(_caps))
        except BaseException:  # (Ctrl-C included): the run never held its cap
            _drop(cap)
            raise
    return True


def _release(cap: int) -> None:
    """Take ``cap`` out; the next strictest applies, or, with none left, the own counts."""
    with _lock:
        _drop(cap)


def _drop(cap: int) -> None:
    # (_lock held.)
    global _originals, _applied
    _caps[cap] -= 1
    if _caps[cap] <= 0:
        del _caps[cap]
    if _caps:
        _apply(min(_caps))
        return
    originals, _originals, _applied = _originals or [], None, None
    for lib, own in originals:
        lib.set_num_threads(own)
    _check_restored(originals)


def _check_restored(originals: List[Tuple[Any, int]]) -> None:
    """(_lock held.) Warn, once per program, where a library kept the cap after its own
    count was set back.

    Measured with OpenBLAS 0.3.31 (numpy 2.4's wheels): a count set back from one thread
    while another thread that had set a count was still alive did not take. Thread plans
    in two threads that overlap, where the one that capped first is not the one that
    ends last, then leave BLAS capped for the rest of the program. That cannot be undone
    from this thread; it can be said (docs/containers-and-big-machines.md).
    """
    global _warned_stuck
    if _warned_stuck:
        return
    for lib, own in originals:
        left = lib.num_threads
        if left != own:
            _warned_stuck = True
            warnings.warn(
                f"autopar: {_name(lib)} kept {left} thread(s) after autopar set its own "
                f"count, {own}, back: thread plans ran in several threads at once, and "
                "the library ignored the count set back from another thread than the one "
                f"that capped it. Its calls run on {left} thread(s) from now on; run "
                "thread plans from one thread, or set the count again from the thread "
                "that ran the first of them.",
                RuntimeWarning,
                stacklevel=2,
            )
            return


def _name(lib: Any) -> str:
    return str(getattr(lib, "internal_api", None) or getattr(lib, "filepath", None) or "a BLAS")


_warned_stuck = False


def _apply(cap: int) -> None:
    # (_lock held.) Never raises a count: a library the user set lower keeps its own.
    global _applied
    if cap == _applied:
        return
    for lib, own in _originals or ():
        lib.set_num_threads(min(own, cap))
    _applied = cap


def _libraries() -> List[Any]:
    """(_lock held.) threadpoolctl's controllers of the loaded libraries; [] without it.

    Looking for libraries costs about a millisecond, so the controller is kept, and made
    again only when another of BLAS_MODULES has been imported since.
    """
    global _controller, _controller_sees, _available
    sees = tuple(name for name in BLAS_MODULES if name in sys.modules)
    if _controller is None or sees != _controller_sees:
        _controller = _new_controller()
        _controller_sees = sees
        if _controller is None:
            _available = False
            return []
        _available = True
    return list(_controller.lib_controllers)


def _new_controller() -> Any:
    """A threadpoolctl.ThreadpoolController, or None where threadpoolctl is not installed."""
    try:
        import threadpoolctl  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return threadpoolctl.ThreadpoolController()


def describe(kind: str, workers: int) -> Optional[str]:
    """A line for explain(): the cap a plan of ``kind`` with ``workers`` gets here and
    now, or None where it gets none."""
    from .registry import backend_class

    try:
        shares = backend_class(kind).shares_blas
    except KeyError:  # a kind no backend runs (async: coroutines on one event loop)
        return None
    if workers < 2 or not shares or limited(workers) is _NOTHING:
        return None
    with _lock:
        if not _libraries():
            return None
    cap = cap_for(workers)
    return (
        f"BLAS/OpenMP capped to {cap} thread{'s' if cap > 1 else ''} per worker while it "
        f"runs ({cpu_count()} CPUs // {workers} workers)"
    )


def _reset() -> None:
    """Forget every cap and the controller (a forked child; tests). Counts stay as they are."""
    global _lock, _originals, _applied, _controller, _controller_sees, _available
    _lock = threading.Lock()
    _caps.clear()
    _originals, _applied = None, None
    _controller, _controller_sees, _available = None, (), None


# A lock held mid-fork would stay held in the child, and the caps belong to the parent's
# runs: the child starts with none (its libraries keep the counts in force at the fork).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset)
