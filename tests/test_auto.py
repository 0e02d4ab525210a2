"""kind="auto" decides each trap the right way (decisions only: timing is for benchmarks)."""

import math
import sys
import threading
import time
import types

import pytest

from autopar import _config, parallel
from autopar._auto import cost_model, memory, planner, pool_costs
from autopar._router import FunctionState
from tests import helpers as h
from tests.test_cost_model import MACHINE

# What a first call learns of near-free items (shipping them costs more than running them).
NEAR_FREE = cost_model.Measurements(
    wall=1e-6, cpu=1e-6, samples=64, ship_caller=1e-5, ship_worker=1e-5
)

MULTICORE = _config.cpu_count() >= 2


def test_tiny_items_run_serially_and_correctly():
    f = parallel(h.square)
    assert f.map(range(20_000)) == [x * x for x in range(20_000)]
    assert f.last_plan.kind == "serial"
    assert f.map(range(20_000)) == [x * x for x in range(20_000)]
    assert "remembered" in f.last_plan.reason


def test_waiting_work_gets_threads_sized_by_waiting_not_cores():
    f = parallel(h.nap)
    assert f.map([0.02] * 40) == [0.02] * 40
    assert f.last_plan.kind == "thread", f.explain()
    # (The first call's plan covers only the items its probe left, as few as a handful
    # on a busy machine: the next call plans all 40.)
    h.reset_peak()
    assert f.map([0.02] * 40) == [0.02] * 40
    assert f.last_plan.workers > 2 * _config.cpu_count(), f.explain()
    assert h.peak > 2 * _config.cpu_count()  # the waits really overlapped


def test_many_waiting_threads_busy_with_hand_offs_do_not_make_items_look_cheap():
    # 100+ threads waking from 10 ms naps keep the process ~0.7 busy with their own
    # hand-offs; that is not items slowing each other, and each nap still takes 10 ms.
    # What must hold is what the next call plans on: a probe that misread the naps (a
    # busy machine can) is corrected by the rest of the call, watched (autopar._auto.
    # replan), so the learned cost and the next plan are right either way.
    for _ in range(3):
        memory.forget(h.nap)  # (each wrapper measures, with the probe's threads started)
        f = parallel(h.nap)
        f.map([0.01] * 200)
        f.map([0.01] * 200)
        assert f.last_plan.measured["wall"] > 0.005, f.explain()
        assert f.last_plan.kind == "thread", f.explain()


def test_part_waiting_items_go_to_threads():
    # 5 ms sleeps, then 1 ms of Python. How many threads is a benchmark row ("mixed" in
    # benchmarks/workloads.py): four threads read 0.41-0.47 of a core on a VM whose host
    # took a third of its time, against about 0.6 on a quiet one, and the probe rightly
    # grows on such a reading. The rule that keeps it at four where the items' own clocks
    # say they will be busy is tested on its figures in tests/test_calibration.py.
    f = parallel(h.nap_then_burn)
    f.map([1] * 200)
    assert f.last_plan.kind == "thread", f.explain()


def test_cheap_first_item_then_expensive_ones_still_overlap():
    # The classic trap: sleep(0) first; a choice from item 0 alone would be serial.
    h.reset_peak()
    f = parallel(h.nap)
    assert f.map([0, 0.3, 0.3, 0.3, 0.3, 0.3]) == [0, 0.3, 0.3, 0.3, 0.3, 0.3]
    assert h.peak >= 4
    assert f.last_plan.kind == "thread"


def test_growing_costs_overlap():
    h.reset_peak()
    f = parallel(h.nap)
    f.map([i / 200 for i in range(30)])  # 0 .. 145 ms, growing along the input
    assert h.peak >= 4
    assert f.last_plan.kind == "thread"


@pytest.mark.skipif(not MULTICORE, reason="processes only pay with two or more cores")
def test_python_work_goes_to_processes_and_each_item_runs_once(tmp_path, monkeypatch):
    # Threads are out of this question (capped at one: the probe does not test two). On
    # a VM whose host takes a third of its time or more, two threads of Python code can
    # read 1.3-1.6x one, and that reading is a benchmark row (the "cpu_2ms" and "medium"
    # rows of benchmarks/STABILITY.md), not what this test is about.
    monkeypatch.setenv("AUTOPAR_MAX_THREADS", "1")
    log = tmp_path / "ran.txt"
    f = parallel(h.burn_and_log)
    # 1.2 s: a cold pool's start (0.15 s or more) pays for the items the probe leaves,
    # however many of them it ran (up to 64, 0.3 s)
    n = 240
    assert f.map([(str(log), i, 5) for i in range(n)]) == list(range(n))
    assert f.last_plan.kind == "process", f.explain()
    # Sampled items count as done: every item ran exactly once, in the probe or a worker.
    assert sorted(int(line) for line in log.read_text().split()) == list(range(n))
    assert f.last_plan.measured["cpu_fraction"] > 0.5


