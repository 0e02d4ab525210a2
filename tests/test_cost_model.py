"""The cost model is a pure function: tables in, plan out, no clock."""

import pytest

from autopar._auto.cost_model import Measurements, Overheads, decide

MACHINE = Overheads(
    cores=2,
    thread_dispatch=30e-6,
    thread_start=80e-6,
    threads_started=0,
    process_dispatch=300e-6,
    process_start=0.035,
)
WARM = MACHINE._replace(process_start=0.0)
SIXTEEN = MACHINE._replace(cores=16)


def items(wall, cpu, **kw):
    return Measurements(wall=wall, cpu=cpu, samples=20, **kw)


def test_tiny_items_run_serially():
    plan = decide(items(0.2e-6, 0.2e-6), MACHINE, 1000)
    assert plan.kind == "serial"
    assert plan.predicted["serial"] < plan.predicted["thread"]
    assert plan.predicted["serial"] < plan.predicted["process"]
    assert "cheap" in plan.reason


def test_waiting_items_get_many_threads():
    plan = decide(items(0.010, 20e-6), MACHINE, 200)
    assert plan.kind == "thread"
    assert plan.workers == 128  # not the core count: waits overlap, cores don't matter
    assert plan.chunksize == 1
    assert "waiting" in plan.reason


def test_waiting_threads_are_capped_by_max_threads_and_items():
    capped = MACHINE._replace(max_threads=16)
    assert decide(items(0.010, 20e-6), capped, 200).workers == 16
    assert decide(items(1.0, 1e-5), MACHINE, 5).workers == 5


def test_gil_bound_cpu_work_goes_to_processes():
    m = items(2e-3, 2e-3, thread_speedup=1.0, speedup_threads=2)
    plan = decide(m, MACHINE, 300)
    assert plan.kind == "process"
    assert plan.workers == 2
    assert plan.predicted["thread"] >= plan.predicted["serial"]  # the GIL: no gain
    # The reading, not a cause it cannot tell apart: numpy's products, which release the
    # GIL, read the same while BLAS's own threads keep the cores busy.
    assert "two threads ran 1.00x as fast as one" in plan.reason
    assert "hold the GIL" not in plan.reason


def test_a_serial_plan_says_what_the_thread_test_read():
    m = items(1e-3, 1e-3, thread_speedup=1.05, speedup_threads=2)
    plan = decide(m, MACHINE, 20)
    assert plan.kind == "serial"
    assert "two threads ran 1.05x as fast as one" in plan.reason
    assert "hold the GIL" not in plan.reason


def test_gil_free_cpu_work_uses_threads():
    m = items(1e-3, 1e-3, thread_speedup=1.9, speedup_threads=2, ship_caller=1e-3, ship_worker=1e-3)
    plan = decide(m, MACHINE, 200)
    assert plan.kind == "thread"
    assert plan.workers >= 2
    assert "GIL" in plan.reason


def test_large_arguments_make_processes_lose():
    # Cheap work on 1 MiB items: shipping costs more than the work.
    m = items(2e-6, 2e-6, ship_caller=0.5e-3, ship_worker=0.5e-3)
    plan = decide(m, WARM, 200)
    assert plan.kind == "serial"
    assert plan.predicted["process"] > 10 * plan.predicted["serial"]


def test_cold_pool_start_keeps_short_cpu_calls_serial():
    m = items(1e-3, 1e-3, thread_speedup=1.0, speedup_threads=2)
    assert decide(m, MACHINE, 20).kind == "serial"  # 20 ms of work vs a 35 ms start
    assert decide(m, WARM, 20).kind == "process"  # once the pool is warm, it pays


def test_unpicklable_work_never_goes_to_processes():
    m = items(5e-3, 5e-3, thread_speedup=1.0, speedup_threads=2, picklable=False)
    plan = decide(m, WARM, 500)
    assert plan.kind != "process" and "process" not in plan.predicted


def test_one_core_never_uses_processes():
    single = MACHINE._replace(cores=1)
    m = items(5e-3, 5e-3, thread_speedup=1.0, speedup_threads=2)
    assert decide(m, single, 500).kind == "serial"


def test_more_cores_more_process_workers():
    m = items(5e-3, 5e-3, thread_speedup=1.0, speedup_threads=2)
    assert decide(m, SIXTEEN, 1000).workers == 16


def test_process_chunks_hide_dispatch_but_keep_balance():
    m = items(10e-6, 10e-6, thread_speedup=1.0, speedup_threads=2)
    plan = decide(m, WARM, 100_000)
    assert plan.kind == "process" and plan.workers == 2  # GIL-bound, a warm pool: it pays
    assert plan.chunksize * 10e-6 >= 10 * WARM.process_dispatch  # dispatch under 10%
    assert plan.chunksize <= 100_000 // (4 * 2)  # at least four chunks per worker


