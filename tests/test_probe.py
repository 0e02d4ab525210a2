"""The Probe, driven directly: items run on the calling thread or on helper threads, and
every item taken from the input is handed back exactly once, in order.

No assertion here depends on timing: how many items a probe batches, or which thread runs
which item, may vary; what the caller gets back may not.
"""

import collections
import itertools
import threading

import pytest

from autopar._auto.probe import Probe, without_the_costliest
from tests import helpers


class Counted:
    """A function that counts how often it ran on each item (from any thread)."""

    def __init__(self, fn=helpers.square):
        self.fn = fn
        self.calls = collections.Counter()
        self.threads = set()
        self._lock = threading.Lock()

    def __call__(self, x):
        with self._lock:
            self.calls[x] += 1
            self.threads.add(threading.get_ident())
        return self.fn(x)


def never():
    """A caller that never asks the probe to stop early."""
    return False


def finish(probe):
    """Wait until the probe takes no more items and none is running."""
    while not probe.finished:
        probe.wait(0.1)


def test_the_caller_alone_runs_every_item_once_in_order():
    fn = Counted()
    probe = Probe(fn, iter(range(50)), False, limit=1000)
    probe.add_caller()
    probe.work_here(never)
    assert probe.finished and probe.exhausted
    assert fn.threads == {threading.get_ident()}  # no helper thread was started
    boundary = probe.stop()
    assert boundary == 50
    assert probe.take_results(boundary) == [x * x for x in range(50)]
    assert fn.calls == dict.fromkeys(range(50), 1)
    assert len(probe.samples) == 50  # one sample an item, batched or not
    assert probe.example == (0, 0)  # the first item and its result
    assert probe.failure is None and probe.input_error is None


def test_the_probe_reads_no_further_than_its_limit():
    items = iter(range(100))
    fn = Counted()
    probe = Probe(fn, items, False, limit=30)
    probe.add_caller()
    probe.work_here(never)
    assert probe.finished and not probe.exhausted
    assert probe.stop() == 30
    assert probe.take_results(30) == [x * x for x in range(30)]
    assert next(items) == 30  # the rest of the input starts where the probe stopped
    assert set(fn.calls) == set(range(30))


def test_stopping_early_returns_the_boundary_and_keeps_every_result_before_it():
    items = iter(range(1000))
    fn = Counted()
    probe = Probe(fn, items, False, limit=1000)
    asked = itertools.count(1)
    probe.add_caller()
    probe.work_here(lambda: next(asked) >= 3)  # stop after the third item
    boundary = probe.stop()
    # At least the three items the caller ran; cheap items may have been read ahead
    # with them, and those ran too before the caller left.
    assert 3 <= boundary < 1000
    assert probe.finished
    assert probe.take_results(boundary) == [x * x for x in range(boundary)]
    assert fn.calls == dict.fromkeys(range(boundary), 1)
    assert next(items) == boundary  # nothing read was lost, nothing past it read


def test_helper_threads_run_each_item_exactly_once():
    items = iter(range(300))
    fn = Counted()
    probe = Probe(fn, items, False, limit=200)
    probe.grow(4)
    finish(probe)
    boundary = probe.stop()
    assert boundary == 200
    assert probe.take_results(boundary) == [x * x for x in range(200)]
    assert fn.calls == dict.fromkeys(range(200), 1)
    assert threading.get_ident() not in fn.threads
    assert next(items) == 200


def test_take_results_waits_for_items_still_running():
    # Results are asked for while the helpers still work: they come in order all the same.
    release = threading.Event()

    def wait_for_release(x):
        release.wait(30)
        return -x

    probe = Probe(wait_for_release, iter(range(8)), False, limit=8)
    probe.grow(3)
    threading.Timer(0.05, release.set).start()
    assert probe.take_results(8) == [-x for x in range(8)]
    finish(probe)
    assert probe.stop() == 8


def test_star_items_are_unpacked():
    probe = Probe(helpers.add, iter([(1, 2), (3, 4), (5, 6)]), True, limit=10)
    probe.add_caller()
    probe.work_here(never)
    assert probe.take_results(probe.stop()) == [3, 7, 11]


