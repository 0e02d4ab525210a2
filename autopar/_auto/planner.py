"""kind="auto": measure the function on the call's own items, predict, choose, remember.

First call of a function (or after its cost drifted):

    probe (autopar._auto.probe) runs items on helper threads, growing the thread count
    while items wait, and measures wall/CPU per item and the process's CPU rate
      -> Measurements + this machine's Overheads -> autopar._auto.cost_model.decide -> Plan
      -> processes chosen and the pool is cold: the probe keeps working while it starts
      -> the rest of the input runs on the chosen pool; output merges both, in order

Later calls decide from the remembered Measurements without probing. Every plan's chunks
are watched (autopar._auto.replan): items far from the costs planned on re-plan the rest
of the call, and a whole call far from what was learned is remembered instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, NamedTuple, Optional, Tuple

from .. import _cpus
from .._config import Config
from .._execute.backends.serial import SERIAL_CHUNK
from .._execute.executor import Call, execute, run_inline, unchunked
from .._execute.worker import ChunkResult
from ..errors import AutoparTimeoutError
from ..plan import Plan
from . import cost_model, pool_costs, replan
from . import memory as learned_costs
from .calibration import WAITING_RATE, Calibration, priced
from .memory import LearnedCosts, check_drift, lock, open_fast_path, remember_plan
from .probe import FEW, Probe
from .queued_time import held_off_since, thread_usage
from .replan import ASSUMED_LENGTH
from .spread import SpreadOrder

if TYPE_CHECKING:
    from .._router import FunctionState

log = logging.getLogger("autopar")

POLL = 0.001  # seconds between the caller's checks on a pool that is starting
# Workers for later calls start beside a call predicted to take this many times their
# start, and the call's rest moves to them once they are up (see _start_for_later).
BESIDE_CALL = 1.0
# A serial call whose items a warm pool would run sooner starts the pool beside itself
# at once, whatever it would save, where at least this many cores sit idle besides its
# own: the server's boot and the workers' starts then run on cores nothing else wants,
# not on the call's (on 2 cores, where there is at most one, they stretched a call
# computing in Python 1.2 to 1.6x: see _start_for_later). Waiting for the savings to pay
# for the start costs more calls there, and each runs up to `cores` times a warm pool's
# time (16 cores, 2 programs a row: benchmarks/results/cores.md).
SPARE_FOR_START = 2


def start(call: Call, state: FunctionState) -> Iterator[List[Any]]:
    """Run one call the way the measurements say is fastest."""
    with lock:
        memory = state.learned
        learned = learned_costs.learned_about(call.fn) if memory is None else None
        if learned is not None and not learned.stale:
            # Learned by another wrapper of it: its costs, and its verdicts on them (each
            # wrapper plans with its own options).
            memory = LearnedCosts(learned.measurements, learned.settled, learned)
            memory.serial_always = learned.serial_always
            state.learned = memory
    if call.n_items is not None and call.n_items <= 1:
        plan = Plan("serial", 1, 1, "one item or none: nothing to run in parallel", call.n_items)
        state.last_plan = plan
        return execute(plan, call)
    if memory is not None and not memory.stale:
        return _remembered(call, state, memory)
    return _calibrated(call, state)


def _remembered(call: Call, state: FunctionState, memory: LearnedCosts) -> Iterator[List[Any]]:
    config, n_items = call.config, call.n_items
    m = memory.measurements
    if (
        n_items is not None
        and (n_items <= SERIAL_CHUNK or unchunked(call))
        and config.timeout is None
        and config.workers is None
        and config.chunksize is None
        and (why := _serial_always(memory, m, config))
    ):
        return _serial_here(call, state, memory, m, why)
    overheads = pool_costs.for_items(config, m, n_items or ASSUMED_LENGTH)
    m = _priced(memory, m, call, overheads)
    key = (n_items, overheads)
    with lock:
        plan = memory.plans.get(key)
    if plan is None:
        plan = _decide(m, config, n_items, overheads)
        plan = dataclasses.replace(plan, reason=f"{plan.reason} (remembered from an earlier call)")
        remember_plan(memory, key, plan)
    # (Every call counts toward a start for later calls, a remembered plan's too.)
    later = _start_for_later(m, config, plan, overheads, call.to_ship)
    plan = state.last_plan = _noted(plan, later.note)
    log.debug("autopar: %s: %s", call.name, plan.reason)
    return _then(_watched(call, state, memory, plan, m, pool_ready=later.ready), later.ended)


def _priced(
    memory: LearnedCosts, m: cost_model.Measurements, call: Call, overheads: cost_model.Overheads
) -> cost_model.Measurements:
    """``m``, with the function's shipping measured if processes are in question for this
    call (calibration.priced); what was measured is remembered."""
    done = priced(
        m, call.to_ship, overheads, ASSUMED_LENGTH if call.n_items is None else call.n_items
    )
    if done is not m:
        with lock:
            if memory.measurements is m:
                memory.measurements = done
                memory.plans = {}  # (made on the function priced free)
    return done


def _watched(
    call: Call,
    state: FunctionState,
    memory: LearnedCosts,
    plan: Plan,
    m: cost_model.Measurements,
    start_index: int = 0,
    pool_ready: Optional[threading.Event] = None,
) -> Iterator[List[Any]]:
    """Run the call's items from ``start_index`` on ``plan``, re-planning the rest when
    they cost far from ``m``, or once ``pool_ready`` (set when a process pool starting in
    the background is up) is set; the whole call's cost is remembered for later calls."""
    config = call.config

    def replanned(new: Plan) -> None:
        state.last_plan = new
        log.debug("autopar: %s -> %s", call.name, new)

    def settle(new: Plan) -> Plan:
        chunksize = new.chunksize if call.n_items is not None else None
        return dataclasses.replace(
            new,
            workers=config.workers or new.workers,
            chunksize=config.chunksize or chunksize,
        )

    def ended(watches: List[replan.Watch]) -> None:
        learned_costs.learn_from_call(memory, replan.whole_call(watches))

    return replan.run_watched(
        call,
        plan,
        m,
        start_index=start_index,
        pool_ready=pool_ready,
        on_replan=replanned,
        on_end=ended,
        settle=settle,
    )


