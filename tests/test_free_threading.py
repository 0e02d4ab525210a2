"""Free-threaded CPython (3.13t, 3.14t): with the GIL disabled, threads run Python in parallel.

No free-threaded interpreter is installed where these tests were written: they inject the
flag (``sys._is_gil_enabled``) and the speed-up the thread test would measure.
"""

from __future__ import annotations

import sys

import pytest

from autopar import _cpus
from autopar._auto import pool_costs
from autopar._auto.cost_model import Measurements, decide
from tests.test_many_cores import machine


def python_items(wall: float, speedup, ship: float = 0.0) -> Measurements:
    return Measurements(
        wall=wall,
        cpu=wall,
        samples=20,
        thread_speedup=speedup,
        speedup_threads=2 if speedup is not None else 0,
        ship_caller=ship,
        ship_worker=ship,
    )


@pytest.mark.parametrize("cores", [2, 16, 64, 128])
@pytest.mark.parametrize("ship", [0.0, 20e-6, 1e-3])
def test_measured_parallel_threads_beat_processes_without_a_gil(cores, ship):
    # Pure Python on a GIL-free interpreter: the thread test sees two threads run ~2x.
    plan = decide(python_items(2e-3, 1.9, ship), machine(cores, gil=False), 20_000)
    assert plan.kind == "thread"
    assert plan.workers == cores
    assert plan.predicted["thread"] < plan.predicted["process"]


@pytest.mark.parametrize("cores", [2, 16])
def test_with_the_gil_the_same_items_go_to_processes(cores):
    plan = decide(python_items(2e-3, 1.0), machine(cores, gil=True), 20_000)
    assert plan.kind == "process"


def test_without_a_gil_items_the_thread_test_skipped_still_run_on_threads():
    # Items too long for the thread test (no speed-up measured): the flag decides.
    m = python_items(0.5, None)
    free = decide(m, machine(16, gil=False, cold=True), 64)
    assert (free.kind, free.workers) == ("thread", 16)
    assert "free-threaded" in free.reason
    assert decide(m, machine(16, gil=True, cold=True), 64).kind == "process"


def test_a_measured_speed_up_wins_over_the_flag():
    # Items that serialise on a lock of their own: no GIL, but two threads ran no faster.
    plan = decide(python_items(2e-3, 1.0), machine(16, gil=False), 20_000)
    assert plan.kind == "process"


@pytest.mark.parametrize(("flag", "expected"), [(False, False), (True, True)])
def test_gil_enabled_reads_the_interpreter(monkeypatch, flag, expected):
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: flag, raising=False)
    assert _cpus.gil_enabled() is expected
    monkeypatch.setattr(pool_costs, "_measured", {})
    from autopar import _config

    assert pool_costs.current(_config.Config(), time_threads=False).gil is expected


def test_an_interpreter_without_the_check_has_a_gil(monkeypatch):
    monkeypatch.delattr(sys, "_is_gil_enabled", raising=False)
    assert _cpus.gil_enabled() is True
