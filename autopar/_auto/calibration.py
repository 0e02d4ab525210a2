"""Calibration: watch a running :class:`~autopar._auto.probe.Probe`, grow it, and decide
when the costs are known; then turn what it saw into
:class:`~autopar._auto.cost_model.Measurements`.

Phases, each judged over a window of the process's CPU time that starts with the work
(a window that began before a thread started would count its start as idle):

    one thread   cheap items (>= 64 under 50 us)    -> known: nothing can beat serial
                 waiting (the process and the items' own CPU clocks both under half busy,
                 and the recent items' CPU share times the threads too)
                                                    -> quadruple the threads while it lasts
                 computing, items over 0.5 ms       -> two threads for the same time: the
                                                       CPU rate they reach over one thread's
                                                       is the thread speed-up (1 = the GIL)
                 computing, cheaper                 -> known
    budget (AUTOPAR_CALIBRATION_MS) spent, or input exhausted -> stop

Without a timeout, the calling thread is the first worker (run_beside_caller): cheap items
then cost no hand-off to a thread at all, and a helper thread does the watching above.
With a timeout, the caller only watches, so that it can raise the timeout on time.
"""

from __future__ import annotations

import math
import mmap
import pickle
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._config import Config, cpu_count
from .._execute import per_worker, shared_buffers
from .._execute.worker import dump_parts, dumps
from ..errors import AutoparTimeoutError
from . import cost_model, stolen_time
from .cost_model import GIL_FREE_RATE
from .pool_costs import NO_THREAD_HELPS
from .probe import FEW, Probe, without_the_costliest

CHECK_INTERVAL = 0.001  # seconds between calibration's checks of the probe
# No check for this long: the caller blocks for the watcher's check (see _caller_check).
STALE_CHECK = 5 * CHECK_INTERVAL
# Items from this cost run the thread test: chunked, items of a tenth of a millisecond
# that release the GIL (hashing, compression, NumPy on small arrays) gain from a second
# thread as much as long ones, and the test costs one 4 ms window on two threads of the
# call's own items. Cheaper ones end the probe first (CHEAP_ITEM).
THREAD_TEST_ITEM = 50e-6
# Items this cheap cost less than one hand-off to a thread ("thread dispatch" in
# `python -m autopar info`), so no pool can pay for them: after this many of them (and
# none running long), stop measuring. The "square" and "tiny" rows of
# benchmarks/RESULTS.md show such calls staying serial.
CHEAP_ITEM = 50e-6
CHEAP_SAMPLES = 64
# The thread test runs one thread, then two, each for 3 mean items (two threads for 3
# more when their first reading says they take turns: see Calibration._check_probe); the
# budget stretches to this many for it (3 more then), up to this share of the items the
# probe may run.
THREAD_TEST_ITEMS = 8
THREAD_TEST_SHARE = 0.25
WAITING_RATE = 0.5  # CPU per wall-second under which work counts as waiting
COMPUTED = 0.8  # CPU share of wall at which finished items count as computing throughout
BUSY_ITEMS = 0.75  # share of the process's CPU its items must account for to be "busy"
RECENT = 8  # finished items whose CPU share predicts a thread count's rate (_due_rate)
MIN_WINDOW = 0.004  # shortest window a CPU rate is judged on
PIPE_BYTES_PER_SECOND = 1e9  # copying pickled bytes through a pipe, both ends together
BIG_BUFFER = 64 * 1024  # flat buffers from this size are priced by size (_pickle_cost)


class _Window:
    """CPU seconds per wall second of the probe's threads since this window opened, for a
    phase of ``workers`` workers.

    Only the probe's own threads count: other threads of the program (numpy's BLAS pool
    spins about an eighth of a core for a while after import) would raise the one-thread
    rate and hide a speed-up (tests/test_calibration.py::
    test_the_thread_test_counts_only_the_probes_threads). Where threads' clocks cannot be
    read, the process's CPU clock stands in.
    """

    def __init__(self, workers: int, probe: Probe) -> None:
        self.workers = workers
        self._probe = probe
        self.at = time.perf_counter()
        self._open = {c: _read(c) for c in probe.cpu_clocks()}
        self._process = time.process_time()

    def age(self) -> float:
        return time.perf_counter() - self.at

    def rate(self) -> float:
        joined = self._probe.cpu_clocks()
        if not joined:
            return (time.process_time() - self._process) / max(self.age(), 1e-9)
        used = 0.0
        for clock, at_join in joined.items():
            now = _read(clock)
            if now is not None:
                start = self._open.get(clock)
                used += now - (at_join if start is None else start)
        return used / max(self.age(), 1e-9)