def _serial_always(memory: LearnedCosts, m: cost_model.Measurements, config: Config) -> str:
    """Why serial wins at any call size, even against pools that are already warm; ""
    if it does not.

    The model's parallel costs are per item plus per chunk plus start-up, and chunks grow
    with the call: if serial wins for a billion items with no start-up cost, it wins for
    every size. (Processes count even where they are left out, as for a script with no
    main guard: then the usual path plans the call, and its plan says why.)
    """
    key = (config.max_threads, config.dask_address)
    with lock:
        known = memory.serial_always.get(key) if memory.measurements is m else None
    if known is None:
        current = pool_costs.for_items(config, m, 10**9)
        warm = current._replace(
            thread_start=0.0,
            threads_started=0,
            process_start=0.0,
            processes=True,
        )
        plan = cost_model.decide(m, warm, 10**9)
        known = f"{plan.reason}, at any call size" if plan.kind == "serial" else ""
        with lock:
            if memory.measurements is m:
                memory.serial_always[key] = known
    return known


def _serial_here(
    call: Call, state: FunctionState, memory: LearnedCosts, m: cost_model.Measurements, why: str
) -> Iterator[List[Any]]:
    """A call remembered as serial at any size, run right here in one go.

    The general path has a fixed cost per call (the cost model, a pool lease, a future
    per chunk) that exceeds the whole work of a hundred cheap items; this path skips it
    (the "auto later" column of the "square" row in benchmarks/RESULTS.md). The whole
    call is timed, so a drift in cost still sends the next call back to measuring. A
    call predicted to take longer than a few slices runs in slices instead, watched
    (autopar._auto.replan): its items may not be the cheap ones remembered.
    """
    n = call.n_items or 0
    reason = f"{why} (remembered from an earlier call)"
    if n * m.wall > 2 * replan.SLICE:
        sliced = Plan("serial", 1, None, reason, n)
        state.last_plan = sliced
        return _watched(call, state, memory, sliced, m)
    plan = memory.plans.get((n, None))  # (a dict read is atomic; a race plans twice)
    if plan is None:
        plan = Plan("serial", 1, max(1, n), reason, n)
        remember_plan(memory, (n, None), plan)
    state.last_plan = plan

    usage0: List[Any] = []

    def on_chunk(result: ChunkResult, count: int) -> None:
        # (In the thread that ran the items: a pause of it is not their cost.)
        stalled = held_off_since(usage0[0], result.wall)
        check_drift(memory, m.wall, result.wall, count, stalled=stalled)

    def run() -> Iterator[List[Any]]:
        usage0.append(thread_usage())  # (in the thread that takes the results)
        yield from run_inline(call.fn, call.items, star=call.star, on_chunk=on_chunk)

    open_fast_path(call, state, memory, m)
    return run()


