"""Calibration: pricing shipping to a process (ratios and paths), and the thread test."""

import functools
import hashlib
import threading
import time

import pytest

from autopar import _config
from autopar._auto import calibration, cost_model
from tests.test_cost_model import WARM  # (a quiet 2-core machine's pools, warm)


class _BigBytes(bytes):
    """bytes whose pickling would be noticed."""

    def __reduce__(self):
        raise AssertionError("a large flat buffer must be priced by size, not pickled")


def test_large_flat_buffers_are_priced_by_size_without_pickling():
    one, _, size_one = calibration._pickle_cost(_BigBytes(1 << 20))
    four, _, size_four = calibration._pickle_cost(_BigBytes(4 << 20))
    assert (size_one, size_four) == (1 << 20, 4 << 20)
    assert four == pytest.approx(4 * one)  # one measured rate per byte
    assert one > 0


def test_small_or_structured_items_are_pickled_to_price_them():
    small = _BigBytes(1024)
    with pytest.raises(AssertionError):
        calibration._pickle_cost(small)  # under the threshold: really pickled
    dump, load, size = calibration._pickle_cost(list(range(10_000)))
    assert size > 10_000 and dump > 0 and load > 0


def test_ship_costs_add_item_and_result_on_each_side():
    picklable, caller, worker = calibration._item_costs((bytes(1 << 20), 7))
    assert picklable
    assert caller > 0 and worker > 0
    assert calibration._item_costs((threading.Lock(), 1))[0] is False


def test_ship_costs_measure_the_function_itself():
    table = bytes(4 << 20)
    picklable, seconds, size, copied = calibration._function_costs(functools.partial(max, table))
    assert picklable and size > len(table) and seconds > 0
    assert copied == size  # (a bytes value travels in the pickle: each worker copies it)
    assert calibration._function_costs(len)[2] < 100
    assert calibration._function_costs(functools.partial(max, threading.Lock()))[0] is False


def test_a_function_s_arrays_are_priced_to_ship_but_not_to_copy_into_each_worker():
    np = pytest.importorskip("numpy")
    weights = np.ones(1 << 20)  # 8 MiB, out-of-band: each worker maps it
    _, seconds, size, copied = calibration._function_costs(functools.partial(max, weights))
    assert size > weights.nbytes and copied < 4096 and seconds > 0
    heavy = cost_model.Measurements(wall=0.01, cpu=0.01, samples=64, function_priced=False)
    m = calibration.priced(heavy, functools.partial(max, weights), WARM, 200)
    assert m.function_bytes == size and m.load_function == 0.0


def test_the_function_is_pickled_only_once_processes_are_in_question(monkeypatch):
    # Pickling a function from the main script loads cloudpickle (milliseconds): not for
    # a call that processes could not win even with the function free to ship.
    dumped = []
    real = calibration.dump_parts
    monkeypatch.setattr(
        calibration, "dump_parts", lambda fn, keeper: dumped.append(fn) or real(fn, keeper)
    )
    table = bytes(4 << 20)
    heavy = functools.partial(max, table)
    cheap = cost_model.Measurements(wall=1e-6, cpu=1e-6, samples=64, function_priced=False)
    assert calibration.priced(cheap, heavy, WARM, 1000) is cheap and not dumped
    # 10 ms of computing an item, 200 items: processes are in question; now the function
    # is measured, and its 4 MiB is what the decision weighs.
    dear = cheap._replace(wall=0.01, cpu=0.01)
    m = calibration.priced(dear, heavy, WARM, 200)
    assert dumped == [heavy] and m.function_priced and m.function_bytes > len(table)
    # A new worker writes it into memory it never touched: priced at that rate.
    assert m.load_function == pytest.approx(m.function_bytes * calibration._fresh_copy_rate())
    assert m.load_function > 0
    assert calibration.priced(m, heavy, WARM, 200) is m and len(dumped) == 1
    # A function that does not pickle rules processes out once measured.
    locked = functools.partial(max, threading.Lock())
    assert not calibration.priced(dear, locked, WARM, 200).picklable
    assert (
        cost_model.decide(calibration.priced(dear, locked, WARM, 200), WARM, 200).kind != "process"
    )


def _sha256_hex(buffer):
    import hashlib

    return hashlib.sha256(buffer).hexdigest()