def test_large_arguments_stay_out_of_processes(no_pilot):
    buffers = [bytes(1 << 20)] * 100
    f = parallel(h.length)
    assert f.map(buffers) == [1 << 20] * 100
    assert f.last_plan.kind == "serial", f.explain()
    assert f.last_plan.measured["ship_to_process"] > f.last_plan.measured["wall"]


def test_unpicklable_items_make_auto_avoid_processes():
    lock = threading.Lock()
    f = parallel(h.burn_holding)
    f.map([(lock, 3)] * 40)
    assert f.last_plan.kind != "process"
    assert "process" not in f.last_plan.predicted


def test_memory_is_used_then_refreshed_when_the_cost_drifts(monkeypatch, no_pilot):
    f = parallel(h.tunable)
    with monkeypatch.context() as patch:
        # (A stall inside the second call read as drift once, in 20 suite runs, and the
        # third call measured: drift is judged from the dear calls on.)
        _stalls_unjudged(patch)
        f.map([0.0] * 50)
        assert "measuring" in f.last_plan.reason
        f.map([0.0] * 50)
        assert "remembered" in f.last_plan.reason
    f.map([0.05] * 12)  # far dearer than remembered
    third = f.last_plan.reason
    f.map([0.05] * 12)
    # Either the serial path flagged the memory stale and this call measures again, or
    # (the first call read the near-free items dear enough that the third was planned
    # and watched) the third re-planned within itself, and this one plans on what it read.
    assert "measuring" in f.last_plan.reason or "re-planned" in third, (third, f.explain())
    assert f.last_plan.kind == "thread", f.explain()


def test_a_pause_on_a_short_call_does_not_mark_its_costs_stale():
    # 100 items remembered at 0.1 us (10 us a call): a pause of the scheduler of a few
    # hundred microseconds is 40 times that, and marked the memory stale (the next call
    # measures again, off the fast path). A call of 2 ms stands for items that really
    # turned dearer.
    from autopar._auto import cost_model

    m = cost_model.Measurements(wall=1e-7, cpu=1e-7, samples=64)
    learned = memory.LearnedCosts(m)
    memory.check_drift(learned, 1e-7, 0.5e-3, 100)
    assert not learned.stale
    memory.check_drift(learned, 1e-7, 2e-3, 100, stalled=1.9e-3)  # (held off a core)
    assert not learned.stale
    memory.check_drift(learned, 1e-7, 2e-3, 100)
    assert learned.stale


def test_a_serial_call_held_off_its_core_does_not_mark_its_costs_stale(monkeypatch):
    # As on the fast path: time the VM or a busy core held the caller's thread off is not
    # the items' cost (here all of it, as a thread that never blocked would read).
    memory.keep(h.tunable, FunctionState(), NEAR_FREE)
    f = parallel(h.tunable)
    with monkeypatch.context() as patch:
        patch.setattr(planner, "held_off_since", lambda before, wall: wall)
        f.map([0.005] * 20)  # a size not planned before: the planner's serial path
    assert "at any call size" in f.last_plan.reason
    assert not f._self_state.learned.stale
    f.map([0.005] * 30)
    assert f._self_state.learned.stale


