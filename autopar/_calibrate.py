"""Calibration: watch a running :class:`~autopar._probe.Probe`, grow it, and decide when
the costs are known; then turn what it saw into :class:`~autopar._cost.Measurements`.

The tick that does this runs every millisecond or so, in the caller *or* in a probe
worker right after an item (whichever comes first): probe threads computing in Python
hold the GIL, and a caller waiting for it was measured to miss ticks for 100 ms and more
on a busy machine. When a tick finds the costs known, it pauses the probe (no new items),
which frees the GIL for the caller to decide.
"""

from __future__ import annotations

import math
import pickle
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _cost
from ._config import Config, cpu_count
from ._probe import Probe, schedstat
from ._worker import dumps
from .errors import AutoparTimeoutError

TICK = 0.001  # how often calibration looks at the probe
# Items under a quarter of this are too cheap for a thread test to matter.
SLOW_ITEM = 0.002
# Items this cheap cost less than one hand-off to a thread (30-50 us measured here), so
# no pool can pay: after this many of them (and none running long), stop measuring.
CHEAP_ITEM = 50e-6
CHEAP_SAMPLES = 64
WAITING_RATE = 0.5  # CPU asked per wall-second under which work counts as waiting
PIPE_BYTES_PER_SECOND = 1e9  # copying pickled bytes through a pipe, both ends together


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
        self.cpu_rate: Optional[float] = None  # CPU the process really used, per second

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
        """The rate since this watch started (a steady worker count), once ``min_window``
        has passed: the whole phase, not the last tick, so one noisy tick weighs little."""
        now = time.perf_counter()
        if now - self.at < min_window:
            return self.rate
        cpu, demand = self._read()
        base_cpu, base_demand = self.base
        if demand is not None and base_demand is not None:
            # A thread born in the phase counts from zero: all it used is recent.
            used = sum(v - base_demand.get(native, 0.0) for native, v in demand.items())
            self.by_demand = True
        else:
            used, self.by_demand = cpu - base_cpu, False
        self.rate = used / (now - self.at)
        self.cpu_rate = (cpu - base_cpu) / (now - self.at)
        return self.rate

    def age(self) -> float:
        return time.perf_counter() - self.at


