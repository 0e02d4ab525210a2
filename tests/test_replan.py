"""Re-planning within a call: a plan made on items unlike the rest changes course."""

from __future__ import annotations

import time

import pytest

from autopar import parallel
from autopar._auto import cost_model, memory, pool_costs, replan
from autopar._execute.worker import ChunkResult
from autopar.plan import Plan

CHEAP = cost_model.Measurements(wall=1e-6, cpu=1e-6, samples=64)
OVERHEADS = cost_model.Overheads(
    cores=2,
    thread_dispatch=50e-6,
    thread_start=100e-6,
    threads_started=0,
    process_dispatch=300e-6,
    process_start=0.0,  # a warm pool
)


@pytest.fixture
def fixed_overheads(monkeypatch):
    monkeypatch.setattr(pool_costs, "current", lambda config, **_: OVERHEADS)


def _watch(plan_kind, m, left=1000, workers=1, pool_ready=None):
    plan = Plan(plan_kind, workers, 1, "test", left)
    from autopar import _config

    return replan.Watch(plan, m, _config.current(), left, pool_ready)


def _chunk(items, wall, cpu):
    return ChunkResult([0] * items, wall, cpu, None)


def _twice(watch, items, wall, cpu):
    """Two readings alike: a switch rests on more than one (replan.CONFIRM)."""
    watch.on_chunk(_chunk(items, wall, cpu), items)
    assert not watch.switching()  # (one reading is not enough)
    watch.on_chunk(_chunk(items, wall, cpu), items)


def test_items_far_costlier_than_planned_switch_serial_to_processes(fixed_overheads):
    watch = _watch("serial", CHEAP)
    _twice(watch, 10, wall=0.02, cpu=0.02)  # 2 ms of computing each
    assert watch.switching()
    assert watch.switch.kind == "process" and watch.switch.n_items == 980


def test_items_far_costlier_and_waiting_switch_serial_to_threads(fixed_overheads):
    watch = _watch("serial", CHEAP)
    _twice(watch, 10, wall=0.05, cpu=0.0001)  # 5 ms waits
    assert watch.switch is not None and watch.switch.kind == "thread"


def test_costs_within_the_band_leave_the_plan_alone(fixed_overheads):
    watch = _watch("serial", CHEAP)
    for _ in range(50):
        watch.on_chunk(_chunk(1000, wall=1.5e-3, cpu=1.5e-3), 1000)  # 1.5 us: within 2x
    assert not watch.switching() and watch.done == 50_000


def test_a_short_reading_is_not_judged(fixed_overheads):
    watch = _watch("serial", CHEAP)
    watch.on_chunk(_chunk(1, wall=replan.MIN_OBSERVED / 2, cpu=replan.MIN_OBSERVED / 2), 1)
    assert not watch.switching()


def test_waiting_taken_for_computing_is_corrected_on_a_pool(fixed_overheads):
    # The first items read as computing 20 ms each (a busy machine's queue time); the
    # pool's chunks show they wait. The same wall time, another share: threads.
    computing = cost_model.Measurements(wall=0.02, cpu=0.02, samples=1)
    watch = _watch("process", computing, left=40, workers=2)
    _twice(watch, 2, wall=0.04, cpu=0.0002)
    assert watch.switch is not None and watch.switch.kind == "thread"


def test_one_stalled_chunk_does_not_move_the_call(fixed_overheads):
    # 10 ms waits on threads; one chunk held a full garbage collection in its thread
    # (76 ms of that thread's CPU): read alone, it calls for processes. The readings
    # after it are the waits again, and the plan stays.
    waits = cost_model.Measurements(wall=0.01, cpu=0.0001, samples=8)
    watch = _watch("thread", waits, left=200, workers=64)
    watch.on_chunk(_chunk(1, wall=0.089, cpu=0.076), 1)
    for _ in range(20):
        watch.on_chunk(_chunk(1, wall=0.0101, cpu=0.0001), 1)
    assert not watch.switching()
    # Readings that call for another kind but not the same one do not add up either.
    watch = _watch("serial", CHEAP)
    watch.on_chunk(_chunk(10, wall=0.02, cpu=0.02), 10)  # processes
    watch.on_chunk(_chunk(10, wall=0.05, cpu=0.0001), 10)  # threads
    assert not watch.switching()
    watch.on_chunk(_chunk(10, wall=0.05, cpu=0.0001), 10)  # threads again
    assert watch.switch is not None and watch.switch.kind == "thread"
    # A reading longer than any stall is judged alone.
    watch = _watch("serial", CHEAP)
    watch.on_chunk(_chunk(100, wall=replan.LONG_READING, cpu=replan.LONG_READING), 100)
    assert watch.switch is not None and watch.switch.kind == "process"