def test_a_new_wrapper_of_the_same_function_starts_from_what_was_learned(no_pilot):
    # joblib's inline style, parallel(fn).map(items) at every call, measured every time:
    # about 0.5 ms a call on near-free items.
    parallel(h.square).map(range(200))
    f = parallel(h.square)
    assert f.map(range(200)) == [x * x for x in range(200)]
    assert "remembered" in f.last_plan.reason, f.explain()
    memory.forget(h.square)
    g = parallel(h.square)
    g.map(range(200))
    assert "measuring" in g.last_plan.reason, g.explain()
    # Each wrapper plans with its own options from the shared costs.
    parallel(h.nap).map([0.01] * 40)
    capped = parallel(h.nap, workers=4)
    capped.map([0.01] * 40)
    assert "remembered" in capped.last_plan.reason, capped.explain()
    assert capped.last_plan.kind == "thread" and capped.last_plan.workers == 4
    # Costs another wrapper found stale are measured again.
    # (Learned as near-free, as in the fast-path test below: measured on a busy machine,
    # the near-free items can read dear enough that the next call is watched, and it then
    # re-plans and learns the new costs instead of flagging them stale.)
    memory.keep(h.tunable, FunctionState(), NEAR_FREE)
    stale = parallel(h.tunable)
    stale.map([0.0] * 50)  # remembered: serial at any size
    stale.map([0.05] * 12)  # far dearer than remembered: flags that memory stale
    fresh = parallel(h.tunable)
    fresh.map([0.05] * 12)
    assert "measuring" in fresh.last_plan.reason, fresh.explain()
    # A lambda made anew is another function, maybe another closure: nothing is shared.
    for base in (1, 2):
        lam = parallel(lambda x, b=base: x + b)
        assert lam.map(range(200)) == [x + base for x in range(200)]
        assert "measuring" in lam.last_plan.reason, lam.explain()


def test_results_in_order_for_imap_and_all_for_unordered():
    f = parallel(h.nap)
    items = [0.03, 0.0, 0.02, 0.0, 0.01] * 4
    assert list(f.imap(items)) == items
    g = parallel(h.nap)
    assert sorted(g.imap_unordered(items)) == sorted(items)


def test_exception_during_calibration_keeps_type_and_index():
    f = parallel(h.nap)
    with pytest.raises(TypeError) as info:
        f.map([0.0, 0.0, "soon", 0.0])
    assert info.value.autopar_index == 2


def test_explain_answers_why():
    f = parallel(h.nap)
    f.map([0.02] * 20)
    text = f.explain()
    assert "thread" in text and "waiting" in text
    assert "predicted time for this call" in text and "<- chosen" in text
    assert "serial" in text


def test_cheap_items_are_measured_in_the_callers_own_thread(no_pilot):
    # No hand-off to a helper thread: a first call on cheap items costs about their work.
    # (Helper threads may still join later: a VM that stalls the caller a few
    # milliseconds inside an item makes it read as waiting, and an item in the caller's
    # hands when the costs are known lets them take the rest. No helper can start before
    # the caller has taken the first item. Nor is the plan asserted: a stall inside a
    # batch of near-free items can make all of them read dear, and a warm pool then
    # wins the rest of so short a call; that reading is the "tiny" row's to judge.)
    f = parallel(h.thread_id)
    assert f.map(range(300))[0] == threading.get_ident()


def test_with_a_timeout_the_caller_only_watches():
    # The caller must stay free to raise the timeout, so calibration runs elsewhere.
    f = parallel(h.thread_id, timeout=30)
    assert threading.get_ident() not in set(f.map(range(5)))


def test_a_slow_item_in_the_callers_hands_holds_up_no_other_item():
    # Item 0 runs in the caller and returns True only if all other items start meanwhile.
    gate = h.Gate(12)
    f = parallel(gate)
    assert f.map(range(12)) == [True] * 12


def test_a_failure_inside_a_batch_of_cheap_items_names_its_own_index():
    f = parallel(h.square)
    items = list(range(500))
    items[45] = "x"  # str * str: TypeError, in the probe's batch of items 31..62
    with pytest.raises(TypeError) as info:
        f.map(items)
    assert info.value.autopar_index == 45


def test_later_calls_on_cheap_items_run_directly_and_still_name_a_failing_item():
    f = parallel(h.square)
    f.map(range(1000))
    assert f.map(range(50)) == [x * x for x in range(50)]
    # Run whole by the pilot, then in the calling thread; or (a helper thread slow to
    # start) measured, then on the planner's serial fast path.
    reason = f.last_plan.reason
    assert "in the calling thread" in reason or "at any call size" in reason, reason
    items = list(range(50))
    items[17] = "x"
    with pytest.raises(TypeError) as info:
        f.map(items)
    assert info.value.autopar_index == 17
    if sys.version_info >= (3, 11):  # (add_note arrived in 3.11; the index is set on all)
        assert "autopar: raised by item 17 (serial worker)" in info.value.__notes__
    else:
        assert not hasattr(info.value, "__notes__")


