"""Re-planning within a call: no plan is final until the call ends.

    plan -> execute(plan, rest, on_chunk=watch, stop_after=watch.switching)
              each chunk's timing -> Watch: the recent per-item cost, far outside the
              band around what the plan was made on (or a process pool starting in
              the background now up)? -> decide again for the items left
              -> another kind finishes them sooner by SWITCH_MARGIN, read so by two
                 readings in a row: stop handing out chunks; those out come back; the
                 rest runs on the new plan
         -> the call ends: the whole call's cost is what later calls remember

Every kind runs in chunks that it can stop between, serial included (chunks of about
SLICE seconds of work, a clock read each), so a plan made on items that turn out
unlike the rest changes course within milliseconds of work instead of after the call.
Nothing that ran is run again, and results stay in order: every chunk handed out comes
back before the next plan starts on the items after them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from time import perf_counter, process_time
from typing import Any, Callable, Iterable, Iterator, List, Optional

from .. import _cpus
from .._config import Config
from .._execute.executor import Call, execute
from .._execute.worker import ChunkResult
from ..plan import Plan
from . import cost_model, pool_costs, stolen_time
from .calibration import priced
from .memory import MIN_OBSERVED
from .queued_time import for_this_thread
from .spread import SpreadOrder

log = logging.getLogger("autopar")

# A serial call predicted to take a few of these is watched (autopar._execute.chunking's
# adaptive chunks hold about this much work each): a chunk's bookkeeping (a few
# microseconds) stays under 0.1% of it.
SLICE = 0.005
# Costs within this factor of the planned ones leave the plan alone: item costs vary, and
# a prediction off by less than this rarely picks a kind that is 2x worse.
BAND = 2.0
# Another kind must be predicted to finish the items left this much sooner than the
# current one (its start-up included) before the plan changes: switching has costs the
# model does not see (a cold pool's first chunks, caches), and a flip on noise would.
SWITCH_MARGIN = 1.3
# ... or their CPU share moved this much across one half (waiting <-> computing).
SHARE_CHANGE = 0.3
# Chunks on a pool seen as waiting: a CPU share under this (see Watch._judge).
POOL_WAITING_SHARE = 0.2
# A switch is made on this many readings in a row that each call for it. One reading can
# be one chunk, and one chunk can hold a stall that is not the items' cost: a full
# garbage collection (tens of milliseconds of CPU, in whichever thread allocated), a
# core taken away. Two in a row cost one reading's delay and keep such a stall from
# moving the rest of a call to a kind several times worse.
CONFIRM = 2
# Threads running items that wait, on an interpreter with a GIL, while the process used
# at least this share of one core's time (its CPU clock over the plan's run, all threads
# and the pool's own work: each runs holding the GIL): queueing for the GIL is then a
# large part of each item's wall time, and it reads as waiting. Such a reading cannot say
# the items wait longer than planned (see Watch._queued_for_gil).
GIL_BUSY = 0.75
# ... unless the reading spans this much work: a stall would have to last as long to
# take it out of the band (garbage collections of large heaps run to about 0.1 s).
LONG_READING = 0.25
ASSUMED_LENGTH = 10_000  # items assumed for input of unknown length (imap on a generator)


class Watch:
    """Follows one plan's chunks; decides whether the items left should run otherwise."""

    def __init__(
        self,
        plan: Plan,
        m: cost_model.Measurements,
        config: Config,
        left: Optional[int],
        pool_ready: Optional[threading.Event] = None,
        to_ship: Optional[Callable[..., Any]] = None,
    ) -> None:
        self.plan, self.m, self.config = plan, m, config
        self.to_ship = to_ship  # the function as processes get it (to price: see _judge)
        # Set once a process pool starting in the background is up: the plan is judged
        # again then, whatever the costs (it was made with that pool cold). The new
        # workers' per-worker builds go unpriced, as on any warm pool: every process call
        # owes them once, and this pool started because later calls want it (priced, they
        # moved the cost to the next call: docs/how-auto-decides.md).
        self.pool_ready = pool_ready
        self.planned_wall, self.plan_share = m.wall, m.cpu_fraction  # what it was made on
        self.left = left  # items not yet run when this plan started (None: unknown)
        self.switch: Optional[Plan] = None
        self.why = ""  # what made the switch, in words
        self._calls_for: Optional[str] = None  # the kind the last readings called for
        self._readings = 0  # ... and how many readings in a row did
        self.done = 0  # items run on this plan
        # Since the last judgement: items, wall and CPU seconds.
        self._items, self._wall, self._cpu = 0, 0.0, 0.0
        # The whole run's solo cost per item, summed over solo_done items: what later
        # calls should remember.
        self.solo_wall, self.solo_cpu, self.solo_done = 0.0, 0.0, 0
        # Serial chunks run in this thread, which can read its own time queued for a core
        # (autopar._auto.queued_time), which is neither the items' cost nor waiting.
        self._queue = for_this_thread() if plan.kind == "serial" else None
        # Waiting items on threads that share a GIL (see _queued_for_gil): when this plan
        # started and when its last chunk came back, by the wall clock and the process's
        # CPU clock.
        self._gil_shared = (
            plan.kind == "thread"
            and plan.workers > 1
            and m.cpu_fraction < 0.5
            and not m.gil_free
            and _cpus.gil_enabled()
        )
        self._started = self._last = perf_counter()
        self._cpu_started = self._cpu_last = process_time() if self._gil_shared else 0.0

    @property
    def computing_threads(self) -> bool:
        # Threads that compute share cores (and maybe the GIL), which stretches each
        # chunk's wall time: their CPU time is the solo cost. Waiting threads do not.
        return self.plan.kind == "thread" and self.m.cpu_fraction >= 0.5

    def switching(self) -> bool:
        return self.switch is not None

    def on_chunk(self, result: ChunkResult, count: int) -> None:
        # (Fewer results than items: the chunk failed. More: results shared with earlier
        # chunks, run_chunk's ``into``.)
        done = min(count, len(result.results))
        queued = 0.0 if self._queue is None else self._queue.after_item(result.wall)
        if done == 0:
            return
        self.done += done
        # (CPU time the host took from this guest counts: autopar._auto.stolen_time.)
        cpu = stolen_time.wanted(result.cpu)
        wall = min(cpu, result.wall) if self.computing_threads else result.wall
        cpu = min(cpu, wall)
        wall = max(cpu, wall - queued)
        # A pool starting beside the call takes cores (and the GIL, for its thread here)
        # from the call's items: what they read meanwhile is not their cost, and is
        # neither judged nor remembered. (A 0.3 s serial call of Python items read them
        # 2.3x dearer while a pool for a 50 MiB function started, and moved its rest to
        # that pool before it was up: 1.5x plain map in all.) Its coming up is judged.
        starting = self.pool_ready is not None and not self.pool_ready.is_set()
        if self._gil_shared:
            self._last, self._cpu_last = perf_counter(), process_time()
        if not starting:
            self.solo_wall += wall
            self.solo_cpu += cpu
            self.solo_done += done
            self._items += done
            self._wall += wall
            self._cpu += cpu
        if self.switch is not None:
            return
        if self.pool_ready is not None and self.pool_ready.is_set():
            self.pool_ready = None
            if not self._items:  # (none read since it started: the costs the plan was on)
                self._items, self._wall, self._cpu = 1, self.m.wall, self.m.cpu
            self._judge(pool_up=True)
        elif not starting and self._wall >= MIN_OBSERVED:
            self._judge()

    def _queued_for_gil(self, wall: float, cpu: float) -> float:
        """The wall time per item to judge by, for items that read ``wall`` and ``cpu``
        each on this plan.

        A thread that takes the GIL back after a wait queues for it behind the others;
        where they hold it most of the time, that queue grows with every thread added,
        and it reads as the items' own waiting. Taken as theirs, it had auto add threads
        call after call (8, then 16, then 32, for items of 60 us of Python and 240 us of
        waiting: each step read the wait twice as long, and each call ran slower). On a
        busy GIL, then, a reading's wall time can only be as long as what the plan was
        made on (not what a reading since moved it to: cheaper chunks of uneven items
        would ratchet it down); the items' CPU time, read from their own threads'
        clocks, still moves it.
        """
        if not self._gil_shared:
            return wall
        if self._cpu_last - self._cpu_started < GIL_BUSY * (self._last - self._started):
            return wall
        return max(cpu, min(wall, self.planned_wall))

    def _judge(self, pool_up: bool = False) -> None:
        stolen_time.refresh()  # (for the chunks to come: these were read already)
        wall, cpu = self._wall / self._items, self._cpu / self._items
        wall = self._queued_for_gil(wall, cpu)
        long_reading = self._wall >= LONG_READING
        self._items, self._wall, self._cpu = 0, 0.0, 0.0
        ratio = wall / max(self.m.wall, 1e-9)
        # Waiting taken for computing (or the reverse) changes the best kind as surely as
        # a cost off by the band: a reading of the first items can be wrong on a busy
        # machine, and chunks on a pool read each item's own clock.
        share = cpu / max(wall, 1e-9)
        # A pool's chunks cannot count their workers' time queued for a core, which a
        # busy machine adds to computing items: there, only a share far below half is
        # taken for waiting.
        waits_under = 0.5 if self._queue is not None else POOL_WAITING_SHARE
        was_waiting = self.m.cpu_fraction < 0.5
        crossed = abs(share - self.m.cpu_fraction) > SHARE_CHANGE and (
            (share < waits_under) if not was_waiting else (share >= 0.5)
        )
        if 1 / BAND <= ratio <= BAND and not crossed and not pool_up:
            self._calls_for, self._readings = None, 0
            return
        seen = self.m._replace(wall=max(wall, 1e-9), cpu=cpu)
        left = (ASSUMED_LENGTH if self.left is None else self.left) - self.done
        if left < 2:
            return
        overheads = pool_costs.for_items(self.config, seen, left)
        if self.to_ship is not None and not seen.function_priced:
            seen = priced(seen, self.to_ship, overheads, left)
            if seen.function_priced:
                # Pickled once: the readings after this one start from what it measured,
                # whether or not this one moves the plan.
                self.m = seen._replace(wall=self.m.wall, cpu=self.m.cpu)
        again = cost_model.decide(seen, overheads, left)
        now = again.predicted.get(self.plan.kind)
        best = again.predicted[again.kind]
        if now is None or again.kind == self.plan.kind or best * SWITCH_MARGIN >= now:
            self.m = seen  # judged from here on against what was seen
            self._calls_for, self._readings = None, 0
            return
        # A pool coming up is an event, not a reading: it needs no second one.
        if not pool_up and not long_reading:
            same = self._calls_for == again.kind
            self._calls_for, self._readings = again.kind, (self._readings + 1 if same else 1)
            if self._readings < CONFIRM:
                return  # (self.m's costs stay: the next reading is judged as this one was)
        self.m = seen
        share_note = ", and waited" if share < 0.5 <= self.plan_share else ""
        share_note = ", and computed" if self.plan_share < 0.5 <= share else share_note
        self.why = (
            f"items cost {wall / max(self.planned_wall, 1e-9):.1f}x what the "
            f"{self.plan.kind} plan was made on{share_note}"
        )
        if pool_up:
            self.why = "the process pool starting in the background is up"
        log.debug("autopar: %s: %s for the %d items left", self.why, again.kind, left)
        self.switch = again

    def observed(self) -> Optional[cost_model.Measurements]:
        """The solo cost per item over this plan's run, or None if too little ran."""
        if self.solo_done == 0 or self.solo_wall < MIN_OBSERVED:
            return None
        return self.m._replace(
            wall=max(self.solo_wall_judged() / self.solo_done, 1e-9),
            cpu=self.solo_cpu / self.solo_done,
        )

    def solo_wall_judged(self) -> float:
        """solo_wall, less what the run's items queued for a busy GIL (_queued_for_gil)."""
        if self.solo_done == 0:
            return 0.0
        wall, cpu = self.solo_wall / self.solo_done, self.solo_cpu / self.solo_done
        return self.solo_done * self._queued_for_gil(wall, cpu)