def _read(clock: int) -> Optional[float]:
    try:
        return time.clock_gettime(clock)
    except OSError:  # (the thread has ended: its last reading is lost)
        return None


class Calibration:
    """Grows the probe while items wait, runs the thread test, and says when to stop."""

    def __init__(self, probe: Probe, config: Config, deadline: Optional[float]) -> None:
        self.probe, self.config, self.deadline = probe, config, deadline
        self.t0 = time.perf_counter()
        self.cores = cpu_count()
        stolen_time.refresh()
        #: CPU per wall-second seen with each worker count (its whole phase).
        self.rates: Dict[int, float] = {}
        self._window: Optional[_Window] = None  # opens once the first item runs
        self.budget = self.config.calibration_ms / 1e3
        # _check_lock makes each check one thread's (the watcher's, or the caller's between
        # its items); it guards known, _last_check, rates and _window.
        self._check_lock = threading.Lock()
        self.known = False  # the costs are known or the budget is spent
        self.known_after: Optional[float] = None  # seconds from the start until then
        self._last_check = 0.0
        self._cheap_checked = False  # the caller's one check out of turn (_caller_check)
        # The mean item while the thread test is under way (0: it is not): the budget
        # stretches for it (see _budget_now).
        self._testing_threads = 0.0
        # The first reading of two threads, once a second one is taken (see _check_probe).
        self._first_reading: Optional[float] = None

    def run(self) -> None:
        """Probe until the costs are known, the budget is spent, or the input ends."""
        if not self.known:  # (the caller may have found them before this thread started)
            self.probe.grow(1)
        while not self.known and not self.probe.finished:
            self.probe.wait(CHECK_INTERVAL)
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise AutoparTimeoutError(
                    f"the call did not finish within timeout={self.config.timeout:g}s"
                )
            if self._check():
                break
        self.probe.pause()

    def _check(self) -> bool:
        with self._check_lock:
            return self._check_held()

    def _check_held(self) -> bool:
        # Called with _check_lock held.
        if not self.known:
            spent = time.perf_counter() - self.t0
            self.known = self._check_probe() or spent >= self._budget_now()
            if self.known:
                self.known_after = time.perf_counter() - self.t0
        self._last_check = time.perf_counter()
        return self.known

    def _caller_check(self) -> bool:
        """A check by the caller between its own items, at most one per CHECK_INTERVAL:
        True to stop.

        Computing items hold the GIL, so a watcher thread gets to check only every few
        milliseconds (the interpreter's switch interval); the caller is right there.
        """
        if time.perf_counter() - self._last_check < CHECK_INTERVAL:
            # Once, out of turn: as soon as the cheap-items rule has its samples, so that
            # cheap input leaves the probe (which costs several times plain map per item)
            # after CHEAP_SAMPLES items, not at the next check
            # (tests/test_auto.py::test_cheap_items_stop_the_probe_once_enough_are_measured).
            if self._cheap_checked or len(self.probe.samples) < CHEAP_SAMPLES:
                return False
            self._cheap_checked = True
        if not self._check_lock.acquire(blocking=False):  # the watcher is checking ...
            # ... or it holds the lock while it waits for the GIL, which computing threads
            # can keep from it for the whole budget, so the thread test would never run.
            # Once no check has happened for STALE_CHECK, the caller blocks on the lock,
            # which hands the watcher the GIL
            # (tests/test_auto.py::test_a_cold_programs_first_call_runs_the_thread_test).
            stale = time.perf_counter() - self._last_check >= STALE_CHECK
            if not (stale and self._check_lock.acquire(timeout=10 * STALE_CHECK)):
                return False
        try:
            known = self._check_held()
        finally:
            self._check_lock.release()
        if known:
            self.probe.wake()  # the watcher need not wait out its interval
        return known

    def run_beside_caller(self) -> None:
        """Calibrate on a helper thread while the calling thread runs items itself.

        The helper may not get the GIL before the caller is done with cheap input (the
        caller holds it while it computes); then it is not waited for. If the caller is
        still inside an item when the costs are known, the probe's threads go on through
        the input meanwhile, so that one slow item in the caller's hands holds up nothing.
        """
        probe = self.probe
        lock = threading.Lock()
        started, skipped = [False], [False]  # guarded by lock
        done = threading.Event()
        errors: List[BaseException] = []

        def control() -> None:
            with lock:
                if skipped[0]:
                    return
                started[0] = True
            try:
                self.run()
                probe.release_caller()
                if probe.caller_busy:
                    probe.limit = max(probe.limit, probe.read + 1_000_000)
                    probe.resume()
            except BaseException as exc:  # raised in the caller's thread below
                errors.append(exc)
                probe.stop()
            finally:
                done.set()

        probe.add_caller()  # first: the helper must see the caller as worker 1
        probe.submit_helper(control)
        probe.work_here(self._caller_check)
        with lock:
            skipped[0] = not started[0]
        if not skipped[0]:
            done.wait()
        if errors:
            raise errors[0]
        probe.pause()

    def _check_probe(self) -> bool:
        """One check of the probe: grow it, or return True once the costs are known."""
        probe = self.probe
        if probe.cheap(CHEAP_ITEM, CHEAP_SAMPLES):
            return True
        if self._window is None:
            if probe.read:
                self._window = _Window(probe.workers, probe)
            return False
        window = self._window
        running = probe.running_costs()  # (read once per check: a clock read per thread)
        costs = item_costs(probe, None, running, self.rates)
        if window.age() < MIN_WINDOW or not costs:
            return False
        rate, workers = window.rate(), probe.workers
        if workers == window.workers:  # (not while the probe winds down at the input's end)
            self.rates[workers] = rate
        trimmed = without_the_costliest(costs)  # (probe.FEW)
        mean = sum(w for w, _ in trimmed) / len(trimmed)
        idle_items = _idle(trimmed)
        done = [(w, c) for w, c, _, _ in list(probe.samples)]
        if sum(w for w, _ in done) >= 0.5 * sum(w for w, _ in costs):
            # Finished items carry most of the time seen: they must be idle too. (Their
            # readings leave out the caller's time queued for a core; a running item's
            # still holds a wait going on, so on a busy machine it alone can make computing
            # seem like waiting: the "loaded" rows of benchmarks/STABILITY.md.)
            idle_items = idle_items and _idle(without_the_costliest(done))
        # (Items cheaper than a thread hand-off do not wait in any way threads could
        # overlap: their CPU clocks read near zero from timer resolution alone.)
        idle_items = idle_items and mean >= NO_THREAD_HELPS
        waiting = (
            idle_items and max(rate, _due_rate(done[-RECENT:], running, workers)) < WAITING_RATE
        )
        if waiting and probe.never_blocked(max(mean, MIN_WINDOW)):
            # A long item's thread has not blocked since it took the item: it computes,
            # and only its CPU clock lags (the host took the core, or another task did).
            # On 2 vCPUs whose host took half the time, sha256 of 48 MiB read as waiting
            # and grew the probe to 4 threads, and the thread test never ran.
            waiting = False
        if waiting:
            # Waiting: quadruple the threads (1, 4, 16, 64, 128: the cap in four checks).
            if workers < self.config.max_threads:
                self._grow(min(self.config.max_threads, 4 * workers))
            return False
        testable = self.cores > 1 and self.config.max_threads > 1
        if workers == 1 and testable and mean >= THREAD_TEST_ITEM:
            # Computing: run two threads as long as one ran, to see if they overlap.
            # (Not where threads are capped at one: no plan could use the answer.)
            self._testing_threads = mean
            if window.age() >= max(3 * mean, MIN_WINDOW) and len(probe.samples) >= 2:
                self._grow(2)
            return False
        tested = window.age() >= max(3 * mean, MIN_WINDOW)
        one = self.rates.get(1)
        if (
            tested
            and workers == 2
            and one is not None
            and one >= WAITING_RATE
            and self._first_reading is None
            and rate < GIL_FREE_RATE * one
        ):
            # Two threads read as taking turns: read again, over a window that opens with
            # both running. A window can open before the second thread has started or
            # taken an item, and then GIL-free items (hashing, 1.2x read for 2x) pass for
            # GIL-bound ones for the whole program; noise only lowers such a reading, so
            # the higher of the two stands (see measurements).
            self._first_reading = rate
            self._window = _Window(2, probe)
            tested = False
        self._testing_threads = mean if workers == 2 and 1 in self.rates and not tested else 0.0
        return tested

    def _budget_now(self) -> float:
        """The measuring budget: AUTOPAR_CALIBRATION_MS, stretched while the thread test
        runs on items too long to finish it within that (a reading of two threads beside
        one needs several items' time), up to THREAD_TEST_SHARE of the work the probe may
        run. The items measured are the call's own, so the stretch costs only running them
        on one or two threads meanwhile; without it, threads would be priced for long
        GIL-free items (compression, hashing) as if they held the GIL. A reading under
        way gets its whole window within that share: where the host or a busy core slows
        the items, the readings before it took longer than their items' count says, and a
        re-read cut short leaves its low first reading standing."""
        mean = self._testing_threads
        if mean <= 0:
            return self.budget
        most = THREAD_TEST_SHARE * self.probe.limit * mean
        items = THREAD_TEST_ITEMS + (3 if self._first_reading is not None else 0)
        wanted = items * mean
        if self._window is not None:
            ends = self._window.at - self.t0 + max(3 * mean, MIN_WINDOW) + CHECK_INTERVAL
            wanted = max(wanted, ends)
        return max(self.budget, min(wanted, most))

    def _grow(self, workers: int) -> None:
        self.probe.grow(workers)
        self._window = _Window(workers, self.probe)

    def measurements(self) -> cost_model.Measurements:
        return measure(self.probe, self._rates())

    def without_the_costliest_few(self) -> Optional[Tuple[float, float]]:
        """Per-item wall and CPU seconds read without the costliest few samples (FEW);
        None where none is left out."""
        return without_the_costliest_few(self.probe, self._rates())

    def _rates(self) -> Dict[int, float]:
        rates = dict(self.rates)
        if self._first_reading is not None and 2 in rates:
            rates[2] = max(rates[2], self._first_reading)
        return rates