def test_a_failure_is_recorded_with_its_index_and_raised_in_order():
    fn = Counted(helpers.fail_on_three)
    probe = Probe(fn, iter(range(10)), False, limit=10)
    probe.add_caller()
    probe.work_here(never)
    assert probe.finished
    failure = probe.failure
    assert failure.index == 3 and isinstance(failure.exc, ValueError)
    assert "in fail_on_three" in failure.tb
    boundary = probe.stop()
    assert 4 <= boundary <= 10
    assert fn.calls[3] == 1
    with pytest.raises(ValueError, match="item 3 is bad") as info:
        probe.take_results(boundary)
    assert info.value.autopar_index == 3


def test_results_before_a_failure_are_handed_back():
    probe = Probe(helpers.fail_on_three, iter(range(10)), False, limit=10)
    probe.add_caller()
    probe.work_here(never)
    probe.stop()
    assert probe.take_results(3) == [0, 1, 2]  # the failure is at 3: not among these


def test_a_failure_in_a_batch_of_cheap_items_has_its_own_index():
    # Cheap items are taken a few at a time once some ran; whichever way item 45 ran,
    # its failure names it.
    items = list(range(200))
    items[45] = "x"  # str * str: TypeError
    probe = Probe(helpers.square, iter(items), False, limit=200)
    probe.add_caller()
    probe.work_here(never)
    assert probe.failure.index == 45 and isinstance(probe.failure.exc, TypeError)
    with pytest.raises(TypeError) as info:
        probe.take_results(probe.stop())
    assert info.value.autopar_index == 45


def test_an_input_that_fails_surfaces_as_the_input_error():
    broken = OSError("the input broke")

    def two_then_fail():
        yield 1
        yield 2
        raise broken

    probe = Probe(helpers.square, two_then_fail(), False, limit=100)
    probe.add_caller()
    probe.work_here(never)
    assert probe.input_error is broken
    assert probe.exhausted and probe.finished
    assert probe.failure is None  # not the function's failure
    assert probe.stop() == 2
    assert probe.take_results(2) == [1, 4]  # the items read before it still count


def test_take_any_hands_back_what_finished_then_none():
    probe = Probe(helpers.square, iter(range(20)), False, limit=20)
    probe.add_caller()
    probe.work_here(never)
    probe.stop()
    got = []
    while (ready := probe.take_any()) is not None:
        got.extend(ready)
    assert sorted(got) == [x * x for x in range(20)]


def test_after_stop_nothing_grows_or_resumes_the_probe():
    items = iter(range(100))
    probe = Probe(helpers.square, items, False, limit=100)
    boundary = probe.stop()
    assert boundary == 0
    probe.grow(4)
    probe.resume()
    assert probe.workers == 0  # no helper was started
    assert probe.finished and next(items) == 0


def test_a_paused_probe_takes_no_new_item():
    items = iter(range(100))
    probe = Probe(helpers.square, items, False, limit=100)
    probe.pause()
    probe.add_caller()
    probe.work_here(never)  # returns at once: nothing may be taken
    assert probe.read == 0 and next(items) == 0


class _QueuedThroughout:
    """A queue clock by which the calling thread sat queued for a core through every item
    (as on a machine whose cores are all busy)."""

    reads = True
    mark = 0.0

    def after_item(self, wall):
        return wall

    def since_mark(self):
        return 0.0


def test_time_the_caller_sat_queued_for_a_core_is_not_the_items_cost(monkeypatch):
    # An item's own CPU clock does not show time queued for a core. Counted as waiting,
    # it would send computing items to threads on a busy machine; counted as the item's
    # cost, one preemption reads a near-free item as milliseconds of computing. It comes
    # off the item's wall time: here the thread sat queued throughout, so nothing is left
    # but the item's CPU time.
    from autopar._auto import probe as probe_module

    monkeypatch.setattr(probe_module, "for_this_thread", _QueuedThroughout)
    probe = Probe(helpers.nap, iter([0.002] * 5), False, 5)
    probe.add_caller()
    probe.work_here(never)
    assert len(probe.samples) == 5
    assert all(
        wall < 0.001 and cpu == pytest.approx(wall, abs=2e-6) for wall, cpu, _, _ in probe.samples
    ), probe.samples


def _wait_while_another_thread_computes(ms):
    helper = threading.Thread(target=helpers.burn, args=(ms,))
    helper.start()
    helper.join()
    return ms