@pytest.mark.parametrize("n", [2, 10, 1000, 100_000])
def test_predictions_are_positive_and_serial_is_n_times_wall(n):
    m = items(1e-4, 5e-5)
    plan = decide(m, MACHINE, n)
    assert plan.predicted["serial"] == pytest.approx(n * 1e-4)
    assert all(v > 0 for v in plan.predicted.values())
    assert plan.kind == min(plan.predicted, key=plan.predicted.get) or (
        plan.predicted[plan.kind] <= 1.05 * min(plan.predicted.values()) * 1.0001
    )


def test_explain_shows_the_table():
    plan = decide(items(0.010, 20e-6), MACHINE, 200)
    text = plan.explain()
    assert "predicted time" in text and "<- chosen" in text
    assert "cpu_fraction" in text and "thread" in text


def test_a_large_cluster_wins_heavy_work_and_loses_cheap_work():
    cluster = WARM._replace(cluster_threads=32, cluster_dispatch=3e-3)
    heavy = items(0.1, 0.1, thread_speedup=1.0, speedup_threads=2)
    plan = decide(heavy, cluster, 400)
    assert plan.kind == "dask" and plan.workers == 32
    assert "cluster" in plan.reason
    cheap = items(1e-6, 1e-6)
    assert decide(cheap, cluster, 400).kind == "serial"
    assert "dask" not in decide(heavy, WARM, 400).predicted  # no cluster, no candidate


def test_waits_shorter_than_a_hand_off_do_not_count():
    # 0.3 us items whose clocks disagree by a few tenths of a microsecond: nothing to overlap.
    noisy = items(0.3e-6, 0.2e-6, ship_caller=1e-6, ship_worker=1e-6)
    plan = decide(noisy, WARM, 20_000)
    assert plan.kind == "serial"
    assert plan.predicted["thread"] >= plan.predicted["serial"]


def test_serial_reasons_name_what_each_other_kind_lost_to():
    gil_bound = items(5e-3, 5e-3, thread_speedup=1.0, speedup_threads=2)
    # A script whose processes are left out: the items are not cheap, they hold the GIL.
    no_processes = WARM._replace(processes=False)
    plan = decide(gil_bound, no_processes, 120)
    assert plan.kind == "serial"
    assert "GIL" in plan.reason and "cheap" not in plan.reason
    # A cold pool that would win once running, on a call too short to pay for its start.
    short = decide(items(1e-3, 1e-3, thread_speedup=1.0, speedup_threads=2), MACHINE, 20)
    assert short.kind == "serial" and "starting one (35 ms)" in short.reason
    # Shipping: cheap work on big items.
    ship = decide(items(100e-6, 100e-6, ship_caller=1e-3, ship_worker=1e-3), WARM, 200)
    assert ship.kind == "serial" and "shipping" in ship.reason
    unpicklable = items(5e-3, 5e-3, thread_speedup=1.0, speedup_threads=2, picklable=False)
    assert "pickle" in decide(unpicklable, WARM, 500).reason
    single = WARM._replace(cores=1)
    assert "one core" in decide(gil_bound, single, 500).reason
    waiting = decide(items(150e-6, 1e-6), MACHINE, 2)  # two short waits: not worth a thread
    assert waiting.kind == "serial" and "threads' start" in waiting.reason
    # Near-free work on big items: cheaper than a thread's hand-off, dearer to ship.
    big = decide(items(1e-6, 1e-6, ship_caller=1.5e-3, ship_worker=1.2e-3), WARM, 100)
    assert big.reason == (
        "an item costs less than handing it to a thread; "
        "shipping an item to a process costs more than running it"
    )
    assert decide(gil_bound, WARM, 1).reason == "one item: nothing to run beside it"
    # Items cheaper than any hand-off, but enough of them to fill chunks that a running
    # pool would gain from: the pool's start is what loses, not the hand-off.
    cheap_many = decide(items(25e-6, 25e-6), MACHINE._replace(process_start=0.15), 2000)
    assert cheap_many.kind == "serial" and "cheap" not in cheap_many.reason
    assert "a running process pool would win" in cheap_many.reason
    assert decide(gil_bound, WARM, 500, allowed=["serial"]).reason == "no other kind allowed"