def _idle(costs: List[Tuple[float, float]]) -> bool:
    """Items whose own clocks were mostly idle: under WAITING_RATE busy, all together."""
    return sum(c for _, c in costs) < WAITING_RATE * sum(w for w, _ in costs)


def _due_rate(
    recent: List[Tuple[float, float]], running: List[Tuple[float, Optional[float]]], workers: int
) -> float:
    """The CPU rate ``workers`` threads reach once each is past its item's wait, if the
    running items are like the ``recent`` finished ones (none has run twice as long as
    they took: the watcher's check may come late, the GIL held elsewhere); else 0.

    A window opened as the threads started can end before any of them computes, so its
    rate alone takes part-waiting items for waiting ones and grows the threads until
    their GIL waits stretch every item (the "mixed" workload in benchmarks/workloads.py;
    tests/test_calibration.py::test_threads_stop_growing_once_recent_items_say_they_will_be_busy).
    """
    wall = sum(w for w, _ in recent)
    if wall <= 0 or any(w >= 2 * wall / len(recent) for w, _ in running):
        return 0.0  # (running items outlast finished ones: those say nothing of them)
    return workers * sum(c for _, c in recent) / wall


def item_costs(
    probe: Probe,
    rate: Optional[float],
    running: Optional[List[Tuple[float, Optional[float]]]] = None,
    rates: Optional[Dict[int, float]] = None,
) -> List[Tuple[float, float]]:
    """(wall, CPU) of finished items, and of running ones so far (``running``: the
    probe's running_costs() if already read).

    A running item's CPU is read from its thread's clock where the platform allows;
    elsewhere the process's CPU rate stands in. Counting running items matters: a cheap
    first item must not speak for slow ones still running.
    """
    samples = list(probe.samples)
    # An item timed beside other busy threads may have waited for the GIL: its wall time
    # overstates its cost. Such a sample counts where no thread can have held the GIL from
    # it for long: the rest of the process used under WAITING_RATE of a core while it ran
    # (its own reading), or the probe's threads did in its phase (``rates``: CPU rate by
    # worker count; for an item that ran across a change of phase (0), in every phase).
    # The rest are left out while enough clean ones (one worker) remain. Each reading
    # alone left out waits that ran beside a burst of near-free items, and learned a
    # costly tail as free, or as a fraction of its cost (tests/test_spread.py); leaving
    # out every multi-thread sample would keep only the items read first.
    rates = rates or {}
    idle_throughout = bool(rates) and max(rates.values()) < WAITING_RATE
    clean = [
        (w, c)
        for w, c, phase, others in samples
        if phase == 1
        or others < WAITING_RATE
        or (phase == 0 and idle_throughout)
        or (phase > 1 and rates.get(phase, 1.0) < WAITING_RATE)
    ]
    costs = clean if len(clean) >= 3 else [(w, c) for w, c, _, _ in samples]
    busy = rate is not None and rate >= WAITING_RATE
    threads = max(rates, default=1)
    # Where the finished items computed throughout and several threads kept the process
    # busy, a running item's wall beyond its own CPU is time it waited for the GIL, not
    # its cost: a starved thread read 31 ms of wall and 0.17 ms of CPU beside items that
    # all computed in 1.5 ms (read as waiting, the plan went to threads), and another
    # 10.9 ms and 0.61 ms beside 0.6 ms items (the mean doubled, and a pool started beside
    # a call it could not help). Its cost so far is then its CPU
    # (tests/test_calibration.py::test_a_running_item_starved_of_the_gil_is_not_read_as_waiting).
    # Items that wait in part keep their own reading.
    starved = (
        busy
        and threads > 1
        and len(costs) >= 3
        and sum(c for _, c in costs) >= COMPUTED * sum(w for w, _ in costs)
    )
    # A running item speaks for itself once it has outlasted the mean finished item: it
    # is a costlier one. Before that, its reading so far is only the start of an item
    # like the others (the wait of an item that waits, then computes) and would bend
    # their CPU share.
    typical = sum(w for w, _ in costs) / len(costs) if costs else 0.0
    for wall, cpu in probe.running_costs() if running is None else running:
        if wall < typical:
            continue
        if cpu is None:
            cpu = wall if busy else 0.0
        elif starved:
            wall = cpu
        costs.append((wall, cpu))
    return costs