def test_a_sample_holds_the_cpu_the_rest_of_the_process_used_while_it_ran():
    # What tells a wait from a GIL wait: another thread's 10 ms of CPU fell within the
    # item (it joins that thread), so the sample's reading of the rest of the process
    # holds at least those 10 ms, whatever else the machine did meanwhile.
    probe = Probe(_wait_while_another_thread_computes, iter([10]), False, 1)
    probe.add_caller()
    probe.work_here(never)
    ((wall, cpu, phase, others),) = probe.samples
    assert phase == 1 and cpu < 0.5 * wall
    assert others * wall >= 0.0099, probe.samples


def _burn_then_nap(ms):
    helpers.burn(ms)
    helpers.nap(ms / 1e3)
    return ms


def test_cpu_time_the_host_took_counts_as_computing(monkeypatch):
    # Where the hypervisor took half of this guest's time while it was busy, 2 ms on the
    # thread's own clock were 4 ms the item wanted to compute (never more than its wall).
    from autopar._auto import stolen_time

    monkeypatch.setattr(stolen_time, "_share", 0.5)
    probe = Probe(_burn_then_nap, iter([2]), False, 1)
    probe.add_caller()
    probe.work_here(never)
    ((wall, cpu, _, _),) = probe.samples
    # (Less the clocks' own cost, which is less for CPU: cpu may pass wall by nanoseconds.)
    assert min(wall, 3.9e-3) <= cpu <= wall + 1e-6, probe.samples


def test_an_item_whose_thread_never_blocked_reads_its_cpu_time_as_its_cost(monkeypatch):
    # Its wall time beyond its CPU clock was a core or the host holding it off: no sleep,
    # I/O or lock made it wait, so it computed throughout, and only for its CPU time.
    # (Here the kernel's count is held still, so a nap stands for an item stalled on a
    # busy machine: read as 5 ms, it would price a near-free item like a costly one.)
    from autopar._auto import probe as probe_module

    monkeypatch.setattr(probe_module, "held_off_since", lambda before, wall: wall)
    probe = Probe(helpers.nap, iter([0.005]), False, 1)
    probe.add_caller()
    probe.work_here(never)
    ((wall, cpu, _, _),) = probe.samples
    assert wall < 0.001 and cpu == pytest.approx(wall, abs=1e-6), probe.samples


@pytest.mark.skipif(not hasattr(__import__("resource"), "RUSAGE_THREAD"), reason="Linux")
def test_an_item_that_sleeps_blocks_and_reads_as_waiting():
    from autopar._auto.queued_time import held_off_since, thread_usage

    before = thread_usage()
    helpers.nap(0.002)
    assert held_off_since(before, 0.002) == 0.0  # (it blocked: its wait was its own)
    probe = Probe(helpers.nap, iter([0.005]), False, 1)
    probe.add_caller()
    probe.work_here(never)
    ((wall, cpu, _, _),) = probe.samples
    assert cpu < 0.5 * wall, probe.samples


# Read in a fresh program (sha256 of 2 KiB payloads, 5-60 us an item): two items held off
# the GIL by another thread of the process for 1.5 ms each, among 62 that computed.
_COMPUTING = [(8e-6, 8e-6, 1, 0.0)] * 62
_STALLED = [(1.5e-3, 0.14e-3, 1, 0.93)] * 2


def test_a_few_stalled_samples_do_not_keep_cheap_items_from_reading_cheap():
    probe = Probe(helpers.identity, iter([]), False, 64)
    probe.samples.extend(_COMPUTING + _STALLED)
    # (With the two in, the mean is 55 us: over the 50 us under which items are cheap.)
    assert probe.cheap(50e-6, 64)
    # Four of 44 is more than one in twenty: a cost that many items show is theirs.
    probe = Probe(helpers.identity, iter([]), False, 64)
    probe.samples.extend(_COMPUTING[:40] + _STALLED * 2)
    assert not probe.cheap(50e-6, 44)


def test_the_costliest_one_sample_in_twenty_is_left_out_and_no_more():
    costs = [(float(k), 0.0) for k in range(40)]
    assert sorted(without_the_costliest(costs)) == costs[:38]
    assert without_the_costliest(costs[:19]) == costs[:19]  # (under 20: all stay)