def test_new_threads_start_while_earlier_ones_work():
    # 200 sleeps of 10 ms with a thread start of 0.3 ms: the caller takes 38 ms to start
    # 128 threads, but the first ones sleep meanwhile. Counting every start in full, as if
    # the work waited for all of them, chose 64 threads.
    slow_starts = MACHINE._replace(thread_start=0.3e-3)
    plan = decide(items(0.010, 20e-6), slow_starts, 200)
    assert plan.kind == "thread" and plan.workers == 128
    # ... and no call ends before the caller has started its threads.
    assert plan.predicted["thread"] >= 128 * 0.3e-3
    # Threads taking turns on the GIL get no such overlap: each start holds up the work.
    gil = items(2e-3, 2e-3, thread_speedup=1.0, speedup_threads=2)
    one_core = slow_starts._replace(cores=1)
    assert decide(gil, one_core, 10).predicted["thread"] >= 10 * 2e-3 + 0.3e-3


def test_threads_for_part_waiting_items_are_not_said_to_be_gil_free():
    # 32% of each item idle, and no thread test ran: threads overlap the idle part, which
    # the reason must say, not that the items release the GIL (nothing measured that).
    cold = MACHINE._replace(process_start=0.15)
    plan = decide(items(6e-3, 4e-3), cold, 46)
    assert plan.kind == "thread"
    assert "33% of their time waiting" in plan.reason and "GIL" not in plan.reason


def test_reasons_give_the_measured_thread_speed_up_not_a_verdict_it_did_not_reach():
    # Computing items whose two threads ran 1.45x as fast as one: threads may still win
    # (processes out here), and the reason says what was read, not that items wait.
    partly = items(5e-3, 5e-3, thread_speedup=1.45, speedup_threads=2)
    plan = decide(partly, MACHINE._replace(processes=False), 40)
    assert plan.kind == "thread"
    assert "1.45x as fast as one" in plan.reason and "waiting" not in plan.reason
    held = items(5e-3, 5e-3, thread_speedup=1.02, speedup_threads=2)
    assert "1.02x as fast as one" in decide(held, MACHINE, 40).reason


def test_a_function_dearer_to_ship_than_its_work_saves_keeps_processes_out():
    light = items(1.5e-3, 1.5e-3, thread_speedup=1.0, speedup_threads=2)
    assert decide(light, WARM, 200).kind == "process"
    heavy = light._replace(ship_function=0.2, function_bytes=500 * 2**20)
    plan = decide(heavy, WARM, 200)
    assert plan.kind == "serial"
    assert "shipping the function (500.0 MiB pickled)" in plan.reason
    assert plan.measured["function_bytes"] == 500 * 2**20
    assert "function_bytes         500.0 MiB" in plan.explain()  # a size, not seconds


def test_shipping_the_function_is_priced_once_per_call_not_per_item():
    light = items(1.5e-3, 1.5e-3, thread_speedup=1.0, speedup_threads=2)
    heavy = light._replace(ship_function=0.02, function_bytes=50 * 2**20, load_function=0.05)
    cold = MACHINE._replace(process_start=0.1)
    for n in (50, 500, 5000):
        # A cold pool's workers load it too, into memory they never touched.
        for overheads, extra_seconds in ((WARM, 0.02), (cold, 0.02 + 0.02 + 0.05)):
            extra = (
                decide(heavy, overheads, n).predicted["process"]
                - decide(light, overheads, n).predicted["process"]
            )
            assert extra == pytest.approx(extra_seconds)


def test_per_worker_values_are_charged_to_the_workers_that_must_build_them():
    m = items(2e-3, 2e-3, thread_speedup=1.0)
    cold = MACHINE._replace(process_start=0.1)
    dear = m._replace(setup_process=2.0, setup_thread=2.0)
    assert decide(m, cold, 500).kind == "process"
    assert decide(dear, cold, 500).kind == "serial"  # a cold pool's workers build first
    assert decide(dear, WARM, 500).kind == "process"  # a warm pool's built it already
    waiting = m._replace(cpu=1e-5)
    assert decide(waiting, cold, 500).kind == "thread"
    # Built once per thread: each of many threads would pay for it.
    assert decide(waiting._replace(setup_thread=1.0, setup_process=1.0), cold, 500).kind == (
        "serial"
    )
    # Thread-safe (built once, here): threads pay nothing more.
    assert decide(waiting._replace(setup_process=1.0), cold, 500).kind == "thread"


def test_gil_free_items_stay_on_threads_even_when_shipping_them_is_cheap():
    # sha256 of 4 MiB buffers: threads hash them in place; processes, even with the
    # buffers in shared memory, only add the copy. (End to end, where a loaded machine
    # makes the thread test read low, this is the "sha256_1mib" benchmark row.)
    m = items(8e-3, 8e-3, thread_speedup=1.9, speedup_threads=2, ship_caller=2e-4)
    plan = decide(m._replace(ship_worker=2e-4), WARM, 24)
    assert plan.kind == "thread"
    assert plan.predicted["thread"] < plan.predicted["process"]