def run_watched(
    call: Call,
    plan: Plan,
    m: cost_model.Measurements,
    *,
    start_index: int = 0,
    pool_ready: Optional[threading.Event] = None,
    on_replan: Callable[[Plan], None],
    on_end: Optional[Callable[[List[Watch]], None]] = None,
    settle: Callable[[Plan], Plan] = lambda plan: plan,
) -> Iterator[List[Any]]:
    """Run ``call.items`` from ``start_index`` on ``plan``, re-planning the rest whenever
    a :class:`Watch` says so. ``on_replan(plan)`` is told each new plan; ``on_end`` gets
    every plan's Watch once the call ran to its end; ``settle`` applies the user's
    explicit settings to a plan the model made; ``pool_ready``, set once a process pool
    starting in the background is up, has the plan judged again then."""
    items = _reader(call.items)
    part = call._replace(items=items)
    index, watches = start_index, []
    while True:
        left = None if call.n_items is None else call.n_items - index
        watch = Watch(plan, m, call.config, left, pool_ready, call.to_ship)
        watches.append(watch)
        if plan.kind == "serial" and call.config.chunksize is None:
            # Chunks that start at one item and double while under a few milliseconds
            # (autopar._execute.chunking): checks come often whatever the items cost.
            plan = dataclasses.replace(plan, chunksize=None)
        chunks = execute(
            plan,
            part,
            start_index=index,
            on_chunk=watch.on_chunk,
            stop_after=watch.switching,
        )
        for chunk in chunks:
            index += len(chunk)
            yield chunk
        if watch.switch is None:
            break
        m, pool_ready = watch.m, watch.pool_ready
        plan = settle(
            dataclasses.replace(
                watch.switch,
                reason=f"{watch.switch.reason} (re-planned after {index} items: {watch.why})",
                n_items=call.n_items,
            )
        )
        on_replan(plan)
    if on_end is not None:
        on_end(watches)


def _reader(items: Iterable[Any]) -> Iterator[Any]:
    """One reader of the input that every plan of the call goes on from. A list, tuple or
    range is read through a view in input order (a SpreadView with no spread positions),
    which hands its chunks out as slices: a serial chunk over a range then runs as plain
    map does, its items made as they are read."""
    if isinstance(items, (list, tuple, range)):
        return SpreadOrder(len(items), 0).view(items)
    return iter(items)


def whole_call(watches: List[Watch]) -> Optional[cost_model.Measurements]:
    """The solo cost per item over every plan of a call (``samples``: the items), or
    None if no item ran. (However short: memory pools short calls.)"""
    done = sum(w.solo_done for w in watches)
    wall = sum(w.solo_wall_judged() for w in watches)
    if not watches or done == 0:
        return None
    cpu = sum(w.solo_cpu for w in watches)
    return watches[-1].m._replace(wall=max(wall / done, 1e-9), cpu=cpu / done, samples=done)