def _start_for_later(
    m: cost_model.Measurements,
    config: Config,
    plan: Plan,
    overheads: cost_model.Overheads,
    fn: Callable[..., Any],
) -> Later:
    """Start the process pool in the background, if a warm one would win a call like this
    one and a cold one does not. Return the event to set once this call has ended (None:
    nothing started), the event set once the workers are up (the call moves its rest to
    them then, if that finishes sooner) and what the plan's reason should add.

    A call predicted to outlast the start BESIDE_CALL times over starts it at once: its
    own rest gains from it. The server the workers fork from boots in a process of its
    own, which costs the call a spawn. A shorter call starts it only once a warm pool
    would have saved, over the calls that ran without it, what its start costs
    (pool_costs.owe), and then after its end: beside a call computing in Python the
    server's boot and the workers' start (which takes this process's GIL many times)
    stretched it 1.2 to 1.6x, and a short call 3x (sha256 of 2,000 small files, 2 cores).
    Where SPARE_FOR_START cores sit idle besides a serial call's own, the start has cores
    of its own, and it starts beside that call however short.

    ``fn``, in its shipping form, is loaded into the new workers too: a large function's
    segment is written by a system call that leaves the GIL free (worker.dump_parts
    copies nothing), and its first writing into fresh memory took 62 ms for 50 MiB: done
    there, no call waits for it.
    """
    n = ASSUMED_LENGTH if plan.n_items is None else plan.n_items
    if plan.kind in ("process", "dask") or overheads.process_start == 0.0:
        return Later()
    starting = pool_costs.starting()
    if starting is not None:
        return Later(ready=starting, note="a process pool is starting")
    if n * m.wall <= overheads.process_dispatch:
        return Later()  # one round trip to a warm pool costs more than the whole call
    warm = cost_model.decide(m, overheads._replace(process_start=0.0), n)
    if warm.kind != "process":
        return Later()
    cold_load = overheads.process_start + m.ship_function + m.load_function + m.setup_process
    took = plan.predicted.get(plan.kind, 0.0)
    now = took >= BESIDE_CALL * cold_load or (
        plan.kind == "serial" and _idle_cores(overheads.cores) >= SPARE_FOR_START
    )
    owed = pool_costs.owe(took - warm.predicted["process"])
    if not now and owed < cold_load:
        return Later(
            note=f"so far a running pool would have saved {owed * 1e3:.0f} ms; one starts "
            f"after the call that brings that to its start, {cold_load * 1e3:.0f} ms"
        )
    log.debug("autopar: starting the process pool for later calls%s", " now" if now else "")
    ended = threading.Event()
    ready = pool_costs.warm_in_background(config, warm.workers, prime=fn, after=ended, now=now)
    if ready is None:
        return Later()
    if now:
        return Later(ended, ready, "a process pool starts beside this call, for its rest")
    return Later(ended, ready, "a process pool starts after this call")


def _idle_cores(cores: int) -> int:
    """Cores no task runs on at this instant, of the ``cores`` this process may use (0
    where the system does not say). The count of running tasks is the whole system's:
    on a host wider than this process's budget it can only count too few idle."""
    running = _cpus.running_now()
    return 0 if running is None else max(0, cores - running)


class Later(NamedTuple):
    """What _start_for_later did: see there."""

    ended: Optional[threading.Event] = None
    ready: Optional[threading.Event] = None
    note: str = ""


def _noted(plan: Plan, note: str) -> Plan:
    return dataclasses.replace(plan, reason=f"{plan.reason}; {note}") if note else plan


def _then(chunks: Iterator[List[Any]], ended: Optional[threading.Event]) -> Iterator[List[Any]]:
    """``chunks``, then ``ended`` set however the call ends."""
    if ended is None:
        return chunks
    return _setting(chunks, ended)


def _setting(chunks: Iterator[List[Any]], ended: threading.Event) -> Iterator[List[Any]]:
    try:
        yield from chunks
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        ended.set()


