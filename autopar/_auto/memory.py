"""What kind="auto" learned about each function, and the fast path it earns.

A function's :class:`LearnedCosts` hang on its wrapper's state (and, for wrappers made
anew per call, in a weak table keyed by the function). A function learned to be serial at
any call size gets a :class:`SerialFastPath` that map and starmap try first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .. import _config
from .._execute.worker import run_here
from ..plan import Plan
from . import cost_model
from .queued_time import held_off_since, thread_usage

if TYPE_CHECKING:
    from .._execute.executor import Call
    from .._router import FunctionState

log = logging.getLogger("autopar")

# Calls predicted to take longer than this take the planner's path, which can re-plan
# between slices of work (autopar._auto.replan.SLICE), instead of the fast path.
FAST_PATH_WORK = 0.01
# A whole call whose cost per item is outside this factor of what was learned replaces it.
LEARN_BAND = 2.0
# A reading counts once this much work (solo seconds) stands behind it: shorter ones are
# timer noise. A whole call's is pooled with the calls that follow (see learn_from_call);
# a running call's watch judges only readings this long (autopar._auto.replan).
MIN_OBSERVED = 1e-3
DRIFT = 4.0  # observed/remembered per-item cost beyond which the learned costs are stale
# Calls shorter than this never mark the learned costs stale: a pause of the scheduler
# (a few hundred microseconds on a shared VM) is as long as such a call, and measuring
# again costs more than any plan could save on it.
DRIFT_FLOOR = 1e-3

# lock guards FunctionState.learned of every function, LearnedCosts' fields, and _learned.
lock = threading.Lock()


def _reset_lock_after_fork() -> None:
    global lock
    lock = threading.Lock()  # (another thread may have held it at the fork)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)


class LearnedCosts:
    """What a function's calibration found; ``plans`` caches decisions by call size.

    ``serial_always`` caches, per (max_threads, dask address), whether serial wins at any
    call size: then later calls skip the cost model and the pools (see SerialFastPath).
    ``settled`` says whether a whole call has read ``measurements`` (took them or agreed
    with them), not only the probe; ``unconfirmed`` holds a whole call's reading outside
    their band until the next call confirms or refutes it (see learn_from_call).
    ``shared`` is the entry of _learned this one was copied from, for a wrapper that
    started from another's costs: what this wrapper finds stale or learns anew is written
    there too, so the next wrapper made anew starts from it (a parallel(fn) made for
    every call would otherwise plan each call on the first wrapper's costs).
    (A plain class: a dataclass costs a millisecond to define, on every first call.)
    """

    __slots__ = (
        "measurements",
        "plans",
        "pooled",
        "serial_always",
        "settled",
        "shared",
        "stale",
        "unconfirmed",
    )

    def __init__(
        self,
        measurements: cost_model.Measurements,
        settled: bool = False,
        shared: Optional[LearnedCosts] = None,
    ) -> None:
        self.measurements = measurements
        self.settled = settled
        self.shared = shared
        self.pooled: Optional[cost_model.Measurements] = None  # short calls' reading
        self.unconfirmed: Optional[cost_model.Measurements] = None
        self.stale = False
        self.plans: Dict[Tuple[Optional[int], Optional[cost_model.Overheads]], Plan] = {}
        # (max_threads, dask address) -> why serial wins at any size, or "" if it does not
        self.serial_always: Dict[Tuple[int, Optional[str]], str] = {}


# The LearnedCosts of the wrapper that last measured each function (guarded by lock): a
# parallel(fn) made anew for every call (joblib's inline style) starts from them rather
# than measuring again. Weak keys: an entry goes with its function. (A forked child
# keeps it: same machine, same function.)
_learned: weakref.WeakKeyDictionary[Callable[..., Any], LearnedCosts] = weakref.WeakKeyDictionary()


def learned_about(fn: Callable[..., Any]) -> Optional[LearnedCosts]:
    # Called with lock held.
    try:
        return _learned.get(fn)
    except TypeError:  # a builtin such as len, or unhashable: no weak key, nothing kept
        return None


def keep(fn: Callable[..., Any], state: FunctionState, m: cost_model.Measurements) -> LearnedCosts:
    """Record what calibration measured of ``fn`` on its wrapper, and for other wrappers."""
    with lock:
        learned = state.learned = LearnedCosts(m)
        with contextlib.suppress(TypeError):  # (see learned_about)
            _learned[fn] = learned
    return learned


def _within(a: cost_model.Measurements, b: cost_model.Measurements) -> bool:
    return 1 / LEARN_BAND <= a.wall / max(b.wall, 1e-9) <= LEARN_BAND


def _pooled(a: cost_model.Measurements, b: cost_model.Measurements) -> cost_model.Measurements:
    """One reading of the items of two, each weighed by its items."""
    k, j = a.samples, b.samples
    return b._replace(
        wall=(a.wall * k + b.wall * j) / (k + j),
        cpu=(a.cpu * k + b.cpu * j) / (k + j),
        samples=k + j,
    )


def learn_from_call(learned: LearnedCosts, observed: Optional[cost_model.Measurements]) -> None:
    """After a call ran to its end: remember its whole cost per item where it left the
    band around what was learned. Hysteresis: a call like the last gets the same plan.
    Until a call has read them, the costs are the probe's, and the call that follows the
    probe read the items the probe left: together they read the whole call, each weighed
    by its items. Where the rest read at least as many items as the probe, that sum
    replaces the probe's reading at once. Otherwise, and once a whole call has read the
    costs, a reading that leaves their band is kept only when the next call reads alike:
    a few items after the probe (one chunk, which a thread preempted while holding the
    GIL can stretch 100x), or one call on a briefly busy machine, cannot move what later
    calls plan on (each is watched, and re-plans within itself if its items did change).
    Calls with less than MIN_OBSERVED of work are pooled until together they have
    that much: one such call is timer noise. One that reads far cheaper than what was
    learned counts at once (noise only lengthens a reading): else a first call that
    misread near-free items (a VM stalled the probe: 80 us an item for 0.3 us) kept
    that reading for good where the function is called only on small inputs, off the
    fast path, and priced a process pool until one started.
    """
    if observed is None:
        return
    with lock:
        pooled = learned.pooled
        if pooled is not None:
            observed = _pooled(pooled, observed)
        m = learned.measurements
        short = observed.wall * observed.samples < MIN_OBSERVED
        if short and observed.wall * LEARN_BAND >= m.wall:
            learned.pooled = observed
            return
        learned.pooled = None
        outweighs = learned.settled
        if not learned.settled:
            outweighs = observed.samples < m.samples
            observed = _pooled(m, observed)
        if _within(observed, m):
            learned.settled, learned.unconfirmed = True, None
            return
        if outweighs:  # (what is learned rests on more than this call's own reading)
            seen, learned.unconfirmed = learned.unconfirmed, observed
            if seen is None or not _within(observed, seen):
                return
        new = m._replace(wall=observed.wall, cpu=observed.cpu)
        for entry in (learned, learned.shared):
            if entry is not None:
                entry.measurements = new
                entry.settled, entry.unconfirmed = True, None
                entry.plans = {}
                entry.serial_always = {}
    log.debug(
        "autopar: whole calls cost %.1fx what was learned; remembering it",
        observed.wall / max(m.wall, 1e-9),
    )


def forget(fn: Callable[..., Any]) -> None:
    """Drop what was learned about ``fn`` (for measuring a true first call again: the
    benchmarks' "auto first" column and the tests; a wrapper keeps its own memory)."""
    with lock, contextlib.suppress(TypeError):
        _learned.pop(fn, None)


def remember_plan(
    memory: LearnedCosts, key: Tuple[Optional[int], Optional[cost_model.Overheads]], plan: Plan
) -> None:
    """Cache a decision; a function called with many sizes starts the cache afresh."""
    with lock:
        if len(memory.plans) > 64:
            memory.plans.clear()
        memory.plans[key] = plan


def open_fast_path(
    call: Call, state: FunctionState, memory: LearnedCosts, m: cost_model.Measurements
) -> None:
    """Give the function a fast path if this call's config is the environment's as
    parsed (and merged with the decorator's options), with no progress bar."""
    config = call.config
    env = state.configured[0] if state.configured[1] is config else config
    values = _config.snapshot_of(env)
    if values is not None and not config.progress:
        state.fast_path = SerialFastPath(state, memory, values, m.wall)


class SerialFastPath:
    """The fast path of a function remembered as serial at any call size.

    The usual path costs tens of microseconds a call (settling the config, the call's
    bookkeeping, a generator), more than the whole work of 100 near-free items. The
    decorator's map and starmap try this path first when they get no timeout, chunksize or progress
    argument. It runs the items right away if nothing that shaped the decision changed
    (the AUTOPAR_* variables, the memory) and a call of this size was planned before; it
    still times the call for drift. (In a worker it runs serially, as nesting would.)
    """

    __slots__ = ("memory", "per_item", "state", "values")

    def __init__(
        self, state: FunctionState, memory: LearnedCosts, values: Tuple[Any, ...], per_item: float
    ) -> None:
        self.state, self.memory, self.values, self.per_item = state, memory, values, per_item

    def run(self, fn: Callable[..., Any], items: Any, *, star: bool) -> Optional[List[Any]]:
        """The results, or None if the call must take the usual path."""
        memory, state = self.memory, self.state
        if (
            memory.stale
            or state.learned is not memory
            or not isinstance(items, (list, tuple, range))
            or _config.snapshot() != self.values
        ):
            return None
        n = len(items)
        if n * self.per_item > FAST_PATH_WORK:
            return None  # long enough to run in watched slices (the planner's serial path)
        plan = memory.plans.get((n, None))  # (cached by the planner's serial path for this size)
        if plan is None:
            return None
        thread0 = thread_usage()
        t0 = _clock()
        out = run_here(fn, items, star=star)
        wall = _clock() - t0
        state.last_plan = plan
        if wall >= DRIFT_FLOOR:  # (the test check_drift starts with, here to save a call)
            check_drift(memory, self.per_item, wall, n, stalled=held_off_since(thread0, wall))
        return out


_clock = time.perf_counter  # (one global read where every microsecond counts)


def check_drift(
    memory: LearnedCosts, per_item: float, wall: float, count: int, *, stalled: float = 0.0
) -> None:
    """After a serial run of ``count`` items: mark the memory stale if they cost far more
    than remembered (costlier items may now pay for a pool; cheaper ones only favour serial
    more). Runs under DRIFT_FLOOR are left alone, and so is time the thread was held off
    a core (``stalled``): a pause of the VM or the scheduler, not the items' cost."""
    wall -= stalled
    if wall >= DRIFT_FLOOR and wall > DRIFT * per_item * count:
        log.debug("autopar: cost drifted %.1fx; re-measuring next call", wall / count / per_item)
        with lock:
            memory.stale = True
            if memory.shared is not None:
                memory.shared.stale = True