def measure(probe: Probe, rates: Dict[int, float]) -> cost_model.Measurements:
    """Per-item costs from what the probe saw, corrected for contention and load."""
    threads, rate = _most_threads(probe, rates)
    # (No costs: the first item raised, and there are no figures.)
    costs = item_costs(probe, rate, rates=rates) or [(0.0, 0.0)]
    wall, cpu = _per_item(probe, rates, costs)
    picklable, ship_caller, ship_worker = _item_costs(probe.example)
    handles = per_worker.used_since(probe.handles_before)
    # The thread speed-up: the CPU rate two threads reached over one thread's (the GIL
    # holds it near 1). Per-item CPU clocks cannot tell: a thread waiting for the GIL
    # often waits between items, outside any item's clock. One thread's rate is at least
    # its items' own CPU share: a lower reading is time a busy machine held it off a core
    # (an item's solo reading leaves that out), and read as one thread's pace it made
    # two threads taking turns on the GIL look 1.2x as fast (pure Python, 2 busy cores).
    speedup = None
    one = rates.get(1)
    if threads > 1 and rate is not None and one is not None and one >= WAITING_RATE:
        speedup = rate / max(one, min(1.0, cpu / max(wall, 1e-9)))
    return cost_model.Measurements(
        wall=max(wall, 1e-9),
        cpu=min(cpu, wall),
        samples=len(probe.samples),
        thread_speedup=speedup,
        speedup_threads=threads if speedup is not None else 0,
        ship_caller=ship_caller,
        ship_worker=ship_worker,
        picklable=picklable,
        function_priced=False,  # (see priced)
        setup_process=sum(h.build_seconds or 0.0 for h in handles),
        setup_thread=sum(h.build_seconds or 0.0 for h in handles if not h.thread_safe),
    )


