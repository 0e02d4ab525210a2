"""The cost model on 2 to 128 cores, from injected measurements (no such machine needed).

On many cores a process pool's start grows with its size (workers start one after
another), one caller hands out every chunk, and a call of a few hundred items cannot feed
every worker. No many-core machine has measured these yet (benchmarks/RESULTS.md): the
figures below are the 2-core priors of autopar._auto.pool_costs.
"""

from __future__ import annotations

import math

import pytest

from autopar._auto import pool_costs
from autopar._auto.cost_model import (
    Measurements,
    Overheads,
    decide,
    feedable_workers,
    process_time_with,
)

CORES = (2, 16, 64, 128)


def machine(
    cores: int, *, cold: bool = False, handoff: float = 70e-6, gil: bool = True
) -> Overheads:
    return Overheads(
        cores=cores,
        thread_dispatch=30e-6,
        thread_start=80e-6,
        threads_started=0,
        process_dispatch=300e-6,
        process_start=0.15 if cold else 0.0,
        process_worker_start=0.004,
        process_handoff=handoff,
        gil=gil,
    )


def gil_bound(wall: float) -> Measurements:
    return Measurements(wall=wall, cpu=wall, samples=20, thread_speedup=1.0, speedup_threads=2)


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("cold", [False, True])
def test_a_long_call_uses_every_core(cores, cold):
    plan = decide(gil_bound(5e-3), machine(cores, cold=cold), 100_000)
    assert (plan.kind, plan.workers) == ("process", cores)


@pytest.mark.parametrize("handoff", [0.0, 70e-6])
@pytest.mark.parametrize("cores", CORES[1:])
def test_a_few_hundred_cheap_items_cannot_feed_every_worker(cores, handoff):
    m, o, n = gil_bound(1e-4), machine(cores, handoff=handoff), 300
    plan = decide(m, o, n)
    assert plan.kind == "process"
    assert plan.workers <= feedable_workers(m, o, n) == 100  # 30 ms of work / 0.3 ms
    if handoff or cores > 100:
        assert plan.workers < cores
    assert n * m.wall / plan.workers >= o.process_dispatch  # each share outlasts a hand-off


def test_feedable_workers_is_the_work_over_one_hand_off():
    o = machine(128)
    assert feedable_workers(gil_bound(1e-4), o, 300) == 100  # 30 ms of work / 0.3 ms
    assert feedable_workers(gil_bound(1e-6), o, 10) == 1  # never below one
    shipped = gil_bound(1e-4)._replace(ship_worker=1e-4)
    assert feedable_workers(shipped, o, 300) == 200  # a worker's unpickling is its work too


@pytest.mark.parametrize("cores", CORES[1:])
def test_a_cold_pool_is_priced_per_worker(cores):
    m, n = gil_bound(5e-3), 100_000
    cold, warm = machine(cores, cold=True), machine(cores)
    extra = [
        process_time_with(m, cold, n, p)[0] - process_time_with(m, warm, n, p)[0]
        for p in (2, cores)
    ]
    # The pool's own start, then each further worker half a start late on average.
    assert extra[0] == pytest.approx(0.15 + 0.5 * 0.004)
    assert extra[1] == pytest.approx(0.15 + (cores - 1) / 2 * 0.004)


def test_a_short_call_cannot_end_before_its_last_worker_started():
    elapsed = process_time_with(gil_bound(5e-3), machine(128, cold=True), 300, 128)[0]
    assert elapsed >= 0.15 + 127 * 0.004


def test_a_cold_pool_starts_fewer_workers_than_a_warm_one_on_128_cores():
    m, n = gil_bound(5e-3), 300  # 1.5 s of work: 128 workers would start 0.25 s late on average
    cold = decide(m, machine(128, cold=True), n)
    warm = decide(m, machine(128), n)
    assert cold.kind == warm.kind == "process"
    assert cold.workers < warm.workers
    assert cold.workers <= 32


def test_one_caller_hands_out_every_chunk():
    # 128 workers, each chunk costs the caller 70 us: the chunks cannot come faster.
    m, n = gil_bound(1e-4), 100_000
    elapsed, _, chunk = process_time_with(m, machine(128), n, 128)
    assert elapsed >= math.ceil(n / chunk) * 70e-6
    free = process_time_with(m, machine(128, handoff=0.0), n, 128)
    assert free[0] < elapsed  # without contention the model would promise more
    assert chunk > free[2]  # and longer chunks make fewer hand-offs


def test_contended_hand_offs_choose_fewer_workers():
    m, n = gil_bound(1e-3), 300
    assert decide(m, machine(128, handoff=0.0), n).workers == 128
    assert decide(m, machine(128, handoff=1e-3), n).workers < 128


WORKLOADS = [  # (wall, cpu, thread speed-up, items): the rows of test_cost_model.py
    (5e-3, 5e-3, 1.0, 300),
    (1e-3, 1e-3, 1.0, 20),
    (1e-3, 1e-3, 1.0, 300),
    (2e-3, 2e-3, 1.0, 2000),
    (1e-4, 1e-4, 1.0, 100_000),
    (10e-6, 10e-6, 1.0, 100_000),
    (1e-3, 1e-3, 1.9, 200),
    (0.010, 20e-6, None, 200),
]


@pytest.mark.parametrize("cold", [False, True])
@pytest.mark.parametrize(("wall", "cpu", "speedup", "n"), WORKLOADS)
def test_two_cores_decide_as_before_the_many_core_terms(cold, wall, cpu, speedup, n):
    m = Measurements(wall=wall, cpu=cpu, samples=20, thread_speedup=speedup, speedup_threads=2)
    priors = machine(2, cold=cold)._replace(
        process_worker_start=pool_costs.PRIOR_PROCESS_WORKER_START,
        process_handoff=pool_costs.PRIOR_PROCESS_HANDOFF,
    )
    without = priors._replace(process_worker_start=0.0, process_handoff=0.0)
    with_terms, before = decide(m, priors, n), decide(m, without, n)
    assert (with_terms.kind, with_terms.workers) == (before.kind, before.workers)
