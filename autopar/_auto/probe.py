"""Calibration that does real work: the first items of a call run here, timed one by one.

    controller (.calibration)              probe workers (daemon threads, and the
    ------------------------------            calling thread itself: work_here())
    grow(k): run with k workers               ------------------------------------
    wait(), check samples and running         take the next item (one at a time, under
      items (wall, and CPU from each            the lock, reading the input lazily)
      thread's own clock)                     run it; record wall, CPU (the thread's
    pause()/resume(), stop() -> the index       clock), result; nothing is thrown away
      where the rest of the input starts

Items are taken one at a time so that a slow item never holds cheap ones hostage, and
so that growing the worker count takes effect at once; only items far cheaper than
timing them are read a few at a time, into a queue that any worker takes from.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from .._execute.per_worker import setup_seconds, use_counts
from .._execute.thread_pool import cpu_clock, helpers
from .._execute.worker import Failure, mark_worker_thread
from . import stolen_time
from .queued_time import QueueClock, for_this_thread, held_off_since, switches_of, thread_usage

# Items that take less than this (the probe's own bookkeeping costs about as much) are
# run in batches that grow 4x up to MAX_BATCH, once CHEAP_BEFORE_BATCHES batches in a row
# were that cheap; a batch is timed, and sampled, as a whole. Its items wait in a shared
# read-ahead queue that every worker takes from, so none waits behind a slow one while
# another worker is free.
BATCH_ITEM = 5e-6
MAX_BATCH = 64
CHEAP_BEFORE_BATCHES = 3
HOSTAGE = 0.0005  # a batch runs items read ahead for at most this long

# wall, cpu, the phase: the worker count while the item ran, 0 if it changed meanwhile
# (phase 1 = no other worker was busy: a clean measurement), and the CPU seconds the rest
# of the process used per second of the item's own (solo) wall: what could have held it
# off the GIL.
Sample = Tuple[float, float, int, float]

# A reading that says items wait, or that a pool pays, must hold without the costliest
# one sample in this many. One item stalled in the probe (the GIL held by another thread
# of the process, the core taken by the host) reads many times its cost: 1.5 ms among
# items of 5-60 us, which alone doubled a mean over 64 samples, so that items that
# compute read as waiting (16 threads grown: 4.4x plain map) or as dear enough to start
# a process pool (3.5-3.8x). A cost that is real shows in more than one sample in this
# many, or in the call's own chunks, which re-plan the rest (autopar._auto.replan).
FEW = 20


def without_the_costliest(costs: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """``costs`` (wall, CPU) less the costliest one in FEW by wall (none under FEW)."""
    few = len(costs) // FEW
    return sorted(costs, key=lambda cost: cost[0])[:-few] if few else costs


class Probe:
    """Runs items of one call on a growing number of helper threads, measuring each."""

    def __init__(
        self, fn: Callable[..., Any], items: Iterator[Any], star: bool, limit: int
    ) -> None:
        self._fn, self._items, self._star = fn, items, star
        self.limit = limit  # the most items the probe may read
        # _cond guards every attribute below.
        self._cond = threading.Condition()
        self.read = 0  # items taken from the input (their indices are 0..read-1)
        self.exhausted = False
        self.stopped = False
        self.closed = False  # stop() was called: nothing resumes the probe any more
        self.input_error: Optional[BaseException] = None
        self.results: Dict[int, Any] = {}
        self.failure: Optional[Failure] = None
        # index -> (perf_counter, the worker thread's CPU clock or None, its reading) at
        # start, and the caller's QueueClock for an item the caller runs
        # and the thread's per-worker build time then (see autopar.per_worker)
        self.running: Dict[int, Tuple[Any, ...]] = {}
        self.samples: List[Sample] = []
        self.example: Optional[Tuple[Any, Any]] = None  # the first (item, result) seen
        self.workers = 0
        self._paused_workers = 0
        self._changes = 0  # bumps whenever the worker count grows
        self._result_waiters = 0  # callers blocked in take_results/take_any/drain
        # (index, item) read ahead for a batch and not yet started: any worker takes them
        # (a batch pops them without _cond: a deque's popleft is atomic).
        self._ready: Deque[Tuple[int, Any]] = collections.deque()
        self.caller_busy = False  # the calling thread is one of the workers (work_here)
        self._caller_released = False  # ... and takes no more items once this is set
        self._caller_queue: Optional[QueueClock] = None  # opened by add_caller()
        self._pool = helpers()
        self.handles_before = use_counts()  # to tell which per-worker values items used
        # CPU clock of each thread that has worked for this probe (the caller's too), and its
        # reading when the thread joined: the thread test reads the CPU of these threads
        # only (see cpu_seconds).
        self._clocks: Dict[int, float] = {}
        _measure_clock_cost()

    # -- worker side -------------------------------------------------------------------
    def _take(
        self, clock: Optional[int], batch: int, *, caller: bool
    ) -> Optional[Tuple[int, Any, int, bool]]:
        """The next item (index, item, workers now, whether more were read ahead with it
        into the ready queue, up to ``batch`` in all), or None to stop. ``batch`` 0 takes
        only items already read ahead.

        Items read ahead come first, whatever the state: their indices are below
        ``read``, so the call waits for their results.
        """
        with self._cond:
            if self._ready:
                index, item = self._ready.popleft()
                self._start(index, clock, caller=caller)
                return index, item, self.workers, False
            if batch == 0 or self.stopped or self.exhausted or self.failure:
                return None
            if self.read >= self.limit or (caller and self._caller_released):
                return None
            wanted = min(batch, self.limit - self.read)
            try:
                items = list(itertools.islice(self._items, wanted))
            except BaseException as exc:  # the input itself failed: the caller re-raises it
                self.input_error, self.exhausted = exc, True
                return None
            self.exhausted = len(items) < wanted
            if not items:
                return None
            index, self.read = self.read, self.read + len(items)
            self._ready.extend(zip(range(index + 1, self.read), items[1:]))
            self._start(index, clock, caller=caller)
            return index, items[0], self.workers, len(items) > 1

    def _start(self, index: int, clock: Optional[int], *, caller: bool) -> None:
        # Called with _cond held.
        cpu0 = time.clock_gettime(clock) if clock is not None else 0.0
        queue = self._caller_queue if caller else None
        thread = threading.get_ident()
        usage = thread_usage()
        blocked = None if usage is None else (threading.get_native_id(), usage.ru_nvcsw)
        self.running[index] = (
            time.perf_counter(),
            clock,
            cpu0,
            queue,
            thread,
            setup_seconds(),
            blocked,
        )

    def _work(self, should_stop: Optional[Callable[[], bool]] = None) -> None:
        """Run items until none is left for this worker; ``should_stop`` marks the calling
        thread, and is asked after each of its items whether to stop."""
        caller = should_stop is not None
        clock = cpu_clock()
        if clock is not None:
            with self._cond:
                self._clocks.setdefault(clock, time.clock_gettime(clock))
        batch, cheap_in_a_row = 1, 0
        # The caller counts its time queued for a core (see autopar._auto.queued_time).
        queue = self._caller_queue if caller else None
        try:
            with mark_worker_thread():
                while (task := self._take(clock, batch, caller=caller)) is not None:
                    per_item = self._run(*task, queue)
                    if batch == 0 or (should_stop is not None and should_stop()):
                        batch = 0  # leaving: only items read ahead are left to run
                        continue
                    # Items cheaper than the probe's own bookkeeping (BATCH_ITEM) are
                    # taken a few at a time, each batch timed as a whole, once a few in
                    # a row were (a cheap first item says little about the next ones).
                    cheap_in_a_row = cheap_in_a_row + 1 if per_item < BATCH_ITEM else 0
                    grow = cheap_in_a_row >= CHEAP_BEFORE_BATCHES
                    batch = min(4 * batch, MAX_BATCH) if grow else 1
        finally:
            with self._cond:
                self.workers -= 1
                if caller:
                    self.caller_busy = False
                self._cond.notify_all()

    def cpu_clocks(self) -> Dict[int, float]:
        """The CPU clocks of the threads that have worked for this probe, each with its
        reading when the thread joined (empty where threads' clocks cannot be read)."""
        with self._cond:
            return dict(self._clocks)

    def add_caller(self) -> None:
        """Count the calling thread as a worker from now on; it then calls work_here().

        Called before any helper thread starts: the caller's queue clock (see
        autopar._auto.queued_time) is read here, where no helper waits for the GIL that reading
        a file gives up.
        """
        self._caller_queue = for_this_thread()
        with self._cond:
            self.workers += 1
            self._changes += 1
            self.caller_busy = True

    def work_here(self, should_stop: Callable[[], bool]) -> None:
        """The calling thread runs items as one of the workers until release_caller(),
        until ``should_stop()`` (asked after each of its items) says to stop, or until no
        item is left for it."""
        self._work(should_stop)

    def submit_helper(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on one of the probe's pooled threads (a calibration watcher)."""
        self._pool.submit(fn)

    def release_caller(self) -> None:
        """The calling thread takes no new item (the one it runs, it finishes)."""
        with self._cond:
            self._caller_released = True

    def _run(
        self, index: int, item: Any, workers: int, batch: bool, queue: Optional[QueueClock]
    ) -> float:
        """Run an item, and after it, if ``batch``, items from the ready queue for up to
        HOSTAGE seconds; record them as one sample each of the mean cost. Returns that.
        Time the thread was held off a core is left out (see the sample's reading)."""
        changes = self._changes
        done: List[Tuple[int, Any]] = []
        at = [index]  # the item running now, for a failure's index
        failure = None
        usage0 = thread_usage()
        wall0, cpu0, process0 = time.perf_counter(), time.thread_time(), time.process_time()
        setup0 = setup_seconds()
        try:
            done.append((index, self._fn(*item) if self._star else self._fn(item)))
            if batch:
                self._run_ready(done, at, wall0 + HOSTAGE)
        except Exception as exc:
            failure = Failure(at[0], exc, traceback.format_exc())
        except BaseException:
            # Ctrl-C in the calling thread's own item (or SystemExit): the probe ends here.
            with self._cond:
                del self.running[index]
                self.stopped = self.closed = True
                self._cond.notify_all()
            raise
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        rest = max(0.0, time.process_time() - process0 - cpu)  # the rest of the process
        # A sample is the item's solo cost: what it takes on a core of its own. Time the
        # thread sat held off a core is neither its cost nor waiting: a thread that never
        # blocked meanwhile computed throughout, and its CPU clock (plus the host's share
        # on a VM: autopar._auto.stolen_time) is its cost; the caller's time queued for a
        # core (below) comes off its wall. (Counted as cost, one 3 ms preemption on a busy
        # machine read 200,000 items of x * x as 30 us each, and started a process pool.)
        queued = 0.0 if queue is None else queue.after_item(wall)
        cpu = min(wall, stolen_time.wanted(cpu))
        if held_off_since(usage0, wall):
            wall = cpu
        wall = max(cpu, wall - queued)
        setup = setup_seconds()
        if setup != setup0:  # an item built per-worker state: priced apart (cost_model)
            wall = max(0.0, wall - (setup[0] - setup0[0]))
            cpu = max(0.0, cpu - (setup[1] - setup0[1]))
        # What the rest of the process used per second of the item's own (solo) time.
        others = rest / max(wall, 1e-9)
        # Less the clocks' own cost, which for the cheapest items is several times the
        # item itself: left in, it would make shipping such items to processes seem to pay.
        count = max(1, len(done))
        clock_wall, clock_cpu = _clock_cost
        wall = max(0.0, wall - clock_wall) / count
        cpu = max(0.0, cpu - clock_cpu) / count
        with self._cond:
            del self.running[index]
            self.results.update(done)
            if failure is None:
                if self.example is None:
                    self.example = (item, done[0][1])
                steady = self.workers == workers and changes == self._changes
                phase = workers if steady else 0
                self.samples.extend([(wall, cpu, phase, others)] * count)
            elif self.failure is None or failure.index < self.failure.index:
                self.failure = failure
            # Waking the caller on every item would make it compete with the workers for
            # the GIL; calibration checks the probe every CHECK_INTERVAL, and the caller is
            # woken here only when it waits on results.
            if self._result_waiters or self.finished:
                self._cond.notify_all()
        return wall

    def _run_ready(self, done: List[Tuple[int, Any]], at: List[int], until: float) -> None:
        """Run items from the ready queue into ``done`` until it is empty or ``until``
        (perf_counter) has passed. Any other worker takes from the same queue, so one
        slow item here holds none of the others back."""
        fn, star, ready, clock = self._fn, self._star, self._ready, time.perf_counter
        while clock() <= until:
            try:
                index, item = ready.popleft()  # (atomic: no lock needed)
            except IndexError:
                return
            at[0] = index
            done.append((index, fn(*item) if star else fn(item)))

    # -- caller side -------------------------------------------------------------------
    def grow(self, workers: int) -> None:
        """Run with ``workers`` threads from now on (never fewer than now)."""
        with self._cond:
            extra = workers - self.workers
            if extra <= 0 or self.stopped or self.closed:
                return
            self.workers += extra
            self._changes += 1
        for _ in range(extra):
            self._pool.submit(self._work)

    def cheap(self, under: float, samples: int) -> bool:
        """At least ``samples`` items done, their mean (the costliest few left out: FEW)
        under ``under`` seconds, and none running for longer than 20 times that."""
        with self._cond:
            if len(self.samples) < samples:
                return False
            costs = without_the_costliest([(w, c) for w, c, _, _ in self.samples])
            mean = sum(w for w, _ in costs) / len(costs)
            now = time.perf_counter()
            slow = any(now - entry[0] > 20 * under for entry in self.running.values())
            return mean < under and not slow

    def wake(self) -> None:
        """Wake whoever waits in wait()."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        with self._cond:
            if not self.finished:
                self._cond.wait(timeout)

    @property
    def finished(self) -> bool:
        """No more items will be taken and none is running."""
        done_taking = self.stopped or self.exhausted or self.failure or self.read >= self.limit
        return bool(done_taking) and not self.running and not self._ready

    def running_costs(self) -> List[Tuple[float, Optional[float]]]:
        """Wall seconds each running item has run so far, and its CPU seconds where the
        platform can read another thread's CPU clock (None elsewhere). The caller's item
        leaves out its time queued for a core as far as the kernel has counted it (a
        wait still going on is not counted yet), as a finished item's sample does."""
        with self._cond:
            entries = list(self.running.values())
        now = time.perf_counter()
        costs: List[Tuple[float, Optional[float]]] = []
        for t, clock, cpu0, queue, thread, setup0, _ in entries:
            cpu = None if clock is None else stolen_time.wanted(time.clock_gettime(clock) - cpu0)
            queued = 0.0 if queue is None else queue.since_mark()
            # Less any per-worker value built meanwhile (or being built now).
            setup = setup_seconds(thread)
            wall = max(0.0, now - t - queued - (setup[0] - setup0[0]))
            if cpu is not None:
                cpu = max(0.0, cpu - (setup[1] - setup0[1]))
            costs.append((wall, cpu))
        return costs

    def never_blocked(self, at_least: float) -> bool:
        """Whether an item running for ``at_least`` seconds or more is on a thread that
        has not blocked since it took the item (no sleep, I/O, lock or GIL wait): it is
        computing, whatever its CPU clock says (a VM's host or a busy core held it off).
        Read from /proc, one file per such item: only to confirm a reading of waiting."""
        with self._cond:
            entries = list(self.running.values())
        now = time.perf_counter()
        for entry in entries:
            started, blocked = entry[0], entry[6]
            if blocked is None or now - started < at_least:
                continue
            native, switches = blocked
            if switches_of(native) == switches:
                return True
        return False

    def pause(self) -> None:
        """Take no new items for now (running ones finish); resume() undoes it."""
        with self._cond:
            self.stopped = True
            self._paused_workers = self.workers

    def resume(self) -> None:
        """Take items again with the workers there were (idle ones left: replace them)."""
        with self._cond:
            if self.closed:
                return
            self.stopped = False
            wanted = max(1, self._paused_workers)
        self.grow(wanted)

    def stop(self, *, abandon: bool = False) -> int:
        """Take no more items; return how many were taken (the rest start at this index).

        Items read ahead still run (the call waits for their results) unless ``abandon``:
        the call failed, and nothing will wait for them.
        """
        with self._cond:
            self.stopped = self.closed = True
            if abandon:
                self._ready.clear()
                self._cond.notify_all()
            return self.read

    def drain(self) -> None:
        """Wait until every taken item has finished, then release the threads."""
        with self._cond:
            while self.running or self._ready:
                self._wait_for_results()

    def _wait_for_results(self) -> None:
        # Called with _cond held.
        self._result_waiters += 1
        try:
            self._cond.wait()
        finally:
            self._result_waiters -= 1

    def take_results(self, count: int) -> List[Any]:
        """The results of items 0..count-1 (count <= read), in order, waiting for them;
        the first failure among them raises."""
        out: List[Any] = []
        with self._cond:
            results = self.results
            if len(results) == count and not self.running:  # all here: no wait per index
                out = [results[index] for index in range(count)]
                results.clear()
                return out
            for index in range(count):
                while index not in self.results:
                    # Items are taken in order and handed back in order, so if this one
                    # failed, nothing before it can fail any more.
                    if self.failure is not None and self.failure.index <= index:
                        raise_failure(self.failure)
                    self._wait_for_results()
                out.append(self.results.pop(index))
        return out

    def take_any(self) -> Optional[List[Any]]:
        """After stop(): results finished since the last call (waiting for one if none is
        ready), None once all are handed back; a failure raises when nothing else is left."""
        with self._cond:
            while not self.results and (self.running or self._ready):
                self._wait_for_results()
            if self.results:
                ready = list(self.results.values())
                self.results.clear()
                return ready
            if self.failure is not None:
                raise_failure(self.failure)
            return None


# What timing an item costs by itself (wall, CPU): the clock reads around a call.
# Measured once, on the first probe; a race only measures it twice. One tuple, replaced
# whole: a reader sees both figures of one measurement, with or without a GIL.
_clock_cost: Tuple[float, float] = (0.0, 0.0)
_clock_measured = False


def _nothing() -> None:
    return None


def _measure_clock_cost() -> None:
    global _clock_cost, _clock_measured
    if _clock_measured:
        return
    fn, best_wall, best_cpu = _nothing, 1.0, 1.0
    for _ in range(50):  # the least of many: the cost without interruptions (~50 us)
        # (The process clock is read as _run reads it: its cost is part of every timing.)
        wall0, cpu0, _ = time.perf_counter(), time.thread_time(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    _clock_cost = (best_wall, best_cpu)
    _clock_measured = True


def raise_failure(failure: Failure) -> None:
    from ..errors import annotate

    raise annotate(failure.exc, failure.index, "calibration")