def without_the_costliest_few(
    probe: Probe, rates: Dict[int, float]
) -> Optional[Tuple[float, float]]:
    """The per-item wall and CPU seconds that measure() reads, read without the probe's
    costliest few samples (probe.FEW); None where none is left out."""
    costs = item_costs(probe, _most_threads(probe, rates)[1], rates=rates)
    if len(costs) < FEW:
        return None
    return _per_item(probe, rates, without_the_costliest(costs))


def _most_threads(probe: Probe, rates: Dict[int, float]) -> Tuple[int, Optional[float]]:
    """The most threads measured (the probe may be winding down by now) and their rate."""
    threads = max(rates, default=probe.workers)
    return threads, rates.get(threads)


def _per_item(
    probe: Probe, rates: Dict[int, float], costs: List[Tuple[float, float]]
) -> Tuple[float, float]:
    """The mean wall and CPU seconds of ``costs``, corrected for contention and load."""
    threads, rate = _most_threads(probe, rates)
    wall = sum(w for w, _ in costs) / len(costs)
    cpu = sum(c for _, c in costs) / len(costs)
    single = rates.get(1)
    # (Only for items whose own CPU clock shows real computing: the first window also
    # holds thread start-up, which would make sleeping items look busy.)
    if single is not None and single >= WAITING_RATE and cpu >= 0.2 * wall:
        # One thread asked for this share of a core: on a busy machine its items wait for
        # a core, which their own CPU clock does not show.
        cpu = max(cpu, wall * min(1.0, single))
    clean = any(phase == 1 for _, _, phase, _ in probe.samples)
    # The CPU rate the items' own clocks account for, had `threads` threads run them
    # back to back.
    items_rate = threads * cpu / max(wall, 1e-9)
    if (
        not clean
        and rate is not None
        and rate >= WAITING_RATE
        and threads > 1
        and items_rate >= BUSY_ITEMS * rate
    ):
        # Several threads kept the process busy, each item slowed by the others: taking
        # turns on the GIL, k threads stretch each item about k / rate times. (Only when
        # the items themselves made it busy: many threads waking from short sleeps keep a
        # process busy with their own hand-offs while each item still takes its full
        # sleep: tests/test_auto.py::
        # test_many_waiting_threads_busy_with_hand_offs_do_not_make_items_look_cheap.)
        wall = max(cpu, wall * min(1.0, rate) / threads)
    if wall < NO_THREAD_HELPS:
        # Near-free items: their CPU clock reads are timer resolution, not a share of
        # waiting. Counted as computing, so that no thread count is planned on noise.
        cpu = wall
    return wall, cpu


