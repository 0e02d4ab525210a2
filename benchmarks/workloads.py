"""Named workloads and the contenders that run them, shared by every autopar benchmark.

A workload is a module-level function (so process workers can import it by reference) and
a factory for its items, plus what it represents and the trap it sets for an automatic
choice. Sizes are modelled on measurements from a 2-core Linux VM; ``scale`` shrinks them
for smoke runs (``--quick``): item counts for the matrix, sleep lengths for the classic
sleeps.

A contender is one way to run ``fn`` over ``items``: plain ``map``, autopar with a named
kind, the stdlib pools as their defaults make them, joblib and mpire defaults (when
installed), and autopar's ``kind="auto"`` on a first call and on later calls.

    Workload(fn, items(scale)) x Contender.make(fn) -> Runner(items) -> results, last plan
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import multiprocessing
import multiprocessing.pool
import time
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence

from autopar import Plan, parallel

Fn = Callable[[Any], Any]
MIB = 1 << 20

# Loop counts for `spin`, measured on a 2-core AMD EPYC VM (Python 3.11): about 0.11 us
# per iteration, so 18,000 iterations are ~2 ms of pure-Python CPU and 900 are ~100 us.
SPIN_2MS = 18_000
SPIN_1MS = 9_000
SPIN_100US = 900


# --- workload functions: module level, so a process worker can import them -------------


def nap(seconds: float) -> None:
    """Sleep: waiting work that holds no CPU and no GIL (I/O stands in for it)."""
    time.sleep(seconds)


def square_int(x: int) -> int:
    """A tiny item: far cheaper than any hand-off to a pool."""
    return x * x


def spin(n: int) -> int:
    """Pure-Python CPU for about ``n * 0.11`` microseconds, holding the GIL throughout."""
    acc = 0
    for i in range(n):
        acc += i * i % 7
    return acc


def sha256_hex(buf: bytes) -> str:
    """Hash a buffer: C code that releases the GIL for large inputs, so threads scale."""
    return hashlib.sha256(buf).hexdigest()


def nbytes(buf: bytes) -> int:
    """Almost free, but its argument is large: shipping it costs more than running it."""
    return len(buf)


def nap_then_spin(n: int) -> int:
    """Wait 5 ms, then compute: waiting overlaps on threads, the CPU part does not."""
    time.sleep(0.005)
    return spin(n)


# The classic article's CPU-bound example: cheaper per item than any pool's hand-off.
square = partial(math.pow, 2)


# --- items ------------------------------------------------------------------------------


def _count(full: int, scale: float, least: int = 8) -> int:
    """``full`` items scaled down for quick runs, never below ``least``."""
    return max(least, int(full * scale))


def _buffers(n: int) -> List[bytes]:
    """``n`` distinct 1 MiB buffers: distinct, so a pickler cannot send one for many."""
    return [i.to_bytes(4, "little") * (MIB // 4) for i in range(n)]


def _growing(n: int) -> List[int]:
    """Spin counts rising linearly from 0 to twice the mean of ~2 ms."""
    return [2 * SPIN_2MS * i // max(1, n - 1) for i in range(n)]


# --- the registry ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark input: what runs, over what, and what it is meant to catch."""

    name: str
    fn: Fn
    items: Callable[[float], Sequence[Any]]  # scale -> items
    description: str
    trap: str
    suite: str  # "classic" or "matrix"
    slow: bool = False  # seconds per run: measure fewer rounds


WORKLOADS: Dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            "sleep_up",
            nap,
            lambda s: [x * s for x in range(5)],
            "sleep 0, 1, 2, 3, 4 s (the classic article's waiting example)",
            "serial takes 10 s; one thread per item finishes in the longest item, 4 s",
            "classic",
            slow=True,
        ),
        Workload(
            "sleep_down",
            nap,
            lambda s: [x * s for x in (4, 3, 2, 1, 0)],
            "sleep 4, 3, 2, 1, 0 s (longest first)",
            "a probe that waits for the first item to finish learns nothing for 4 s",
            "classic",
            slow=True,
        ),
        Workload(
            "square",
            square,
            lambda s: range(1000),
            "math.pow(2, x) for x in range(1000) (the classic CPU example)",
            "each item is ~0.1 us: any pool is slower than serial; calibration must be cheap",
            "classic",
        ),
        Workload(
            "tiny",
            square_int,
            lambda s: range(_count(200_000, s)),
            "x * x over 200,000 ints",
            "items far cheaper than a hand-off: serial wins, processes pay to pickle",
            "matrix",
        ),
        Workload(
            "sleep_10ms",
            nap,
            lambda s: [0.01] * _count(200, s),
            "10 ms sleeps over 200 items",
            "waiting work: serial 2 s, default-sized pools ~1 s, 128 threads ~35 ms",
            "matrix",
        ),
        Workload(
            "cpu_2ms",
            spin,
            lambda s: [SPIN_2MS] * _count(300, s),
            "pure-Python CPU, ~2 ms per item, 300 items",
            "GIL-bound: threads give nothing, processes win by the core count",
            "matrix",
        ),
        Workload(
            "sha256_1mib",
            sha256_hex,
            lambda s: _buffers(_count(128, s)),
            "sha256 of 128 distinct 1 MiB buffers (~0.9 ms each)",
            "GIL-free C code: threads win; processes must ship 1 MiB per item",
            "matrix",
        ),
        Workload(
            "len_1mib",
            nbytes,
            lambda s: _buffers(_count(100, s)),
            "len() of 100 distinct 1 MiB buffers",
            "cheap work on big arguments: serial wins, processes pay to ship 100 MiB",
            "matrix",
        ),
        Workload(
            "cheap_first",
            spin,
            lambda s: [0] + [SPIN_2MS] * (_count(300, s) - 1),
            "one free item, then ~2 ms pure-Python items (300 in all)",
            "judging by the first item alone says serial; processes win",
            "matrix",
        ),
        Workload(
            "growing",
            spin,
            lambda s: _growing(_count(300, s)),
            "pure-Python CPU rising from 0 to ~4 ms along 300 items",
            "early samples underestimate the call; the last chunks hold the most work",
            "matrix",
        ),
        Workload(
            "mixed",
            nap_then_spin,
            lambda s: [SPIN_1MS] * _count(200, s),
            "5 ms sleep then ~1 ms pure-Python CPU, 200 items",
            "part waiting, part GIL-bound: many threads hide the wait, not the CPU",
            "matrix",
        ),
        Workload(
            "medium",
            spin,
            lambda s: [SPIN_100US] * _count(2000, s),
            "pure-Python CPU, ~100 us per item, 2,000 items",
            "processes win only with chunks large enough to hide the hand-off",
            "matrix",
        ),
    ]
}


