"""The pilot: a first call's items start on a helper thread while the caller watches.

A call whose whole work is shorter than any pool could save needs no measuring, yet the
planner's imports, probe and decision cost a fresh program several milliseconds, many
times the work of a thousand near-free items. So a call that nothing has been learned
about runs its items first here, in input order, on one of the measuring threads
(thread_pool.helpers), in batches that double while the work stays within PILOT_BUDGET:

    every item ran within the budget        -> done, serially: nothing imported or learned
    the budget is spent between batches     -> the rest of the input goes to the planner
    the caller's wait (PATIENCE) runs out   -> the items the helper has not started are
      while the helper is inside a batch       taken back, and go to the planner with the
                                               rest: at once where the helper's item
                                               waits, after that item where it computes
                                               (an item computing beside the planner's
                                               probe would bend what the probe reads)
    an item raised                          -> the error, as a serial run raises it

The caller only watches, so one long item holds up nothing but itself: the rest runs on
the planner's choice meanwhile, and the results join in input order. Larger calls pay
for the pilot with at most PILOT_BUDGET of their own work done on one thread (kept, not
redone) and two thread hand-offs.

Only first calls take the pilot (nothing learned about the function yet), and only those
that take every result at once (map, starmap) from a list, tuple or range, with none of
the settings the planner weighs: see applies.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Deque, Iterable, Iterator, List, Optional, Sequence, cast

from .._execute.executor import Call
from .._execute.thread_pool import cpu_clock, helpers
from .._execute.worker import mark_worker_thread, run_all, run_here
from ..errors import annotate
from ..plan import Plan

if TYPE_CHECKING:
    from .._router import FunctionState

# A call whose whole work ends within this many seconds ends in the pilot, serially: no
# pool can save more than the work itself, and such calls are judged by their absolute
# overhead, not by a ratio (issue 14: a first call under 2 ms of work may add 3 ms).
PILOT_BUDGET = 1e-3
# How long the caller waits for the helper to start (a new thread, or a busy machine's
# scheduler, can take milliseconds), and then for its work, before it hands the rest on:
# a longer call waits this long, idle, before the planner starts on it.
START_PATIENCE = 0.01
PATIENCE = PILOT_BUDGET
# A later call predicted to take at most this share of PILOT_BUDGET, from the last call
# the pilot ran whole, runs in the caller's thread at once (FunctionState.short_item);
# one that then outlasts PILOT_BUDGET sends the next call back to the pilot.
INLINE_SHARE = 0.5
# A helper that used at least this share of its wall time in CPU is computing (as the
# probe's WAITING_RATE says).
COMPUTING = 0.5


def applies(call: Call, state: FunctionState) -> bool:
    """Whether the call takes the pilot: nothing is learned about its function, and it
    takes every result at once from an input it can slice, with no setting the planner
    must weigh (a timeout, a policy, a progress bar, a worker count or chunk size)."""
    config = call.config
    if not (
        state.learned is None
        and call.eager
        and call.ordered
        and call.policy is None
        and type(call.items) in (list, tuple, range)
        and len(call.items) > 1  # type: ignore[arg-type]
        and config.timeout is None
        and config.workers is None
        and config.chunksize is None
        and not config.progress
    ):
        return False
    # Costs another wrapper of the function learned: the planner plans on them. (Nothing
    # can be learned before the planner's memory is imported.)
    memory = sys.modules.get("autopar._auto.memory")
    return memory is None or memory.learned_about(call.fn) is None


class _Pilot:
    """One call's pilot. The helper runs items popped from the left of ``ready``, a batch
    at a time; the caller takes back from the right what it has not started.

    ``lock`` guards ``claimed`` (items [0, claimed) have been put in ``ready`` or run) and
    ``handed_over`` (the helper claims no more once it is set); ``done`` is set when the
    helper has stopped, with ``failure`` the exception of item ``len(results)`` if one
    raised.
    """

    def __init__(self, call: Call) -> None:
        self.fn, self.star = call.fn, call.star
        self.items = cast(Sequence[Any], call.items)  # (see applies)
        self.n = len(self.items)
        self.lock = threading.Lock()
        self.claimed = 0
        self.handed_over = False
        self.ready: Deque[Any] = collections.deque()
        self.results: List[Any] = []
        self.failure: Optional[BaseException] = None
        self.began = threading.Event()
        self.done = threading.Event()
        self.spent = 0.0  # wall seconds the helper has worked, once done
        self.thread_clock: Optional[int] = None  # the helper's CPU clock, once it started
        self.started = 0.0  # perf_counter and helper CPU seconds when it started
        self.started_cpu = 0.0

    def work(self) -> None:
        """On the helper thread: run batches until the input ends, the budget is spent or
        the caller hands the rest over."""
        out, ready = self.results, self.ready
        clock = cpu_clock()
        try:
            with self.lock:
                if self.handed_over:  # (the caller gave up waiting for this thread)
                    return
                self.claimed = 1
            # Item 0 is this thread's from here on: the caller's wait starts now.
            self.started_cpu = _cpu(clock)
            self.thread_clock = clock
            self.started = t0 = time.perf_counter()
            self.began.set()
            with mark_worker_thread():
                try:
                    first = self.items[0]
                    out.append(self.fn(*first) if self.star else self.fn(first))
                except BaseException as exc:
                    self.failure = exc
                    return
                while True:
                    spent = time.perf_counter() - t0
                    if spent >= PILOT_BUDGET:
                        return
                    fits = int((PILOT_BUDGET - spent) * len(out) / max(spent, 1e-9))
                    with self.lock:
                        if self.handed_over or self.claimed >= self.n:
                            return
                        start = self.claimed
                        self.claimed = end = min(self.n, start + max(1, min(len(out), fits)))
                        ready.extend(self.items[start:end])
                    drawn = _drawn(ready)
                    try:
                        run_all(self.fn, drawn, out, star=self.star)
                    except BaseException as exc:  # (a SystemExit too: the caller raises it)
                        self.failure = exc
                        return
        finally:
            if self.started:
                self.spent = time.perf_counter() - self.started
            self.done.set()

    def hand_over(self) -> int:
        """Stop the helper and take back the items it has not started; return where its
        items end (it may still be running the last of them)."""
        with self.lock:
            self.handed_over = True
            claimed = self.claimed
        # The helper pops from the left, this from the right, each pop whole: the
        # helper's items stay a prefix, and it stops when it finds the queue empty.
        back, pop = 0, self.ready.pop
        while True:
            try:
                pop()
            except IndexError:
                return claimed - back
            back += 1

    def computing(self) -> bool:
        """Whether the helper has been computing rather than waiting (unknown: no)."""
        clock, started = self.thread_clock, self.started
        if clock is None or not started:
            return False
        wall = time.perf_counter() - started
        return wall > 0 and (_cpu(clock) - self.started_cpu) >= COMPUTING * wall


def _drawn(ready: Deque[Any]) -> Iterator[Any]:
    pop = ready.popleft
    while True:
        try:
            yield pop()
        except IndexError:
            return


def run(call: Call, state: FunctionState) -> Iterator[List[Any]]:
    """The call's results, as chunks: the pilot's, then the planner's for the rest."""
    per_item = state.short_item
    n = len(cast(Sequence[Any], call.items))
    if per_item is not None and n * per_item <= INLINE_SHARE * PILOT_BUDGET:
        return _inline(call, state)
    return _piloted(call, state)