def test_one_item_runs_in_the_caller():
    f = parallel(h.square)
    assert f.map([3]) == [9]
    assert f.last_plan.kind == "serial"


def test_a_slow_item_after_a_run_of_cheap_ones_holds_no_batch_hostage():
    # Near-free items are probed in batches; the sleeps after them must still overlap
    # instead of queueing behind each other in one batch.
    h.reset_peak()
    f = parallel(h.nap_unless_zero)
    assert f.map([0] * 40 + [0.2] * 8) == [0] * 40 + [0.2] * 8
    assert h.peak >= 4, f.explain()


class Scaler:
    def __init__(self, k):
        self.k = k

    @parallel
    def scale(self, x):
        return self.k * x


def _on_fast_path(f, monkeypatch, items):
    """f.map(items) served by the serial fast path: the usual path (the planner, which
    every call of kind="auto" that leaves the fast path enters) is made to fail."""
    with monkeypatch.context() as patch:
        patch.setattr(planner, "start", _unexpected)
        return f.map(items)


def _unexpected(call, state):
    learned = state.learned
    why = "nothing learned" if learned is None else f"stale={learned.stale}, {learned.measurements}"
    raise AssertionError(f"the call left the serial fast path ({why}; {state.last_plan})")


def _stalls_unjudged(patch):
    """No call is judged for drift: a stall of a loaded machine inside a call of near-free
    items (milliseconds, where the items take microseconds) reads as drift and sends the
    memory back to measuring. For tests whose subject is the fast path, not drift."""
    patch.setattr(memory, "DRIFT_FLOOR", math.inf)


def test_later_calls_on_cheap_items_take_the_serial_fast_path(monkeypatch, no_pilot):
    _stalls_unjudged(monkeypatch)
    f = parallel(h.square)
    f.map(range(100))  # measured: serial at any size
    # Remembered: opens the serial fast path for 100 items. (A first call whose core the
    # VM stalled reads near-free items dearer; whole calls then correct what it learned,
    # two calls alike in a row, and the path opens after them.)
    for _ in range(8):
        f.map(range(100))
        if "at any call size" in f.last_plan.reason:
            break
    assert _on_fast_path(f, monkeypatch, list(range(100))) == [x * x for x in range(100)]
    assert "at any call size" in f.last_plan.reason and f.last_plan.n_items == 100
    assert f.starmap([(3,)] * 100) == [9] * 100
    items = list(range(100))
    items[71] = "x"
    with pytest.raises(TypeError) as info:
        _on_fast_path(f, monkeypatch, items)
    assert info.value.autopar_index == 71


def test_serial_fast_path_yields_to_settings_and_other_sizes(monkeypatch):
    _stalls_unjudged(monkeypatch)
    memory.keep(h.square, FunctionState(), NEAR_FREE)  # (as in the test below)
    f = parallel(h.square)
    f.map(range(100))  # remembered: opens the serial fast path for 100 items
    monkeypatch.setenv("AUTOPAR_KIND", "thread")  # the environment changed: obeyed at once
    f.map(range(100))
    assert f.last_plan.kind == "thread"
    monkeypatch.delenv("AUTOPAR_KIND")
    f.map(range(100), timeout=30)  # an argument: the usual path, which can time out
    assert "at any call size" not in f.last_plan.reason
    # A size not planned before: planned, then the fast path has it too. (Seeded again:
    # on a loaded machine the calls above can have read the items dearer, and this test
    # is about sizes, not readings.)
    memory.keep(h.square, f._self_state, NEAR_FREE)
    f.map(range(150))
    assert f.last_plan.n_items == 150
    assert _on_fast_path(f, monkeypatch, range(150)) == [x * x for x in range(150)]


def test_serial_fast_path_runs_each_instances_own_method(monkeypatch):
    # The fast path belongs to the method, shared by every instance: it must call the
    # instance it was reached through.
    _stalls_unjudged(monkeypatch)
    a, b = Scaler(2), Scaler(3)
    # (Learned as near-free, not measured: a first call on a busy machine can read
    # near-free items dear enough that no fast path opens.)
    method = Scaler.__dict__["scale"]
    memory.keep(method.__wrapped__, method._self_state, NEAR_FREE)
    a.scale.map(range(100))  # remembered: opens the fast path for 100 items
    assert _on_fast_path(a.scale, monkeypatch, range(100)) == [2 * x for x in range(100)]
    assert _on_fast_path(b.scale, monkeypatch, range(100)) == [3 * x for x in range(100)]


