"""kind="auto": measure the function on the call's own items, predict, choose, remember.

First call of a function (or after its cost drifted):

    probe (autopar._probe) runs items on helper threads, growing the thread count while
    items wait, and measures wall/CPU per item and the process's CPU rate
      -> Measurements + this machine's Overheads -> autopar._cost.decide -> Plan
      -> processes chosen and the pool is cold: the probe keeps working while it starts
      -> the rest of the input runs on the chosen pool; output merges both, in order

Later calls decide from the remembered Measurements without probing, and watch each
chunk's cost: a drift beyond DRIFT marks the memory stale, so the next call re-probes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from . import _cost, _overheads
from ._config import Config, cpu_count
from ._dispatch import FunctionState, execute
from ._probe import Probe, schedstat
from ._worker import ChunkResult, dumps
from .errors import AutoparTimeoutError
from .plan import Plan

log = logging.getLogger("autopar")

TICK = 0.001  # how often the caller looks at the probe
# An item running longer than this (and than 4x the mean so far) counts as slow: more
# threads are added while the process's CPU stays mostly idle (waiting work).
SLOW_ITEM = 0.002
WAITING_RATE = 0.5  # process CPU-s per wall-s under which the work is mostly waiting
ASSUMED_LENGTH = 10_000  # items assumed for input of unknown length (imap on a generator)
DRIFT = 4.0  # observed/remembered per-item cost beyond which the memory is stale
PIPE_BYTES_PER_SECOND = 1e9  # copying pickled bytes through a pipe, both ends together

# _memory_lock guards FunctionState.memory of every function.
_memory_lock = threading.Lock()


@dataclasses.dataclass
class Memory:
    """What a function's calibration found; ``plans`` caches decisions by call size."""

    measurements: _cost.Measurements
    stale: bool = False
    plans: Dict[Tuple[Optional[int], _cost.Overheads], Plan] = dataclasses.field(
        default_factory=dict
    )


def start(
    state: FunctionState,
    fn: Callable[..., Any],
    shippable: Callable[..., Any],
    config: Config,
    items: Iterable[Any],
    n_items: Optional[int],
    *,
    ordered: bool,
    star: bool,
) -> Iterator[List[Any]]:
    """Run one call the way the measurements say is fastest."""
    with _memory_lock:
        memory = state.memory
    if n_items is not None and n_items <= 1:
        plan = Plan("serial", 1, 1, "one item or none: nothing to run in parallel", n_items)
    elif memory is not None and not memory.stale:
        return _remembered(state, memory, fn, shippable, config, items, n_items, ordered, star)
    else:
        return _calibrated(state, fn, shippable, config, items, n_items, ordered, star)
    state.last_plan = plan
    return execute(plan, fn, shippable, config, items, ordered=ordered, star=star)


def _remembered(
    state: FunctionState,
    memory: Memory,
    fn: Callable[..., Any],
    shippable: Callable[..., Any],
    config: Config,
    items: Iterable[Any],
    n_items: Optional[int],
    ordered: bool,
    star: bool,
) -> Iterator[List[Any]]:
    m = memory.measurements
    overheads = _overheads.current(config)
    key = (n_items, overheads)
    with _memory_lock:
        plan = memory.plans.get(key)
    if plan is None:
        plan = _decide(m, config, n_items, overheads)
        plan = dataclasses.replace(plan, reason=f"{plan.reason} (remembered from an earlier call)")
        with _memory_lock:
            if len(memory.plans) > 64:
                memory.plans.clear()
            memory.plans[key] = plan
    state.last_plan = plan
    log.debug("autopar: %s: %s", getattr(fn, "__qualname__", fn), plan.reason)
    # Threads that compute share cores (and maybe the GIL), which stretches their wall
    # time by up to the thread count; waiting threads do not stretch each other.
    computing_threads = plan.kind == "thread" and m.cpu_fraction >= WAITING_RATE
    stretch = DRIFT * (plan.workers if computing_threads else 1)
    n = ASSUMED_LENGTH if n_items is None else n_items

    def on_chunk(result: ChunkResult, count: int) -> None:
        done = len(result.results)
        if done == 0 or result.wall < 1e-4 or memory.stale:
            return
        wall, cpu = result.wall / done, result.cpu / done
        ratio = wall / max(m.wall, 1e-9)
        if 1 / DRIFT <= ratio <= stretch:
            return
        # Far off: would the observed cost change the choice? (Tiny items vary wildly in
        # relative terms and change nothing.) Computing threads: CPU time is the solo cost.
        seen = dataclasses.replace(m, wall=max(cpu if computing_threads else wall, 1e-9), cpu=cpu)
        again = _cost.decide(seen, overheads, n)
        if again.kind != plan.kind or not 0.5 <= again.workers / plan.workers <= 2:
            log.debug("autopar: cost drifted %.1fx; re-measuring on the next call", ratio)
            with _memory_lock:
                memory.stale = True

    return execute(
        plan, fn, shippable, config, items, ordered=ordered, star=star, on_chunk=on_chunk
    )