def test_the_function_is_pickled_once_over_the_readings_of_a_call(fixed_overheads, monkeypatch):
    # Serial items turn dear: processes come into question on the first reading, which
    # measures the function; the second, which makes the switch, does not again.
    from autopar import _config
    from autopar._auto import calibration

    dumped = []
    real = calibration.dump_parts
    monkeypatch.setattr(
        calibration, "dump_parts", lambda fn, keeper: dumped.append(fn) or real(fn, keeper)
    )
    unpriced = CHEAP._replace(function_priced=False)
    plan = Plan("serial", 1, 1, "test", 1000)
    watch = replan.Watch(plan, unpriced, _config.current(), 1000, None, len)
    _twice(watch, 10, wall=0.02, cpu=0.02)
    assert watch.switch is not None and watch.switch.kind == "process"
    assert dumped == [len] and watch.m.function_priced


def test_a_switch_needs_a_clear_margin(fixed_overheads):
    # Items twice as costly as planned, on a plan that stays best for them: no switch.
    slow = CHEAP._replace(wall=2e-3, cpu=2e-3)
    watch = _watch("process", slow, workers=2)
    watch.on_chunk(_chunk(5, wall=0.05, cpu=0.05), 5)  # 10 ms each: processes still
    assert not watch.switching()


def test_a_pool_up_beside_the_call_has_its_rest_judged_again_within_the_band(monkeypatch):
    # Items cost what they were planned on (2 ms computing: serial only while the pool
    # was cold); once the pool started beside the call is up, the rest moves to it.
    import threading

    computing = CHEAP._replace(wall=2e-3, cpu=2e-3)
    cold = OVERHEADS._replace(process_start=10.0)
    overheads = [cold]
    monkeypatch.setattr(pool_costs, "current", lambda config, **_: overheads[0])
    ready = threading.Event()
    watch = _watch("serial", computing, pool_ready=ready)
    watch.on_chunk(_chunk(5, wall=0.01, cpu=0.01), 5)
    assert not watch.switching()  # (within the band, and the pool is not up)
    ready.set()
    overheads[0] = OVERHEADS  # up: warm
    watch.on_chunk(_chunk(5, wall=0.01, cpu=0.01), 5)
    assert watch.switch is not None and watch.switch.kind == "process"
    assert watch.switch.n_items == 990 and "starting in the background is up" in watch.why


def test_readings_taken_while_a_pool_starts_beside_the_call_are_not_its_items_cost(
    monkeypatch,
):
    # The start takes cores (and the GIL, for its thread here) from the call: a serial
    # call read its Python items 2.3x dearer meanwhile and moved its rest to the pool
    # before it was up. Those readings are neither judged nor remembered.
    import threading

    computing = CHEAP._replace(wall=2e-3, cpu=2e-3)
    monkeypatch.setattr(
        pool_costs, "current", lambda config, **_: OVERHEADS._replace(process_start=10.0)
    )
    ready = threading.Event()
    watch = _watch("serial", computing, pool_ready=ready)
    for _ in range(3):  # (more than replan.CONFIRM readings, each 2.5x the plan's)
        watch.on_chunk(_chunk(5, wall=0.025, cpu=0.025), 5)
    assert not watch.switching()
    assert watch.observed() is None and watch.done == 15
    ready.set()
    watch.on_chunk(_chunk(5, wall=0.01, cpu=0.01), 5)  # up: judged (cold still here)
    assert watch.observed().wall == pytest.approx(2e-3)