def test_serial_fast_path_notices_when_items_turn_costly(monkeypatch, no_pilot):
    # Learned as near-free: a first call of 20 near-free items, measured on a busy
    # machine, can read them dear enough that no fast path opens, and this test is about
    # the fast path.
    memory.keep(h.tunable, FunctionState(), NEAR_FREE)
    f = parallel(h.tunable)
    with monkeypatch.context() as patch:  # (drift is judged from the next call on)
        _stalls_unjudged(patch)
        f.map([0.0] * 20)  # remembered: serial at any size, opens the fast path for 20 items
    # Same size, far dearer: the fast path runs it and flags the memory stale.
    assert len(_on_fast_path(f, monkeypatch, [0.01] * 20)) == 20
    f.map([0.01] * 20)
    assert "measuring" in f.last_plan.reason
    assert f.last_plan.kind == "thread"


@pytest.mark.skipif(not MULTICORE, reason="processes only pay with two or more cores")
@pytest.mark.timeout(120)
def test_a_cold_pool_too_slow_for_this_call_starts_for_the_next(monkeypatch):
    # ~60 ms of Python code: a warm pool halves it, a cold start (0.15 s or more) does not
    # pay. These calls run without it until what they missed pays for a start; the pool
    # then starts in the background, and a later call runs on it.
    import autopar
    from autopar._execute import registry

    autopar.shutdown()
    # Threads are out of this question: on a busy machine two threads of Python can read
    # 1.1x one (a decision that may rightly go either way), and a thread plan then stands
    # in for the serial one whose pool start this test follows.
    monkeypatch.setenv("AUTOPAR_MAX_THREADS", "1")
    # (Pool costs as measured on a quiet machine: earlier tests may have measured them busy.)
    monkeypatch.setitem(pool_costs._measured, "process_start", 0.15)
    monkeypatch.setitem(pool_costs._measured, "process_dispatch", 3e-4)
    monkeypatch.setitem(pool_costs._measured, "process_worker_start", 4e-3)
    monkeypatch.setitem(pool_costs._measured, "process_handoff", 7e-5)
    monkeypatch.setattr(pool_costs, "_owed", [0.0])
    f = parallel(h.burn)
    items = [2] * 30
    f.map(items)
    assert f.last_plan.kind == "serial", f.explain()
    assert "starting one" in f.last_plan.reason, f.explain()
    assert not registry.warming() and registry.peek("process") is None
    for _ in range(20):  # (each saves about 30 ms of the start's 150 ms)
        f.map(items)
        if registry.warming() or registry.peek("process") is not None:
            break
    deadline = time.monotonic() + 60
    while registry.warming() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool_costs.process_warm(_config.current())
    f.map(items)
    assert f.last_plan.kind == "process", f.explain()


def _start_decisions(monkeypatch, items, calls, cores=2):
    """What _start_for_later does over ``calls`` alike calls of ``items`` 2 ms items of
    Python code, on ``cores`` cores, a cold start of 0.15 s: (now, prime) per start, and
    the result of each call."""
    from autopar._auto import cost_model, pool_costs
    from autopar.plan import Plan

    started = []
    ready = threading.Event()  # (never set: the pool stays starting)

    def start(config, workers, *, prime, after, now=False):
        started.append((now, prime))
        return ready

    monkeypatch.setattr(pool_costs, "warm_in_background", start)
    monkeypatch.setattr(pool_costs, "starting", lambda: ready if started else None)
    monkeypatch.setattr(pool_costs, "_owed", [0.0])
    m = cost_model.Measurements(wall=2e-3, cpu=2e-3, samples=8)
    overheads = cost_model.Overheads(
        cores=cores,
        thread_dispatch=50e-6,
        thread_start=100e-6,
        threads_started=0,
        process_dispatch=3e-4,
        process_start=0.15,
    )
    plan = Plan("serial", 1, 1, "test", items, predicted={"serial": items * 2e-3})
    returned = [
        planner._start_for_later(m, _config.Config(), plan, overheads, h.burn) for _ in range(calls)
    ]
    return started, returned


