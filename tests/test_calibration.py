"""Calibration: pricing shipping to a process (ratios and paths), and the thread test."""

import functools
import hashlib
import threading
import time

import pytest

from autopar import _config
from autopar._auto import calibration


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
    picklable, caller, worker, _, _ = calibration._ship_costs(len, (bytes(1 << 20), 7))
    assert picklable
    assert caller > 0 and worker > 0
    assert calibration._ship_costs(len, (threading.Lock(), 1))[0] is False


def test_ship_costs_measure_the_function_itself():
    table = bytes(4 << 20)
    *_, seconds, size = calibration._ship_costs(functools.partial(max, table), (1, 1))
    assert size > len(table) and seconds > 0
    *_, small_size = calibration._ship_costs(len, (1, 1))
    assert small_size < 100


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


class _SeenProbe:
    """What a probe had seen: finished (wall, CPU, phase) samples and running items."""

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
    done = [(1.5e-3, 1.5e-3, 1)] * 4 + [(3.0e-3, 1.6e-3, 2)] * 2
    probe = _SeenProbe(done, [(31e-3, 0.17e-3)])
    costs = calibration.item_costs(probe, 1.0, rates={1: 1.0, 2: 1.0})
    assert _cpu_share(costs) >= 0.9
    assert sum(w for w, _ in costs) / len(costs) < 2e-3


def test_a_running_item_beside_items_that_wait_in_part_keeps_its_reading():
    # Items that wait half their time: a running one reading idle may well be waiting.
    done = [(2e-3, 1e-3, 1)] * 4
    probe = _SeenProbe(done, [(31e-3, 0.17e-3)])
    costs = calibration.item_costs(probe, 1.0, rates={1: 0.6, 2: 1.0})
    assert costs[-1] == (31e-3, 0.17e-3)


def test_a_running_item_in_an_idle_process_keeps_its_reading():
    done = [(1.5e-3, 1.5e-3, 1)] * 4
    probe = _SeenProbe(done, [(31e-3, 0.17e-3)])
    costs = calibration.item_costs(probe, 0.2, rates={1: 0.2, 2: 0.2})
    assert costs[-1] == (31e-3, 0.17e-3)