def _item_costs(example: Optional[Tuple[Any, Any]]) -> Tuple[bool, float, float]:
    """Whether an example item and its result pickle, and what shipping one costs: in
    the caller and in a worker, per item (0 with no example)."""
    if example is None:
        return True, 0.0, 0.0
    try:
        item_dump, item_load, item_size = _pickle_cost(example[0])
        result_dump, result_load, result_size = _pickle_cost(example[1])
    except Exception:
        return False, math.inf, math.inf
    transfer = (item_size + result_size) / PIPE_BYTES_PER_SECOND
    return True, item_dump + result_load + transfer, item_load + result_dump + transfer


def priced(
    m: cost_model.Measurements,
    to_ship: Callable[..., Any],
    overheads: cost_model.Overheads,
    n: int,
) -> cost_model.Measurements:
    """``m`` with the function's shipping measured, if processes (or a cluster) could win
    ``n`` items with the function free to ship and a warm pool allowed; else ``m``.

    Pickling the function is the one step of a decision whose cost does not scale with
    the items: for a function defined in the main script it loads cloudpickle (about
    3 ms, more than a whole call of cheap items). Processes priced with the function free
    are a lower bound on their cost, so where they lose even so, the function's cost
    cannot change the plan.
    """
    if m.function_priced:
        return m
    warm = overheads._replace(process_start=0.0, processes=True)
    if cost_model.decide(m, warm, n).kind not in ("process", "dask"):
        return m
    picklable, seconds, size, copied = _function_costs(to_ship)
    return m._replace(
        picklable=m.picklable and picklable,
        ship_function=seconds,
        function_bytes=size,
        load_function=copied * _fresh_copy_rate() if copied >= BIG_BUFFER else 0.0,
        function_priced=True,
    )