@pytest.mark.skipif(_config.cpu_count() < 2, reason="the thread test needs two cores")
def test_the_thread_test_runs_for_items_longer_than_the_budget_allows():
    # Items of 20 ms or more (sha256 of 48 MiB releases the GIL): one thread, then two,
    # each for three items' time, does not fit the 50 ms budget. The budget stretches for
    # it, so threads are priced on a measured speed-up, never assumed to hold the GIL.
    from autopar import parallel

    buffer = bytes(48 << 20)
    f = parallel(_sha256_hex)
    assert f.map([buffer] * 30) == [_sha256_hex(buffer)] * 30
    m = f.last_plan.measured
    assert m["wall"] > 0.01, f.explain()  # (a test of such items outlasts the budget)
    assert "thread_speedup" in m, f.explain()
    assert "was not measured" not in f.last_plan.reason


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="POSIX thread clocks")
def test_the_thread_test_counts_only_the_probes_threads():
    # Another thread of the program burns CPU (numpy's BLAS pool spins after import); a
    # probe thread that sleeps meanwhile used none, and its window must say so.
    clock = time.pthread_getcpuclockid(threading.get_ident())

    class Probe:
        def cpu_clocks(self):
            return {clock: time.clock_gettime(clock)}

    stop = threading.Event()
    data = bytes(1 << 20)

    def burn():
        while not stop.is_set():
            hashlib.sha256(data).digest()  # (releases the GIL: a core of its own)

    other = threading.Thread(target=burn)
    other.start()
    try:
        window = calibration._Window(1, Probe())
        time.sleep(0.2)
        assert window.rate() < 0.2
    finally:
        stop.set()
        other.join()


@pytest.mark.skipif(_config.cpu_count() < 2, reason="the thread test needs two cores")
def test_a_reading_of_two_threads_taking_turns_is_taken_again(monkeypatch):
    # The first window of two threads can open before the second has started: GIL-free
    # items then read as taking turns (1.2x for 2x), and threads were left out for the
    # whole program. A low reading is read again; the higher stands.
    opened = []

    class Window(calibration._Window):
        def __init__(self, workers, probe):
            super().__init__(workers, probe)
            if workers == 2:
                opened.append(self)

        def rate(self):
            if self.workers == 1:
                return 1.0
            return 1.1 if self is opened[0] else 2.0

    monkeypatch.setattr(calibration, "_Window", Window)
    from autopar import parallel

    data = bytes(1 << 20)
    f = parallel(_sha256_hex)
    f.map([data] * 60)
    m = f.last_plan.measured
    assert len(opened) >= 2
    assert m.get("thread_speedup", 0) >= 1.9, f.explain()


def test_a_reading_under_way_gets_its_whole_window_within_the_budgets_share():
    # Two threads re-read at 45 ms on items of 4 ms (a VM's host slowed the readings
    # before): the budget (50 ms, or 11 items of the test) would end the re-read after
    # 5 ms, short of its three items, and its low first reading would stand.
    class Probe:
        limit = 60

        def cpu_clocks(self):
            return {}

    cal = calibration.Calibration(Probe(), _config.current(), None)
    cal._testing_threads, cal._first_reading = 4e-3, 1.1
    cal._window = calibration._Window(2, Probe())
    cal._window.at = cal.t0 + 0.045
    assert cal._budget_now() >= 0.045 + 3 * 4e-3
    # ... within the share of the call the test may take (a quarter: 15 items here).
    cal._window.at = cal.t0 + 0.1
    assert cal._budget_now() == pytest.approx(0.25 * 60 * 4e-3)


class _SeenProbe:
    """What a probe had seen: finished (wall, CPU, phase, others' CPU rate) samples, and
    running items."""

    def __init__(self, samples, running):
        self.samples = samples
        self._running = running

    def running_costs(self):
        return list(self._running)


def _cpu_share(costs):
    return sum(c for _, c in costs) / sum(w for w, _ in costs)


def test_a_running_item_starved_of_the_gil_is_not_read_as_waiting():
    # Caught in a fresh program (bench_heavy's table row): four one-thread items computed
    # throughout; the item running on the probe's second thread had 31 ms of wall and
    # 0.17 ms of CPU while two threads kept the process busy. Read as is, the items
    # "spent 85% of their time waiting", and the plan went to threads; and where such an
    # item's wall counted as its cost, the mean item cost doubled.
    done = [(1.5e-3, 1.5e-3, 1, 0.0)] * 4 + [(3.0e-3, 1.6e-3, 2, 1.0)] * 2
    probe = _SeenProbe(done, [(31e-3, 0.17e-3)])
    costs = calibration.item_costs(probe, 1.0, rates={1: 1.0, 2: 1.0})
    assert _cpu_share(costs) >= 0.9
    assert sum(w for w, _ in costs) / len(costs) < 2e-3


def test_a_running_item_beside_items_that_wait_in_part_keeps_its_reading():
    # Items that wait half their time: a running one reading idle may well be waiting.
    done = [(2e-3, 1e-3, 1, 0.0)] * 4
    probe = _SeenProbe(done, [(31e-3, 0.17e-3)])
    costs = calibration.item_costs(probe, 1.0, rates={1: 0.6, 2: 1.0})
    assert costs[-1] == (31e-3, 0.17e-3)