class Calibration:
    """Grows the probe while items wait, runs the thread test, and says when to stop."""

    def __init__(self, probe: Probe, config: Config, deadline: Optional[float]) -> None:
        self.probe, self.config, self.deadline = probe, config, deadline
        self.t0 = time.perf_counter()
        self.cores = cpu_count()
        #: Rate of CPU asked per wall-second, last seen with each worker count.
        self.rates: Dict[int, float] = {}
        #: CPU really used per wall-second (what the GIL caps at 1), per worker count.
        self.cpu_rates: Dict[int, float] = {}
        self.done = False
        # Made once a worker thread runs: a window that began before would count the
        # thread's start-up as idle time, and call computing work "waiting".
        self._watch: Optional[_Watch] = None
        # _lock lets one tick run at a time (caller or worker); the others skip it.
        self._lock = threading.Lock()
        self._last_tick = 0.0

    def run(self) -> None:
        """Probe until the costs are known, the budget is spent, or the input ends."""
        self.probe.on_item = self.maybe_tick
        self.probe.grow(1)
        try:
            while not self.done and not self.probe.finished:
                self.probe.wait(TICK)
                if self.deadline is not None and time.monotonic() > self.deadline:
                    raise AutoparTimeoutError(
                        f"the call did not finish within timeout={self.config.timeout:g}s"
                    )
                # Workers tick after each item; the caller only fills in while no item
                # finishes (slow items): a caller starved of the GIL while holding the
                # tick would otherwise block every worker's tick (seen: 70 ms without).
                quiet = time.perf_counter() - max(self._last_tick, self.probe.last_done)
                if quiet > max(5 * TICK, 4 * self.probe.mean_wall()):
                    self.maybe_tick()
        finally:
            self.probe.on_item = None

    def maybe_tick(self) -> None:
        now = time.perf_counter()
        if self.done or now - self._last_tick < TICK or not self._lock.acquire(blocking=False):
            return
        try:
            self._last_tick = now
            if not self.done and self._tick(now):
                self.done = True
                self.probe.pause()
        finally:
            self._lock.release()

    def _tick(self, now: float) -> bool:
        """One look at the probe: grow it, or return True once the costs are known."""
        probe, watch = self.probe, self._watch
        if probe.cheap(CHEAP_ITEM, CHEAP_SAMPLES):
            return True
        if watch is None:
            if probe.thread_ids():
                self._watch = _Watch(probe)
            return False
        rate = watch.update(2 * TICK)
        costs = item_costs(probe, rate)
        if rate is None or not costs:
            return now - self.t0 >= self.config.calibration_ms / 1e3
        self.record(probe.workers, rate, watch.cpu_rate or 0.0)
        mean = sum(w for w, _ in costs) / len(costs)
        # Waiting: items' threads use little CPU *and* the process as a whole asks little.
        # Threads taking turns on the GIL also show little CPU each, but keep the process
        # busy: they must not be mistaken for waiting and multiplied.
        idle_items = sum(c for _, c in costs) < WAITING_RATE * sum(w for w, _ in costs)
        waiting = rate < WAITING_RATE and idle_items
        workers = probe.workers
        known = False
        if waiting:
            # Quadruple the threads: 1, 4, 16, 64, 128 reaches the cap in four looks.
            probe.grow(min(self.config.max_threads, 4 * workers))
        elif rate > 0.75 * workers and workers < self.cores and mean > SLOW_ITEM / 4:
            # Busy computing and every thread so far adds CPU: do threads overlap (GIL)?
            probe.grow(workers + 1)
        else:
            # The thread test needs a few items' worth of time at two threads.
            tested = workers >= min(2, self.cores) and watch.age() >= max(3 * mean, 4 * TICK)
            test_done = tested or self.cores == 1 or mean <= SLOW_ITEM / 4
            known = len(probe.samples) >= 3 and test_done and now - self.t0 >= 3 * mean
        if workers != probe.workers:
            self._watch = _Watch(probe)
        return known or now - self.t0 >= self.config.calibration_ms / 1e3

    def measurements(self, shippable: Callable[..., Any]) -> _cost.Measurements:
        return measure(self.probe, shippable, self.rates, self.cpu_rates)

    def record(self, workers: int, rate: float, cpu_rate: float) -> None:
        self.rates[workers], self.cpu_rates[workers] = rate, cpu_rate


def item_costs(probe: Probe, rate: Optional[float]) -> List[Tuple[float, float]]:
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


def measure(
    probe: Probe,
    shippable: Callable[..., Any],
    rates: Dict[int, float],
    cpu_rates: Dict[int, float],
) -> _cost.Measurements:
    """Per-item costs from what the probe saw, corrected for contention and load."""
    # The most threads measured (the probe may be winding down by now).
    threads = max(rates, default=probe.workers)
    rate = rates.get(threads)
    costs = item_costs(probe, rate) or [(0.0, 0.0)]  # the first item raised: no figures
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
    if not clean and rate is not None and rate >= WAITING_RATE and threads > 1:
        # Several threads kept the process busy, each item slowed by the others: taking
        # turns on the GIL, k threads stretch each item about k / rate times.
        wall = max(cpu, wall * min(1.0, rate) / threads)
    picklable, ship_caller, ship_worker = _ship_costs(shippable, probe.example)
    # Thread speed-up: the CPU several threads asked for over what one thread asked for,
    # both in this call, so a busy machine slows both alike; and no more than the CPU
    # they really got grew, which the GIL caps (threads trading the GIL queue for a core
    # together for a moment, which alone read up to 1.5 here).
    speedup = None
    if threads > 1 and single is not None and single >= WAITING_RATE and rate is not None:
        speedup = rate / single
        used_one, used_many = cpu_rates.get(1, 0.0), cpu_rates.get(threads, 0.0)
        if used_one > 0:
            speedup = min(speedup, used_many / used_one)
    return _cost.Measurements(
        wall=max(wall, 1e-9),
        cpu=min(cpu, wall),
        samples=len(probe.samples),
        thread_speedup=speedup,
        speedup_threads=threads if speedup is not None else 0,
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