def test_a_pool_up_that_would_not_win_leaves_the_plan_alone(fixed_overheads):
    import threading

    ready = threading.Event()
    ready.set()
    watch = _watch("serial", CHEAP, pool_ready=ready)  # near-free items: serial still
    watch.on_chunk(_chunk(1000, wall=1e-3, cpu=1e-3), 1000)
    assert not watch.switching() and watch.pool_ready is None  # (judged once)


def test_the_whole_call_is_remembered_beyond_the_band():
    # The probe's reading (64 items) gives way to the first call's beyond its band: the
    # probe's items and the rest's (192 here), each weighed by its items.
    learned = memory.LearnedCosts(CHEAP)
    learned.plans[(10, None)] = Plan("serial", 1, 10, "old", 10)
    memory.learn_from_call(learned, CHEAP._replace(wall=1e-3, cpu=1e-3, samples=192))
    assert learned.measurements.wall == pytest.approx((64 * 1e-6 + 192 * 1e-3) / 256)
    assert not learned.plans and learned.settled


def test_a_few_items_after_the_probe_cannot_swing_what_it_read():
    # 12 items left after 88 read by the probe, in one chunk stretched 100x (a thread
    # preempted while holding the GIL): held back, not learned ...
    probe = CHEAP._replace(samples=88)
    stretched = CHEAP._replace(wall=1e-4, cpu=1e-6, samples=12)
    learned = memory.LearnedCosts(probe)
    memory.learn_from_call(learned, stretched)
    assert learned.measurements is probe
    memory.learn_from_call(learned, CHEAP._replace(samples=2000))  # ... a call like the probe
    assert learned.measurements is probe and learned.settled
    # A call whose own items outnumber the probe's is its own confirmation.
    learned = memory.LearnedCosts(probe)
    memory.learn_from_call(learned, stretched._replace(samples=100))
    assert learned.measurements.wall > 10 * CHEAP.wall
    # Or one the next call reads alike.
    learned = memory.LearnedCosts(probe)
    memory.learn_from_call(learned, stretched)
    memory.learn_from_call(learned, stretched._replace(samples=100))
    assert learned.measurements.wall > 10 * CHEAP.wall


def test_a_wrapper_started_from_shared_costs_writes_back_what_it_learns():
    # parallel(fn) made anew for every call starts from the shared entry: a call that
    # reads new costs must leave them there for the next wrapper, not plan it on the old.
    shared = memory.LearnedCosts(CHEAP, settled=True)
    copy = memory.LearnedCosts(CHEAP, True, shared)
    memory.learn_from_call(copy, CHEAP._replace(wall=1e-3, cpu=1e-3))
    memory.learn_from_call(copy, CHEAP._replace(wall=1e-3, cpu=1e-3))  # (confirmed)
    assert shared.measurements.wall == copy.measurements.wall == 1e-3


def test_short_calls_are_pooled_and_one_far_cheaper_counts_at_once():
    # Calls of 0.1 ms of work each are timer noise alone: dearer readings are pooled
    # until they add up to a millisecond ...
    learned = memory.LearnedCosts(CHEAP, settled=True)
    dearer = CHEAP._replace(wall=1e-5, cpu=1e-5, samples=10)
    for _ in range(9):
        memory.learn_from_call(learned, dearer)
    assert learned.measurements is CHEAP
    memory.learn_from_call(learned, dearer)  # (1 ms in all: read twice, as any call)
    memory.learn_from_call(learned, CHEAP._replace(wall=1e-5, cpu=1e-5, samples=100))
    assert learned.measurements.wall == pytest.approx(1e-5)
    # ... a reading far cheaper than what was learned, which noise cannot make, counts at
    # once (a probe stalled by the VM read near-free items as 80 us).
    misread = CHEAP._replace(wall=8e-5, cpu=8e-5)
    learned = memory.LearnedCosts(misread)
    memory.learn_from_call(learned, CHEAP._replace(wall=3e-7, cpu=3e-7, samples=100))
    assert learned.measurements.wall < 8e-5 / 2