def _decide(
    m: cost_model.Measurements,
    config: Config,
    n: Optional[int],
    overheads: Optional[cost_model.Overheads] = None,
    whole: Optional[int] = None,
) -> Plan:
    """The cost model's plan for ``n`` items, with the user's explicit settings on top.

    ``whole`` is the call's size where ``n`` is what is left of it: a script without a
    main guard is told whether processes would have sped up the call it made (the probe
    may have run most of it by now).
    """
    size = ASSUMED_LENGTH if n is None else n
    overheads = overheads or pool_costs.for_items(config, m, size)
    plan = cost_model.decide(m, overheads, size)
    reason = plan.reason
    if not overheads.processes:
        guarded = overheads._replace(processes=True)
        with_processes = cost_model.decide(m, guarded, whole or size)
        if with_processes.kind == "process":
            reason = f"{reason}; {NO_GUARD}"
            _warn_no_guard()
    # Unknown length: chunks that adapt as results come (the model's assumed n is a guess).
    chunksize = plan.chunksize if n is not None else None
    return dataclasses.replace(
        plan,
        reason=reason,
        n_items=n,
        workers=config.workers or plan.workers,
        chunksize=config.chunksize or chunksize,
    )


NO_GUARD = (
    "processes would be faster, but this script has no "
    "'if __name__ == \"__main__\":' guard, so every process worker would run it again"
)
_warned_no_guard = threading.Event()


def _warn_no_guard() -> None:
    """Once per program: a user who left out the guard should learn what it costs."""
    if not _warned_no_guard.is_set():
        _warned_no_guard.set()
        warnings.warn(
            f"autopar: {NO_GUARD}; kind='auto' runs such calls on threads or serially. "
            "Put the script's work under the guard to let autopar use processes.",
            RuntimeWarning,
            stacklevel=_outside_autopar(),
        )


def _outside_autopar() -> int:
    """The warnings stack level of the first frame outside this package (the user's call)."""
    package = os.path.dirname(os.path.dirname(__file__)) + os.sep  # autopar/
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def _calibrated(call: Call, state: FunctionState) -> Iterator[List[Any]]:
    """Measure on the call's own items (spread over the input where it can be sliced),
    decide, and run the rest on the chosen kind."""
    n_items = call.n_items
    if (
        call.eager
        and call.ordered
        and n_items is not None
        and n_items > 2
        and isinstance(call.items, (list, tuple, range))
    ):
        order = SpreadOrder(n_items, _probe_limit(call.config))
        measured = _calibrated_in_order(call._replace(items=order.view(call.items)), state)
        return _restored(order, measured)
    return _calibrated_in_order(call, state)


def _probe_limit(config: Config) -> int:
    """The most items the probe may read."""
    return max(64, 2 * config.max_threads)


def _restored(order: SpreadOrder, chunks: Iterator[List[Any]]) -> Iterator[List[Any]]:
    """The view's results back in input order, as one chunk; an error names the item by
    its index in the input."""
    done: List[List[Any]] = []
    try:
        done.extend(chunks)
    except BaseException as exc:
        order.fix_error(exc, [result for chunk in done for result in chunk])
        raise
    finally:
        chunks.close()  # type: ignore[attr-defined]
    yield order.restore_chunks(done)


def _calibrated_in_order(call: Call, state: FunctionState) -> Iterator[List[Any]]:
    config, n_items = call.config, call.n_items
    iterator = iter(call.items)
    limit = _probe_limit(config)
    probe = Probe(call.fn, iterator, call.star, limit if n_items is None else min(limit, n_items))
    t0 = time.perf_counter()
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    later = Later()
    try:
        calibration = Calibration(probe, config, deadline)
        if deadline is None:
            calibration.run_beside_caller()
        else:
            calibration.run()
        m = calibration.measurements()
        remaining = None if n_items is None else n_items - probe.read
        # With nothing left, the plan shown (and used next time) is for the whole call.
        overheads = pool_costs.for_items(config, m, remaining or n_items or ASSUMED_LENGTH)
        m = priced(m, call.to_ship, overheads, n_items or ASSUMED_LENGTH)
        plan = _decide(m, config, remaining or n_items, overheads, n_items or ASSUMED_LENGTH)
        surely = _surely(calibration, m, plan, config, remaining or n_items, n_items)
        if surely is not None:
            m, plan, overheads = surely
        later = _start_for_later(
            m, config, dataclasses.replace(plan, n_items=n_items), overheads, call.to_ship
        )
        plan = _noted(plan, later.note)
        # (The probe pauses once the costs are known: items left, not items running,
        # say whether there is work to go on with while the pool starts.)
        left = not probe.exhausted and (n_items is None or probe.read < n_items)
        # (A call under a per-item policy starts processes of its own: see pool_costs.)
        if plan.kind == "process" and call.policy is None and (left or not probe.finished):
            _start_processes(probe, config, plan, m, deadline)
        boundary = probe.stop()
    except BaseException:
        probe.stop(abandon=True)
        if later.ended is not None:
            later.ended.set()  # (the pool for later calls need not wait for this call)
        raise
    memory = learned_costs.keep(call.fn, state, m)
    # (The caller may have gone on running its own slow item long after that.)
    spent = calibration.known_after or time.perf_counter() - t0
    finished = probe.exhausted or (n_items is not None and boundary >= n_items)
    known = f"costs known after {spent * 1e3:.1f} ms"
    if finished or probe.failure is not None:
        note = f"all {boundary} items ran while measuring, {known}; later calls: {plan.kind}"
    else:
        note = f"the first {boundary} items ran while measuring, {known}"
    plan = dataclasses.replace(plan, n_items=n_items, reason=f"{plan.reason} ({note})")
    state.last_plan = plan
    log.debug("autopar: %s -> %s", call.name, plan)
    if deadline is not None:
        config = dataclasses.replace(config, timeout=max(1e-3, deadline - time.monotonic()))
    rest: Optional[Iterator[List[Any]]] = None
    if not finished and probe.failure is None and probe.input_error is None:
        the_rest = call._replace(config=config, items=iterator)
        rest = _watched(
            the_rest, state, memory, plan, m, start_index=boundary, pool_ready=later.ready
        )
    return _then(_merge(probe, boundary, rest, call.ordered), later.ended)