def suite(name: str) -> List[Workload]:
    """The workloads of one suite ("classic" or "matrix"), in registry order."""
    return [w for w in WORKLOADS.values() if w.suite == name]


# --- contenders ----------------------------------------------------------------------------


class Runner:
    """One prepared way to run a function: call it with items; ``plan`` says what autopar ran."""

    def __init__(self, call: Callable[[Sequence[Any]], List[Any]], wrapper: Any = None) -> None:
        self._call = call
        self._wrapper = wrapper

    def __call__(self, items: Sequence[Any]) -> List[Any]:
        return self._call(items)

    @property
    def plan(self) -> Optional[Plan]:
        return None if self._wrapper is None else self._wrapper.last_plan


@dataclasses.dataclass(frozen=True)
class Contender:
    """A column of the results: how to prepare a :class:`Runner` for a function.

    ``fixed`` marks a fixed choice (serial, threads or processes, by autopar's named kinds
    or the stdlib pools): auto is judged against the best of those. ``fresh`` means a new
    runner for every timed call (auto's first call); ``warm_up`` means one untimed call
    comes first (auto's later calls); ``keeps_pool`` means its pool outlives a call.
    """

    name: str
    make: Callable[[Fn], Runner]
    fixed: bool = False
    fresh: bool = False
    warm_up: bool = False
    keeps_pool: bool = False
    # It forks this process (multiprocessing's default on Linux): for a second or more
    # after such a pool ends, two threads hashing here took 1.5-2x as long (sha256_1mib on
    # 2 cores, whatever ran them), so these columns run after all the others.
    forks: bool = False


def _serial(fn: Fn) -> Runner:
    return Runner(lambda items: list(map(fn, items)))


def _autopar(kind: str, fn: Fn) -> Runner:
    wrapper = parallel(kind=kind)(fn)
    return Runner(wrapper.map, wrapper)


def _autopar_first(fn: Fn) -> Runner:
    """A true first call: a new wrapper, and nothing learned about ``fn`` by another."""
    from autopar._auto import memory

    memory.forget(fn)
    return _autopar("auto", fn)


def _threadpool(fn: Fn) -> Runner:
    def call(items: Sequence[Any]) -> List[Any]:
        with multiprocessing.pool.ThreadPool() as pool:
            return pool.map(fn, items)

    return Runner(call)


def _mp_pool(fn: Fn) -> Runner:
    def call(items: Sequence[Any]) -> List[Any]:
        with multiprocessing.Pool() as pool:
            return pool.map(fn, items)

    return Runner(call)


def _joblib(fn: Fn) -> Runner:
    from joblib import Parallel, delayed

    return Runner(lambda items: list(Parallel(n_jobs=-1)(delayed(fn)(x) for x in items)))


def _mpire(fn: Fn) -> Runner:
    from mpire import WorkerPool

    def call(items: Sequence[Any]) -> List[Any]:
        with WorkerPool() as pool:
            return list(pool.map(fn, items))

    return Runner(call)


def _installed(module: str) -> bool:
    """Whether an optional contender's package can be imported here."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def contenders() -> List[Contender]:
    """Every column, in table order; joblib and mpire only where installed."""
    found = [
        Contender("serial", _serial, fixed=True),
        Contender("autopar thread", partial(_autopar, "thread"), fixed=True, keeps_pool=True),
        Contender("ThreadPool()", _threadpool, fixed=True),
        Contender("autopar process", partial(_autopar, "process"), fixed=True, keeps_pool=True),
        Contender(
            "Pool()", _mp_pool, fixed=True, forks=multiprocessing.get_start_method() == "fork"
        ),
    ]
    if _installed("joblib"):
        found.append(Contender("joblib", _joblib, keeps_pool=True))
    if _installed("mpire"):
        found.append(Contender("mpire", _mpire, forks=True))  # (its default start method)
    # autopar's own floor for a first call: the kind named, so nothing is measured (a
    # row's "auto first" cannot be cheaper than the call path this column pays).
    found.append(Contender("serial named first", partial(_autopar, "serial"), fresh=True))
    found.append(Contender("auto first", _autopar_first, fresh=True, keeps_pool=True))
    found.append(Contender("auto later", partial(_autopar, "auto"), warm_up=True, keeps_pool=True))
    return found


def missing_optional() -> List[str]:
    """Optional contenders that are not installed, for the report."""
    return [m for m in ("joblib", "mpire") if not _installed(m)]