def _decide(
    m: _cost.Measurements,
    config: Config,
    n: Optional[int],
    overheads: Optional[_cost.Overheads] = None,
) -> Plan:
    """The cost model's plan for ``n`` items, with the user's explicit settings on top."""
    overheads = overheads or _overheads.current(config)
    plan = _cost.decide(m, overheads, ASSUMED_LENGTH if n is None else n)
    # Unknown length: chunks that adapt as results come (the model's assumed n is a guess).
    chunksize = plan.chunksize if n is not None else None
    return dataclasses.replace(
        plan,
        n_items=n,
        workers=config.workers or plan.workers,
        chunksize=config.chunksize or chunksize,
    )


class _Watch:
    """The CPU the probe's work asks for, per wall-second, over the last few milliseconds.

    On Linux, with few threads, it sums each worker thread's run time and run-queue wait
    (see :func:`autopar._probe.schedstat`), so a busy machine slows nothing here: one
    computing thread reads 1, threads taking turns on the GIL read 1 together, GIL-free
    threads read their number, waiting threads read near 0. Elsewhere the process's CPU
    time stands in, which a busy machine deflates.
    """

    MAX_THREADS_READ = 16  # reading /proc costs ~20 us a thread; waiting work needs none

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.at, self.base = time.perf_counter(), self._read()
        self.rate: Optional[float] = None
        self.by_demand = False  # whether the last rate came from the scheduler's figures

    def _read(self) -> Tuple[float, Optional[Dict[int, float]]]:
        ids = self.probe.thread_ids()
        demand: Optional[Dict[int, float]] = None
        if len(ids) <= self.MAX_THREADS_READ:
            demand = {}
            for native in ids:
                used = schedstat(native)
                if used is None:
                    demand = None
                    break
                demand[native] = used
        return time.process_time(), demand

    def update(self, min_window: float) -> Optional[float]:
        now = time.perf_counter()
        if now - self.at < min_window:
            return self.rate
        cpu, demand = self._read()
        base_cpu, base_demand = self.base
        if demand is not None and base_demand is not None:
            # A thread born in the window counts from zero: all it used is recent.
            used = sum(v - base_demand.get(native, 0.0) for native, v in demand.items())
            self.by_demand = True
        else:
            used, self.by_demand = cpu - base_cpu, False
        self.rate = used / (now - self.at)
        self.at, self.base = now, (cpu, demand)
        return self.rate


def _calibrated(
    state: FunctionState,
    fn: Callable[..., Any],
    shippable: Callable[..., Any],
    config: Config,
    items: Iterable[Any],
    n_items: Optional[int],
    ordered: bool,
    star: bool,
) -> Iterator[List[Any]]:
    iterator = iter(items)
    limit = max(64, 2 * config.max_threads)
    probe = Probe(fn, iterator, star, limit if n_items is None else min(limit, n_items))
    t0 = time.perf_counter()
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    try:
        rates = _probe_until_known(probe, config, t0, deadline)
        m = _measure(probe, shippable, rates)
        remaining = None if n_items is None else n_items - probe.read
        # With nothing left, the plan shown (and used next time) is for the whole call.
        plan = _decide(m, config, remaining or n_items)
        if plan.kind == "process" and not probe.finished:
            _start_processes(probe, config, plan, m, deadline)
        boundary = probe.stop()
    except BaseException:
        probe.stop()
        raise
    with _memory_lock:
        state.memory = Memory(m)
    spent = time.perf_counter() - t0
    finished = probe.exhausted or (n_items is not None and boundary >= n_items)
    if finished or probe.failure is not None:
        note = f"all {boundary} items ran while measuring ({spent * 1e3:.1f} ms); "
        note += f"later calls: {plan.kind}"
    else:
        note = f"the first {boundary} items ran while measuring ({spent * 1e3:.1f} ms)"
    plan = dataclasses.replace(plan, n_items=n_items, reason=f"{plan.reason} ({note})")
    state.last_plan = plan
    log.debug("autopar: %s -> %s", getattr(fn, "__qualname__", fn), plan)
    if deadline is not None:
        config = dataclasses.replace(config, timeout=max(1e-3, deadline - time.monotonic()))
    rest: Optional[Iterator[List[Any]]] = None
    if not finished and probe.failure is None and probe.input_error is None:
        rest = execute(
            plan, fn, shippable, config, iterator, ordered=ordered, star=star, start_index=boundary
        )
    return _merge(probe, boundary, rest, ordered)