def _inline(call: Call, state: FunctionState) -> Iterator[List[Any]]:
    t0 = time.perf_counter()
    out = run_here(call.fn, call.items, star=call.star)
    wall = time.perf_counter() - t0
    n = len(out)
    if wall > PILOT_BUDGET:
        state.short_item = None  # dearer than the pilot saw: the next call starts there
    state.last_plan = _serial_plan(n, wall, inline=True)
    yield out


def _piloted(call: Call, state: FunctionState) -> Iterator[List[Any]]:
    pilot = _Pilot(call)
    n = pilot.n
    helpers().submit(pilot.work)
    handed = False
    try:
        if pilot.began.wait(START_PATIENCE):
            pilot.done.wait(max(0.0, pilot.started + PATIENCE - time.perf_counter()))
        end = pilot.hand_over()
        handed = True
        # Nothing left to hand on (its last items are the call), or an item computing
        # beside the planner's probe would bend what it reads: wait for the helper.
        if end >= n or (not pilot.done.is_set() and pilot.computing()):
            pilot.done.wait()
        if pilot.done.is_set() and pilot.failure is not None:
            _raise_failure(pilot, state)
        if end >= n:
            if pilot.spent <= PILOT_BUDGET:
                state.short_item = pilot.spent / n
            state.last_plan = _serial_plan(n, pilot.spent)
            yield pilot.results
            return
        try:
            rest = _rest(call, end, state)
        except Exception:
            _joined(pilot, state)  # (an earlier item's error comes first)
            raise
        _joined(pilot, state)
    except BaseException:
        if not handed:
            pilot.hand_over()
        raise
    plan = state.last_plan
    if plan is not None and end:
        state.last_plan = dataclasses.replace(
            plan,
            n_items=n,
            reason=f"{plan.reason}; before measuring, {_items(end)} ran on one thread "
            f"({pilot.spent * 1e3:.1f} ms)",
        )
    head = pilot.results[:end]
    if rest and len(rest[0]) >= len(head):
        # The pilot's few results go in front of the rest's first chunk (a fresh list that
        # nothing else holds): that moves the chunk's pointers, where gathering it after
        # the few would copy it, touching each result (0.5 ms against 2.2 ms for 200,000
        # cheap results, and their old list's free after).
        rest[0][0:0] = head
    else:
        yield head
    yield from rest