def _function_costs(to_ship: Callable[..., Any]) -> Tuple[bool, float, int, int]:
    """Whether the function pickles, the seconds shipping it once costs, its size, and
    how much of it a new process worker copies in (the rest it maps: see below)."""
    keeper = shared_buffers.Keeper(shared_buffers.MIN_SHARED)  # (as the process backend)
    try:
        t0 = time.perf_counter()
        copied = sum(len(part) for part in dump_parts(to_ship, keeper))
        seconds = time.perf_counter() - t0
    except Exception:
        return False, 0.0, 0, 0
    size = copied + sum(buffer.nbytes for buffer in keeper.kept)
    if size >= BIG_BUFFER:
        # The pieces hold a large bytes value uncopied (worker.dump_parts), and large
        # out-of-band buffers (arrays) apart: each call compares them with the copy in
        # shared memory, or writes them there; a new worker copies the pieces out of it
        # and maps the buffers.
        seconds += size * _buffer_rates()[0]
    return True, seconds, size, copied


def _pickle_cost(value: Any) -> Tuple[float, float, int]:
    """Seconds to pickle ``value`` and to unpickle it, and its pickled size.

    A large flat buffer (bytes, bytearray, a numpy array) is priced by its size, at a rate
    measured once per program: pickling such an item just to price it can cost more than
    a cheap function's whole call (the "len_1mib" workload in benchmarks/workloads.py;
    tests/test_calibration.py::test_large_flat_buffers_are_priced_by_size_without_pickling).
    One that travels through shared memory is priced at the copy rate, its pipe size 0,
    once a process call has measured that path: measuring it here would add tens of
    milliseconds to a first call that processes may never serve (len_1mib's first call
    read +47 ms over map), so until then such a buffer is priced as the pipe's, the dearer
    path, and processes win only by the larger margin.
    """
    try:
        size = memoryview(value).nbytes
    except Exception:  # not a buffer, or one memoryview cannot export
        size = 0
    shared = size >= BIG_BUFFER and shared_buffers.known()
    if shared and shared_buffers.travels_shared(value, size):
        # Written into a segment on one side, mapped and read on the other: no pickle,
        # no pipe. The measured trip is charged to both sides, as pickling is.
        trip = size * shared_buffers.copy_seconds_per_byte()
        return trip, trip, 0
    if size >= BIG_BUFFER:
        dump_rate, load_rate = _buffer_rates()
        return size * dump_rate, size * load_rate, size
    return _round_trip(value)


def _round_trip(value: Any) -> Tuple[float, float, int]:
    """Pickle ``value`` and unpickle it: the seconds each took, and the pickled size."""
    t0 = time.perf_counter()
    data = dumps(value)
    t1 = time.perf_counter()
    pickle.loads(data)
    return t1 - t0, time.perf_counter() - t1, len(data)


def _fresh_copy_rate() -> float:
    """Seconds per byte to copy into memory never touched before, as a new worker loading
    a large function does: measured once (a race only measures twice) on 1 MiB, the
    least of three. The page faults make it many times a copy in the cache
    (_buffer_rates: 54 ms against 2 ms for 50 MiB, on 2 vCPUs): priced at that, a new
    worker's load of a function carrying 50 MiB read 4 ms, and cold pools were planned
    for it on first calls that took 1.3-1.8x plain map."""
    if not _fresh:
        source = b"\x01" * FRESH_SAMPLE
        times = []
        for _ in range(3):
            # (A mapping of its own: the allocator reuses freed memory, already touched.)
            with mmap.mmap(-1, FRESH_SAMPLE) as fresh:
                t0 = time.perf_counter()
                fresh[:] = source
                times.append(time.perf_counter() - t0)
        _fresh.append(min(times) / FRESH_SAMPLE)
    return _fresh[0]


FRESH_SAMPLE = 1 << 20
_fresh: List[float] = []


# Seconds per byte to pickle and to unpickle a flat buffer; measured once (a race only
# measures twice), on 256 KiB (a copy each way, as for larger ones; 1 MiB cost a first
# call 3 ms), the least of three.
_rates: List[Tuple[float, float]] = []


def _buffer_rates() -> Tuple[float, float]:
    if not _rates:
        buffer = bytes(range(256)) * (BIG_BUFFER * 4 // 256)
        dumps_, loads_, _ = zip(*(_round_trip(buffer) for _ in range(3)))
        _rates.append((min(dumps_) / len(buffer), min(loads_) / len(buffer)))
    return _rates[0]