def _probe_until_known(
    probe: Probe, config: Config, t0: float, deadline: Optional[float]
) -> Dict[int, float]:
    """Let the probe run and grow until the costs are known.

    Returns the process CPU rate (CPU-s per wall-s) last seen with each worker count.
    """
    rates: Dict[int, float] = {}
    budget = config.calibration_ms / 1e3
    cores = cpu_count()
    watch = _Watch(probe)
    probe.grow(1)
    while not probe.finished:
        probe.wait(TICK)
        now = time.perf_counter()
        if deadline is not None and time.monotonic() > deadline:
            raise AutoparTimeoutError(f"the call did not finish within timeout={config.timeout:g}s")
        rate = watch.update(2 * TICK)
        costs = _item_costs(probe, rate)
        if rate is None or not costs:
            continue
        rates[probe.workers] = rate
        mean = sum(w for w, _ in costs) / len(costs)
        # Waiting: items' threads use little CPU *and* the process as a whole is mostly
        # idle. Threads taking turns on the GIL also show little CPU each, but keep the
        # process busy: they must not be mistaken for waiting and multiplied.
        idle_items = sum(c for _, c in costs) < WAITING_RATE * sum(w for w, _ in costs)
        waiting = rate < WAITING_RATE and (watch.by_demand or idle_items)
        workers = probe.workers
        if waiting:
            # Quadruple the threads: 1, 4, 16, 64, 128 reaches the cap in four looks.
            probe.grow(min(config.max_threads, 4 * workers))
        elif rate > 0.75 * workers and workers < cores and mean > SLOW_ITEM / 4:
            # Busy computing and every thread so far adds CPU: do threads overlap (GIL)?
            probe.grow(workers + 1)
        else:
            thread_test_done = workers >= min(2, cores) or mean <= SLOW_ITEM / 4
            if len(probe.samples) >= 3 and thread_test_done and now - t0 >= 3 * mean:
                break  # computing, and the thread test (if worth one) is done
        if workers != probe.workers:
            watch = _Watch(probe)
        if now - t0 >= budget:
            break
    return rates


def _item_costs(probe: Probe, rate: Optional[float]) -> List[Tuple[float, float]]:
    """(wall, CPU) of finished items, and of running ones so far.

    A running item's CPU is read from its thread's clock where the platform allows;
    elsewhere the process's CPU rate stands in. Counting running items matters: a cheap
    first item must not speak for slow ones still running.
    """
    samples = list(probe.samples)
    clean = [(w, c) for w, c, alone in samples if alone]
    costs = clean if len(clean) >= 3 else [(w, c) for w, c, _ in samples]
    busy = rate is not None and rate >= WAITING_RATE
    for wall, cpu in probe.running_costs():
        costs.append((wall, cpu if cpu is not None else (wall if busy else 0.0)))
    return costs