def _items(count: int) -> str:
    return "the first item" if count == 1 else f"the first {count} items"


def _joined(pilot: _Pilot, state: FunctionState) -> None:
    """Wait for the helper's last item, if it still runs one; raise its error if it had
    one. (Not on Ctrl-C: the call ends at once, and the helper's item ends on its own.)"""
    if not pilot.claimed:
        return  # (it had not started by the hand-over: it will take no item)
    pilot.done.wait()
    if pilot.failure is not None:
        _raise_failure(pilot, state)


def _rest(call: Call, start: int, state: FunctionState) -> List[List[Any]]:
    """The planner's chunks for items [start, n), run to the end now (a map's caller takes
    every result at once anyway), while the helper finishes its last item."""
    from .planner import start as plan_and_run
    from .spread import renumber

    items = cast(Sequence[Any], call.items)
    rest = call._replace(items=items[start:], n_items=len(items) - start)
    done: List[List[Any]] = []
    chunks: Optional[Iterator[List[Any]]] = None
    try:
        chunks = plan_and_run(rest, state)
        done.extend(chunks)
    except Exception as exc:
        renumber(exc, lambda index: index + start, _flat(done))
        raise
    finally:
        if chunks is not None:
            chunks.close()  # type: ignore[attr-defined]
    return done


def _flat(chunks: Iterable[List[Any]]) -> List[Any]:
    return [result for chunk in chunks for result in chunk]


def _raise_failure(pilot: _Pilot, state: FunctionState) -> None:
    index = len(pilot.results)
    state.last_plan = Plan(
        "serial",
        1,
        1,
        f"item {index} raised while the call's first items ran on one thread",
        pilot.n,
    )
    raise annotate(pilot.failure, index, "pilot thread")  # type: ignore[arg-type]


def _serial_plan(n: int, spent: float, inline: bool = False) -> Plan:
    took = f"{spent * 1e3:.2f} ms"
    if inline:
        why = f"ran in the calling thread in {took}: the last call's cost per item said it "
        why += "would be short, and no pool can save more than that"
    elif spent <= PILOT_BUDGET:
        why = f"ran on one thread in {took}, less than any pool could save, so nothing was "
        why += "measured"
    else:
        why = f"ran on one thread in {took}, its last item outlasting the budget with no "
        why += "item left to hand on"
    return Plan(
        "serial",
        1,
        n,
        f"the whole call {why} (calls of this function start this way until one outlasts "
        f"{PILOT_BUDGET * 1e3:g} ms)",
        n,
        measured={"wall": spent / n, "items_sampled": n},
    )


def _cpu(clock: Optional[int]) -> float:
    if clock is None:
        return 0.0
    try:
        return time.clock_gettime(clock)
    except OSError:
        return 0.0