def test_workers_for_later_calls_start_beside_a_call_that_outlasts_their_start(monkeypatch):
    # 3000 items (6 s) outlast the start many times over: it starts now, and the call's
    # rest can move to the pool once its workers are up.
    started, returned = _start_decisions(monkeypatch, 3000, 1)
    assert started == [(True, h.burn)]
    ended, ready, note = returned[0]
    assert ended is not None and ready is not None and "beside this call" in note


def test_short_calls_start_the_pool_once_their_missed_savings_pay_for_it(monkeypatch):
    # 30 items (60 ms, about 30 ms on a warm pool of 2): one call saves a fifth of the
    # 0.15 s start, so the pool starts, after its call, at the fifth or sixth such call.
    started, returned = _start_decisions(monkeypatch, 30, 8)
    assert started == [(False, h.burn)]
    first = next(i for i, later in enumerate(returned) if later.ended is not None)
    assert 3 <= first <= 6, first
    assert all(later.ready is None for later in returned[:first])
    # The reason says how far the calls got, and when the pool starts.
    assert "would have saved" in returned[0].note and "after this call" in returned[first].note
    # The calls after it meet the pool starting: they go on, and move once it is up.
    assert all(later.ended is None and later.ready is not None for later in returned[first + 1 :])


def test_a_short_call_with_idle_cores_beside_it_starts_the_pool_at_once(monkeypatch):
    # 8 cores, and only this call running: the start gets cores of its own, so the first
    # short call starts it beside itself, not once missed savings pay for it. With the
    # cores busy (7 tasks running), short calls wait for that as on 2 cores (two calls of
    # 60 ms save about 100 ms of the 150 ms start).
    from autopar import _cpus

    monkeypatch.setattr(_cpus, "running_now", lambda: 1)
    started, returned = _start_decisions(monkeypatch, 30, 3, cores=8)
    assert started == [(True, h.burn)]
    assert returned[0].ready is not None and "beside this call" in returned[0].note
    monkeypatch.setattr(_cpus, "running_now", lambda: 7)
    started, returned = _start_decisions(monkeypatch, 30, 2, cores=8)
    assert started == [] and all(later.ready is None for later in returned)
    monkeypatch.setattr(_cpus, "running_now", lambda: None)  # the system does not say
    started, returned = _start_decisions(monkeypatch, 30, 2, cores=8)
    assert started == []


@pytest.mark.timeout(120)
def test_work_that_waits_goes_on_while_a_cold_process_pool_starts(monkeypatch):
    # Processes rarely win for waiting work, so the plan is forced here; the pool start
    # is slowed to 1.5 s. The probe must keep running items meanwhile, not sit idle.
    import dataclasses
    import re

    import autopar
    from autopar._auto import planner, pool_costs

    autopar.shutdown()
    warm = pool_costs.warm_process_pool

    def slow_warm(config, workers, record_start=True):
        time.sleep(1.5)
        return warm(config, workers, record_start=False)

    decide = planner._decide
    monkeypatch.setattr(pool_costs, "warm_process_pool", slow_warm)
    monkeypatch.setattr(
        planner, "_decide", lambda *a: dataclasses.replace(decide(*a), kind="process", workers=2)
    )
    f = parallel(h.nap)
    items = [0.2] * 300
    assert f.map(items) == items
    # Measuring alone reads at most 256 items (twice the thread cap); the rest ran while
    # the pool started, on the probe's threads.
    found = re.search(r"(all|the first) (\d+) items ran while measuring", f.last_plan.reason)
    assert found and int(found.group(2)) > 256, f.explain()


def test_a_first_start_times_the_pool_before_the_call_queues_chunks_on_it(monkeypatch):
    # The first start in a program times no-op round trips on the new pool; chunks of the
    # call that started it, queued there meanwhile, were timed with them (10 ms read for
    # 0.3 ms), and every later plan in the program took processes to be that dear.
    import dataclasses

    import autopar
    from autopar._auto import pool_costs
    from autopar._execute import registry

    autopar.shutdown()
    # The thread pool's costs are timed once per program by the same helper, on the first
    # call that needs them: timed here, before the spy, which is to see the process pool's.
    pool_costs.thread_costs()
    in_use: list = []
    timed = pool_costs._median_time

    def spy(round_trip, rounds=11):
        in_use.append(sum(registry._users.values()))
        return timed(round_trip, rounds)

    decide = planner._decide
    monkeypatch.setattr(pool_costs, "times_round_trips", lambda: True)
    monkeypatch.setattr(pool_costs, "_median_time", spy)
    # (Threads capped at one: the probe does not test two. Read GIL-free on a busy VM, the
    # items would not pause the probe, and the pool would start in the background.)
    monkeypatch.setenv("AUTOPAR_MAX_THREADS", "1")
    monkeypatch.setattr(
        planner, "_decide", lambda *a: dataclasses.replace(decide(*a), kind="process", workers=2)
    )
    items = [5.0] * 40  # computing items: the probe pauses while the pool starts
    f = parallel(h.burn)
    assert len(f.map(items)) == len(items)
    assert f.last_plan.kind == "process"
    assert in_use == [0]