def _measure(
    probe: Probe, shippable: Callable[..., Any], rates: Dict[int, float]
) -> _cost.Measurements:
    rate = rates.get(probe.workers)
    costs = _item_costs(probe, rate) or [(0.0, 0.0)]  # the first item raised: no figures
    wall = sum(w for w, _ in costs) / len(costs)
    cpu = sum(c for _, c in costs) / len(costs)
    single = rates.get(1)
    # (Only for items whose own CPU clock shows real computing: the first window also
    # holds thread start-up, which would make sleeping items look busy.)
    if single is not None and single >= WAITING_RATE and cpu >= 0.2 * wall:
        # One thread asked for this share of a core: on a busy machine its items wait for
        # a core, which their own CPU clock does not show.
        cpu = max(cpu, wall * min(1.0, single))
    clean = any(alone for _, _, alone in probe.samples)
    if not clean and rate is not None and rate >= WAITING_RATE and probe.workers > 1:
        # Several threads kept the process busy, each item slowed by the others: taking
        # turns on the GIL, k threads stretch each item about k / rate times.
        wall = max(cpu, wall * min(1.0, rate) / probe.workers)
    picklable, ship_caller, ship_worker = _ship_costs(shippable, probe.example)
    # Thread speed-up: the CPU rate several threads reached over what one thread reached,
    # both measured in this call, so a busy machine slows both alike.
    speedup = None
    if probe.workers > 1 and single is not None and single >= WAITING_RATE and rate is not None:
        speedup = rate / single
    return _cost.Measurements(
        wall=max(wall, 1e-9),
        cpu=min(cpu, wall),
        samples=len(probe.samples),
        thread_speedup=speedup,
        speedup_threads=probe.workers if speedup is not None else 0,
        ship_caller=ship_caller,
        ship_worker=ship_worker,
        picklable=picklable,
    )


def _ship_costs(
    shippable: Callable[..., Any], example: Optional[Tuple[Any, Any]]
) -> Tuple[bool, float, float]:
    """Whether the function and an example item/result pickle, and what that costs."""
    try:
        dumps(shippable)
        if example is None:
            return True, 0.0, 0.0
        item, result = example
        t0 = time.perf_counter()
        item_bytes = dumps(item)
        t1 = time.perf_counter()
        pickle.loads(item_bytes)
        t2 = time.perf_counter()
        result_bytes = dumps(result)
        t3 = time.perf_counter()
        pickle.loads(result_bytes)
        t4 = time.perf_counter()
    except Exception:
        return False, math.inf, math.inf
    transfer = (len(item_bytes) + len(result_bytes)) / PIPE_BYTES_PER_SECOND
    return True, (t1 - t0) + (t4 - t3) + transfer, (t2 - t1) + (t3 - t2) + transfer


def _start_processes(
    probe: Probe, config: Config, plan: Plan, m: _cost.Measurements, deadline: Optional[float]
) -> None:
    """Start the process pool; the probe keeps working meanwhile unless that would slow it.

    Starting workers takes many short steps in this process, each needing the GIL. A
    probe thread computing in Python holds the GIL for up to the switch interval (5 ms)
    at a time, which was measured to stretch a 60 ms start to a second; so GIL-bound work
    pauses while the pool starts, and waiting or GIL-free work goes on.
    """
    if _overheads.process_warm(config):
        return
    if m.cpu_fraction >= WAITING_RATE and not m.gil_free:
        probe.stop()
    else:
        probe.limit = max(probe.limit, probe.read + 1_000_000)
    ready = threading.Event()
    error: List[BaseException] = []

    def warm() -> None:
        try:
            _overheads.warm_process_pool(config, plan.workers)
        except BaseException as exc:  # reported by the call that runs on the pool
            error.append(exc)
        finally:
            ready.set()

    threading.Thread(target=warm, name="autopar-warm", daemon=True).start()
    while not ready.wait(TICK) and not probe.finished:
        if deadline is not None and time.monotonic() > deadline:
            raise AutoparTimeoutError(f"the call did not finish within timeout={config.timeout:g}s")


def _merge(
    probe: Probe, boundary: int, rest: Optional[Iterator[List[Any]]], ordered: bool
) -> Iterator[List[Any]]:
    """The probe's results (indices below ``boundary``) then the rest, as chunks."""
    try:
        if probe.input_error is not None:
            probe.drain()
            raise probe.input_error
        if not ordered:
            while (ready := probe.take_any()) is not None:
                yield ready
            if rest is not None:
                yield from rest
            return
        first: List[List[Any]] = []
        error: Optional[BaseException] = None
        if rest is not None:
            # Start the rest now, so that it runs while the probe's last items finish.
            try:
                first.append(next(rest))
            except StopIteration:
                rest = None
            except BaseException as exc:
                error = exc
        yield [probe.take_result(index) for index in range(boundary)]
        probe.drain()
        if error is not None:
            raise error
        yield from first
        if rest is not None:
            yield from rest
    finally:
        probe.stop()
        if rest is not None:
            rest.close()  # type: ignore[attr-defined]