def _surely(
    calibration: Calibration,
    m: cost_model.Measurements,
    plan: Plan,
    config: Config,
    n: Optional[int],
    n_items: Optional[int],
) -> Optional[Tuple[cost_model.Measurements, Plan, cost_model.Overheads]]:
    """The costs, plan and overheads read without the probe's costliest few samples
    (probe.FEW), where that reading says serial: a plan whose pool or threads only those
    few pay for does not start them, and no pool starts for later calls on them. The
    call's chunks then show what its items cost, and re-plan the rest if the few were
    real (a heavy tail): judged against the lower reading, those chunks read dearer."""
    read = calibration.without_the_costliest_few()
    if read is None or read[0] >= m.wall:
        return None  # (nothing left out, or nothing that mattered)
    sure = m._replace(wall=read[0], cpu=read[1])
    total = n_items or ASSUMED_LENGTH
    overheads = pool_costs.for_items(config, sure, n or total)
    plan_sure = _decide(sure, config, n, overheads, total)
    if plan_sure.kind != "serial":
        return None
    if plan.kind != "serial":
        plan_sure = dataclasses.replace(
            plan_sure,
            reason=f"{plan_sure.reason}, read without the costliest one sample in {FEW} "
            f"(of {len(calibration.probe.samples)}); with them, {plan.kind} "
            f"x{plan.workers}: too few to start on, so the call starts serial and re-plans "
            "if its items cost more",
        )
    return sure, plan_sure, overheads


def _start_processes(
    probe: Probe, config: Config, plan: Plan, m: cost_model.Measurements, deadline: Optional[float]
) -> None:
    """Start the process pool; the probe keeps working meanwhile unless that would slow it.

    Starting workers takes many short steps in this process, each needing the GIL. A
    probe thread computing in Python holds the GIL for up to the switch interval (5 ms)
    at a time, which stretches the start many times over; so GIL-bound work pauses while
    the pool starts, and waiting or GIL-free work goes on
    (tests/test_auto.py::test_work_that_waits_goes_on_while_a_cold_process_pool_starts).
    """
    if pool_costs.process_warm(config):
        return
    paused = m.cpu_fraction >= WAITING_RATE and not m.gil_free
    if paused:
        probe.stop()
    else:
        probe.limit = max(probe.limit, probe.read + 1_000_000)
        probe.resume()
    # The first start in a program times the warm pool's round trips (no-op chunks), and
    # this call's chunks, queued on the pool meanwhile, would be timed with them: read
    # 10 ms a round trip for 0.3 ms, and kept for the program. A call whose items paused
    # waits for the whole start then; otherwise it goes on once its probe is done.
    whole_start = paused and pool_costs.times_round_trips()
    ready = threading.Event()
    error: List[BaseException] = []

    def warm() -> None:
        try:
            pool_costs.warm_process_pool(config, plan.workers)
        except BaseException as exc:  # reported by the call that runs on the pool
            error.append(exc)
        finally:
            ready.set()

    threading.Thread(target=warm, name="autopar-warm", daemon=True).start()
    while not ready.wait(POLL) and not (probe.finished and not whole_start):
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
        yield probe.take_results(boundary)
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