@pytest.mark.skipif(not MULTICORE, reason="the thread test needs two cores")
def test_a_cold_programs_first_call_runs_the_thread_test():
    # The watcher held the look lock while it waited for the GIL, which the caller and
    # a probe thread, both computing, kept from it for the rest of the budget: half of
    # the fresh programs measured no thread speed-up and ran their first call serially,
    # after running every item it was allowed to while measuring.
    from tests.conftest import run_python

    script = """
        from autopar import parallel
        from tests import helpers as h
        if __name__ == "__main__":
            f = parallel(h.burn)
            f.map([2] * 400)
            print(f.last_plan.reason)
    """
    # Starved, calibration looked no more and ran every item; it knows after ~15 here.
    # (On a VM whose host took 40% of its time, 4 programs of 96 knew only after about
    # 0.8 s, all 200 items: slow, not starved. 400 items tell the two apart.)
    # (Whether the thread test then reads a speed-up depends on free cores: not asserted.)
    runs = [run_python(script, timeout=60) for _ in range(4)]  # (each a fresh program)
    assert all(p.returncode == 0 for p in runs), [p.stderr for p in runs]
    assert not any("all 400 items ran while measuring" in p.stdout for p in runs), [
        p.stdout for p in runs
    ]


_MARGINAL_SCRIPT = """
import multiprocessing, sys, time
from autopar import parallel
from tests import helpers as h

with open(sys.argv[1], "a") as log:  # top-level code: counts how often it runs
    log.write("ran\\n")

def main():
    f = parallel(h.burn)
    f.map([2] * 30)  # ~60 ms of Python code: a warm pool would win, a cold one not
    first = f.last_plan.kind
    for _ in range(20):  # (the pool starts once the calls missed what it costs: ~5)
        if multiprocessing.active_children():
            break
        f.map([2] * 30)
    deadline = time.monotonic() + float(sys.argv[2])
    while not multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    print(first, len(multiprocessing.active_children()) > 0)
"""


@pytest.mark.skipif(not MULTICORE, reason="processes only pay with two or more cores")
@pytest.mark.parametrize("guarded", [True, False])
def test_a_pool_starts_on_spec_only_where_workers_would_not_rerun_the_script(tmp_path, guarded):
    # A spawn/forkserver worker imports the main script: without a main guard, its
    # top-level code would run again in every worker the call never asked for.
    from tests.conftest import run_file

    tail = 'if __name__ == "__main__":\n    main()\n' if guarded else "main()\n"
    script = tmp_path / "script.py"
    script.write_text(_MARGINAL_SCRIPT + tail)
    log = tmp_path / "ran.txt"
    # (Waiting for a pool: up to 20 s where one should start, 3 s where none should.)
    wait = "20" if guarded else "3"
    # (Threads capped at one: the probe does not test two, whose reading a busy VM can
    # tip to GIL-free and so keep processes out of question.)
    env = {"AUTOPAR_START_METHOD": "forkserver", "AUTOPAR_MAX_THREADS": "1"}
    proc = run_file(script, args=(str(log), wait), env=env)
    assert proc.returncode == 0, proc.stderr
    # The first call stays off processes (a cold pool would not pay); serial or threads
    # for its GIL-bound items is a close call that a noisy thread test can tip, and is
    # not what this test is about.
    kind, started = proc.stdout.split()
    assert kind in ("serial", "thread") and started == str(guarded), proc.stderr
    if not guarded:
        assert log.read_text().split() == ["ran"]  # no worker ran the script again