def test_one_call_off_the_learned_costs_is_not_remembered_until_the_next_agrees():
    # (Calls of 2,000 items: enough work that none is pooled with the next.)
    call = CHEAP._replace(samples=2000)
    learned = memory.LearnedCosts(CHEAP)
    learned.plans[(10, None)] = Plan("serial", 1, 10, "old", 10)
    memory.learn_from_call(learned, call._replace(wall=1.5e-6, cpu=1.5e-6))  # (the probe's)
    assert learned.measurements is CHEAP and learned.plans  # within 2x: kept
    # A whole call read the costs: one call far off them (a busy moment) is held back...
    memory.learn_from_call(learned, call._replace(wall=1e-3, cpu=1e-3))
    assert learned.measurements is CHEAP and learned.plans
    # ... and dropped when the next reads as before.
    memory.learn_from_call(learned, call)
    memory.learn_from_call(learned, call._replace(wall=1e-3, cpu=1e-3))
    assert learned.measurements is CHEAP
    # Two calls off the band in a row, alike: the items changed.
    memory.learn_from_call(learned, call._replace(wall=1.2e-3, cpu=1.2e-3))
    assert learned.measurements.wall == 1.2e-3 and not learned.plans
    # Two calls off the band but unlike each other confirm nothing.
    memory.learn_from_call(learned, call._replace(wall=1e-1, cpu=1e-1))
    memory.learn_from_call(learned, call._replace(wall=1e-5, cpu=1e-5))
    assert learned.measurements.wall == 1.2e-3


def _waits_after_300(x):
    if x >= 300:
        time.sleep(0.005)
    return x


@pytest.fixture
def probe_reads_cheap(monkeypatch):
    """The probe's reading, whatever it saw: near-free computing items (as 300 cheap
    items in front of the waits read on a quiet machine)."""
    from autopar._auto import calibration

    monkeypatch.setattr(calibration, "measure", lambda probe, rates: CHEAP)
    monkeypatch.setattr(calibration, "without_the_costliest_few", lambda probe, rates: None)


def test_a_stream_that_turns_to_waiting_is_replanned_within_the_call(probe_reads_cheap):
    # A generator is sampled as a prefix: near-free items give a serial plan, then 100
    # waits of 5 ms follow (0.5 s serially). The call re-plans the rest onto threads.
    # (timeout=: the probe runs on helper threads and stops where the costs are known;
    # without one, a caller held up in an item lets the probe's threads read on.)
    f = parallel(_waits_after_300)
    assert f.map((x for x in range(400)), timeout=60) == list(range(400))
    plan = f.last_plan
    assert plan.kind == "thread", plan.explain()
    assert "re-planned after" in plan.reason and "serial plan" in plan.reason, plan.reason


def test_results_stay_in_order_across_a_replan_on_imap(probe_reads_cheap):
    f = parallel(_waits_after_300)
    assert list(f.imap((x for x in range(400)), timeout=60)) == list(range(400))
    assert "re-planned after" in f.last_plan.reason


def test_the_waits_after_a_cheap_start_end_on_threads_however_the_probe_read_it():
    f = parallel(_waits_after_300)
    assert list(f.imap(x for x in range(400))) == list(range(400))
    assert f.last_plan.kind == "thread", f.last_plan.explain()


def test_a_replanned_call_is_remembered_as_the_whole_call_cost(probe_reads_cheap):
    f = parallel(_waits_after_300)
    f.map((x for x in range(400)), timeout=60)
    learned = f._self_state.learned
    assert learned.measurements.wall > 10 * CHEAP.wall  # the waits, not the cheap start


class _QueuedFor:
    """A queue clock by which the calling thread sat queued for a core ``share`` of each
    chunk's wall time (a busy machine)."""

    def __init__(self, share):
        self.share = share

    def after_item(self, wall):
        return self.share * wall