def test_a_running_item_in_an_idle_process_keeps_its_reading():
    done = [(1.5e-3, 1.5e-3, 1, 0.0)] * 4
    probe = _SeenProbe(done, [(31e-3, 0.17e-3)])
    costs = calibration.item_costs(probe, 0.2, rates={1: 0.2, 2: 0.2})
    assert costs[-1] == (31e-3, 0.17e-3)


def test_a_wait_counts_when_the_rest_of_the_process_was_idle_while_it_ran():
    # Read from a probe of 16 threads: near-free items stretched by each other's GIL
    # turns, and 10 ms waits that ran while the rest of the process was idle. Their
    # phase's rate (0.6) would say GIL turns for both; each sample's own reading tells
    # them apart, and the waits are the call's real cost.
    done = [(5e-6, 5e-6, 1, 0.0)] * 3
    stretched = [(80e-6, 5e-6, 16, 1.0)] * 40
    waits = [(10e-3, 20e-6, 16, 0.05)] * 10
    probe = _SeenProbe(done + stretched + waits, [])
    costs = calibration.item_costs(probe, 0.6, rates={1: 1.0, 16: 0.6})
    assert sorted(set(costs)) == [(5e-6, 5e-6), (10e-3, 20e-6)]
    assert costs.count((10e-3, 20e-6)) == 10


def test_threads_stop_growing_once_recent_items_say_they_will_be_busy():
    # 5 ms sleeps, then 1 ms of Python, on 4 threads: a window opened as they started can
    # end before any computes, but the recent items took 1 ms of CPU in 7 ms, so 4
    # threads past their waits keep about 0.57 of a core busy: no more threads.
    recent = [(7e-3, 1e-3)] * 8
    assert calibration._due_rate(recent, [(3e-3, 0.0)] * 4, 4) == pytest.approx(4 / 7)
    # A running item that has outlasted twice the recent ones is not like them.
    assert calibration._due_rate(recent, [(15e-3, 0.0)], 4) == 0.0
    assert calibration._due_rate([], [], 4) == 0.0


def test_threads_capped_at_one_skip_the_thread_test(monkeypatch):
    # No plan could run two threads, so the probe does not spend its budget testing them.
    from autopar import parallel
    from tests import helpers

    monkeypatch.setenv("AUTOPAR_MAX_THREADS", "1")
    f = parallel(helpers.burn)
    f.map([1.0] * 60)
    assert "thread_speedup" not in f.last_plan.measured, f.explain()
    assert f.last_plan.kind != "thread" or f.last_plan.workers == 1


class _MeasuredProbe(_SeenProbe):
    def __init__(self, samples, running):
        super().__init__(samples, running)
        self.example = None  # (shipping is not in question here)
        self.handles_before = {}
        self.workers = 2


@pytest.mark.parametrize(
    ("rates", "share", "gil_free"),
    [
        # Items computing throughout, one thread held off a core a fifth of the time by a
        # busy machine, two taking turns on the GIL: not 1.2x as fast, about as fast.
        ({1: 0.8, 2: 0.97}, 1.0, False),
        # GIL-free items on the same busy machine: two threads use 1.7 cores.
        ({1: 0.8, 2: 1.7}, 1.0, True),
        # Items that wait half their time and compute free of the GIL the other half:
        # one thread's low rate is theirs, not the machine's, and two threads double it.
        ({1: 0.5, 2: 1.0}, 0.5, True),
    ],
)
def test_the_thread_speed_up_is_over_one_thread_at_its_items_own_pace(rates, share, gil_free):
    done = [(2e-3, share * 2e-3, 1, 0.0)] * 4 + [(2e-3, share * 2e-3, 2, 0.0)] * 4
    m = calibration.measure(_MeasuredProbe(done, []), rates)
    assert m.gil_free is gil_free, m
    if not gil_free:
        assert m.thread_speedup == pytest.approx(0.97)


def test_a_reading_without_the_costliest_few_leaves_out_a_stalled_item():
    # A fresh program's probe (sha256 of 2 KiB payloads): two items held off the GIL by
    # another thread of the process for 1.5 ms each, among 62 that computed in 8 us.
    done = [(8e-6, 8e-6, 1, 0.0)] * 62 + [(1.5e-3, 0.14e-3, 1, 0.93)] * 2
    full = calibration.measure(_MeasuredProbe(done, []), {})
    wall, cpu = calibration.without_the_costliest_few(_MeasuredProbe(done, []), {})
    assert full.wall > 5 * wall and full.cpu_fraction < 0.5  # read as waiting
    assert wall == pytest.approx(8e-6) and cpu / wall == pytest.approx(1.0)