@pytest.mark.skipif(not MULTICORE, reason="processes only pay with two or more cores")
def test_a_script_without_a_main_guard_gets_no_processes_and_is_told_why(tmp_path):
    # Every spawn/forkserver worker would run such a script again (and die starting its
    # own pool): auto leaves processes out, says so in the plan, and warns once.
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "from autopar import parallel\n"
        "from tests import helpers as h\n"
        "with open(sys.argv[1], 'a') as log:\n"
        "    log.write('ran\\n')\n"
        "f = parallel(h.burn)\n"
        "f.map([5] * 120)\n"  # 0.6 s of Python code: processes win where they can start
        "print(f.last_plan.kind, 'guard' in f.last_plan.reason)\n"
        "f.map([5] * 120)\n"  # the warning is not repeated
        "print(f.last_plan.kind)\n"
    )
    log = tmp_path / "ran.txt"
    from tests.conftest import run_file

    # (Threads capped at one: the probe does not test two, whose reading a busy VM can
    # tip to GIL-free, and then processes are not in question and the reason is silent.)
    env = {"AUTOPAR_START_METHOD": "forkserver", "AUTOPAR_MAX_THREADS": "1"}
    proc = run_file(script, args=(str(log),), env=env)
    assert proc.returncode == 0, proc.stderr
    # No processes, and the reason says why. (Serial or threads: for items that hold the
    # GIL the two are within a few percent of each other, a choice that can go either way.)
    first, told, later = proc.stdout.split()
    assert first in ("serial", "thread") and later in ("serial", "thread"), proc.stdout
    assert told == "True", proc.stdout
    assert proc.stderr.count("RuntimeWarning") == 1 and "__main__" in proc.stderr
    assert "script.py:7" in proc.stderr  # the warning points at the user's call
    assert log.read_text().split() == ["ran"]


def test_cheap_items_stop_the_probe_once_enough_are_measured(monkeypatch, no_pilot):
    # The caller checks once out of turn when the cheap-items rule has its samples, rather
    # than running items at the probe's cost until the next check. (Checks are spaced far
    # apart here, so that only that one can stop the probe before its limit of 256 items.)
    import re

    from autopar._auto import calibration

    monkeypatch.setattr(calibration, "CHECK_INTERVAL", 5.0)
    f = parallel(h.square)
    assert f.map(range(1000)) == [x * x for x in range(1000)]
    found = re.search(r"the first (\d+) items ran while measuring", f.last_plan.reason)
    assert found and int(found.group(1)) < 256, f.explain()


class _ReadTwice:
    """A calibration whose probe read ``full`` with all its samples and ``sure`` without
    the costliest few."""

    def __init__(self, full, sure, samples):
        self.probe = types.SimpleNamespace(samples=[None] * samples)
        self._full, self._sure = full, sure

    def measurements(self):
        return self._full

    def without_the_costliest_few(self):
        return self._sure.wall, self._sure.cpu


def _surely(monkeypatch, full, sure):
    """The first call's plan on ``full``, and what planner._surely makes of it, on a quiet
    2-core machine's pools (whatever earlier tests started in this process)."""
    monkeypatch.setattr(pool_costs, "for_items", lambda config, m, n: MACHINE)
    n = 15_000
    plan = planner._decide(full, _config.Config(), n, MACHINE, n)
    return plan, planner._surely(_ReadTwice(full, sure, 64), full, plan, _config.Config(), n, n)


def test_threads_that_only_the_costliest_few_samples_call_for_are_not_started(monkeypatch):
    # Items that compute for 10 us (processes out: they do not pickle), read with three
    # samples stalled for 6 ms as waiting nine tenths of 0.3 ms: that calls for threads.
    full = cost_model.Measurements(wall=300e-6, cpu=30e-6, samples=64, picklable=False)
    sure = full._replace(wall=10e-6, cpu=10e-6)
    plan, found = _surely(monkeypatch, full, sure)
    assert plan.kind == "thread", plan
    assert found is not None
    m, serial, _ = found
    assert (m.wall, m.cpu, serial.kind) == (sure.wall, sure.cpu, "serial")
    assert "without the costliest one sample in 20 (of 64); with them, thread" in serial.reason


def test_waits_that_hold_without_the_costliest_few_keep_their_threads(monkeypatch):
    full = cost_model.Measurements(wall=300e-6, cpu=30e-6, samples=64, picklable=False)
    plan, found = _surely(monkeypatch, full, full._replace(wall=280e-6, cpu=28e-6))
    assert plan.kind == "thread", plan
    assert found is None