def test_a_serial_chunks_time_queued_for_a_core_is_not_its_items_cost(fixed_overheads, monkeypatch):
    # Items of 1 ms of computing, planned serial; on a busy machine each chunk sat queued
    # for a core three quarters of its wall time. Counted as the items' cost (or as their
    # CPU), they would read 4 ms each and move the rest to processes; they are 1 ms.
    from autopar._auto import stolen_time

    monkeypatch.setattr(stolen_time, "wanted", lambda cpu: cpu)  # (no host here)
    m = cost_model.Measurements(wall=1e-3, cpu=1e-3, samples=64)
    watch = _watch("serial", m)
    watch._queue = _QueuedFor(0.75)
    for _ in range(4):
        watch.on_chunk(_chunk(10, wall=0.04, cpu=0.01), 10)
    assert not watch.switching()
    seen = watch.observed()
    assert seen.wall == pytest.approx(1e-3) and seen.cpu == pytest.approx(1e-3)


class _Clock:
    """A perf_counter or process_time the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _clocks(monkeypatch):
    """The watch's wall and CPU clocks, on a GIL build, with no host taking CPU time."""
    from autopar._auto import stolen_time

    wall, cpu = _Clock(), _Clock()
    monkeypatch.setattr(replan, "perf_counter", wall)
    monkeypatch.setattr(replan, "process_time", cpu)
    monkeypatch.setattr(replan._cpus, "gil_enabled", lambda: True)
    # (Else a share the host took before the test, read by stolen_time, scales every
    # item's CPU time up: 60 us read 84 us in a full run on a VM the host shared.)
    monkeypatch.setattr(stolen_time, "wanted", lambda cpu: cpu)
    return wall, cpu


@pytest.mark.parametrize(("gil_held", "read"), [(0.95, 300e-6), (0.3, 1.2e-3)])
def test_waits_read_on_threads_count_only_where_the_gil_was_not_busy(
    fixed_overheads, monkeypatch, gil_held, read
):
    # Items of 60 us of Python and 240 us of waiting, on 8 threads, read 1.2 ms each:
    # their threads queued for a GIL the process held 95% of the time (that queue reads
    # as waiting, and grows with every thread added), or the waits did grow (30%).
    wall_clock, cpu_clock = _clocks(monkeypatch)
    planned = cost_model.Measurements(wall=300e-6, cpu=60e-6, samples=64)
    watch = _watch("thread", planned, left=2000, workers=8)
    for _ in range(3):
        span = 10 * 1.2e-3 / 8  # (10 items on 8 threads)
        wall_clock.now += span
        cpu_clock.now += gil_held * span
        watch.on_chunk(_chunk(10, wall=10 * 1.2e-3, cpu=10 * 60e-6), 10)
    # (What later calls plan on: 1.2 ms of waiting calls for more threads than 8.)
    learned = replan.whole_call([watch])
    assert learned is not None and learned.cpu == pytest.approx(60e-6)
    assert learned.wall == pytest.approx(read)
    assert watch.m.wall == pytest.approx(read)  # (what the watch judges the rest by)
    more = cost_model.best_threads(learned, OVERHEADS, 2000)[1]
    assert (more > 8) is (read > 300e-6)


def test_a_busy_gil_does_not_hide_items_that_compute(fixed_overheads, monkeypatch):
    # The items planned as waiting compute instead (their threads' CPU clocks say so).
    # Read with their queue for the GIL, they still looked like waiting (16 ms of wall
    # for 2 ms of CPU), and the call stayed on threads; the queue left out, they compute,
    # and the call leaves threads.
    wall_clock, cpu_clock = _clocks(monkeypatch)
    planned = cost_model.Measurements(wall=300e-6, cpu=60e-6, samples=64)
    watch = _watch("thread", planned, left=2000, workers=8)
    for _ in range(3):
        wall_clock.now += 10 * 2e-3
        cpu_clock.now += 10 * 2e-3
        watch.on_chunk(_chunk(10, wall=10 * 16e-3, cpu=10 * 2e-3), 10)
    assert watch.switch is not None and watch.switch.kind in ("serial", "process")
    assert watch.observed().wall == pytest.approx(2e-3)
