"""What the pools cost on this machine: figures that stay true for the program."""

import collections

import pytest

import autopar
from autopar import _config, parallel
from autopar._auto import pool_costs
from autopar._execute import thread_pool
from tests import helpers


def test_thread_start_follows_the_starts_seen_in_calls(monkeypatch):
    # Five starts timed at a busy moment must not stay the figure for the whole program:
    # every start in a call counts, and the median of the latest is the figure.
    busy_moment = 0.05  # 50 ms a start: far beyond any real one
    monkeypatch.setattr(pool_costs, "_measured", {})
    monkeypatch.setattr(thread_pool, "_start_times", collections.deque(maxlen=31))
    monkeypatch.setattr(pool_costs, "_time_thread_costs", lambda: ([busy_moment] * 5, 50e-6))
    assert pool_costs.thread_costs()["thread_start"] == busy_moment
    autopar.shutdown()  # so that the call below starts its threads afresh
    f = parallel(kind="thread", workers=8, chunksize=1)(helpers.nap)
    assert f.map([0.02] * 8) == [0.02] * 8
    assert len(thread_pool.start_times()) >= 5 + 6
    assert pool_costs.thread_costs()["thread_start"] < busy_moment
    assert pool_costs.measured()["thread_start"] < busy_moment  # (python -m autopar info)


def test_each_further_worker_is_the_median_gap_between_submits():
    # The first submit also starts the forkserver; the gaps after it are one worker each.
    assert pool_costs._worker_start([0.050, 0.054, 0.057, 0.062]) == pytest.approx(0.004)
    assert pool_costs._worker_start([0.050]) is None  # one worker: nothing to tell apart


def test_many_core_costs_use_priors_until_measured_and_a_measured_zero_stands(monkeypatch):
    config = _config.Config()
    monkeypatch.setattr(pool_costs, "_measured", {})
    o = pool_costs.current(config, time_threads=False)
    assert o.process_worker_start == pool_costs.PRIOR_PROCESS_WORKER_START
    assert o.process_handoff == pool_costs.PRIOR_PROCESS_HANDOFF
    monkeypatch.setattr(
        pool_costs,
        "_measured",
        {"process_worker_start": 0.0, "process_handoff": 1e-4},
    )
    o = pool_costs.current(config, time_threads=False)
    assert (o.process_worker_start, o.process_handoff) == (0.0, 1e-4)
    assert o.cores == _config.cpu_count()


@pytest.mark.timeout(60)
def test_a_pool_warmed_in_the_background_records_no_costs(monkeypatch):
    # Beside the program's own work, round trips read many times their cost: priors stand
    # in until a start in the foreground measures them.
    monkeypatch.setattr(pool_costs, "_measured", {})
    autopar.shutdown()
    pool_costs.warm_process_pool(_config.Config(), 2, record_start=False)
    process_costs = {"process_start", "process_worker_start", "process_dispatch"}
    assert not process_costs & set(pool_costs.measured()), pool_costs.measured()
    pool_costs.warm_process_pool(_config.Config(), 2)  # (warm now: the start is not timed)
    assert {"process_dispatch", "process_handoff"} <= set(pool_costs.measured())


@pytest.mark.timeout(60)
def test_a_pool_for_later_calls_starts_whole_after_the_call_and_is_cold_until_up(monkeypatch):
    # Nothing of it starts beside the call that asked (not even the server its workers
    # fork from); once that call ends it starts, and it is cold to every plan until its
    # workers are up: a call meanwhile goes on without it and watches for it.
    import threading
    import time

    from autopar._execute import forkserver, registry

    servers = []
    start_server = forkserver.start
    monkeypatch.setattr(forkserver, "start", lambda m: (servers.append(m), start_server(m)))
    config = _config.current()
    autopar.shutdown()
    ended = threading.Event()
    ready = pool_costs.warm_in_background(config, 2, prime=helpers.square, after=ended)
    try:
        assert ready is not None and pool_costs.starting() is ready
        time.sleep(0.2)
        assert servers == [] and registry.peek("process") is None
        assert not pool_costs.process_warm(config)
        ended.set()
        assert ready.wait(30)
        assert pool_costs.process_warm(config) and pool_costs.starting() is None
    finally:
        ended.set()
        autopar.shutdown()


@pytest.mark.timeout(90)
def test_a_pool_starting_in_the_background_finds_its_modules_imported():
    # The start's imports are made in the thread that asks for it: a background thread
    # importing beside a caller computing in Python waits for the GIL after each system
    # call. Seen in a fresh interpreter (here they are long imported).
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys, threading
        from autopar import _config
        from autopar._auto import pool_costs
        ended = threading.Event()
        ready = pool_costs.warm_in_background(_config.current(), 2, prime=None, after=ended)
        before = set(sys.modules)
        ended.set()
        assert ready is not None and ready.wait(60)
        late = sorted(
            m for m in set(sys.modules) - before
            if m.split(".")[0] in ("multiprocessing", "concurrent", "autopar", "subprocess")
        )
        print(late)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


def test_what_calls_missed_adds_up_until_a_pool_starts(monkeypatch):
    import threading

    monkeypatch.setattr(pool_costs, "_owed", [0.0])
    assert pool_costs.owe(0.03) == pytest.approx(0.03)
    assert pool_costs.owe(-1.0) == pytest.approx(0.03)  # (a call that lost nothing)
    assert pool_costs.owe(0.05) == pytest.approx(0.08)
    never = threading.Event()
    assert pool_costs.warm_in_background(_config.current(), 2, prime=None, after=never)
    try:
        assert pool_costs.owe(0.0) == 0.0
    finally:
        autopar.shutdown()


@pytest.mark.timeout(60)
def test_a_pool_started_beside_a_call_is_cold_to_it_until_its_workers_are_up():
    # Started now (the call is long enough): the workers start before the call ends, and
    # the pool is cold to every plan until they are up, then warm though the call runs on.
    import threading
    import time

    from autopar._execute import registry

    config = _config.current()
    autopar.shutdown()
    ended = threading.Event()
    ready = pool_costs.warm_in_background(config, 2, prime=None, after=ended, now=True)
    try:
        assert ready is not None
        if not ready.is_set():
            assert not pool_costs.process_warm(config)
        assert ready.wait(30) and not ended.is_set()
        assert registry.peek("process") is not None and pool_costs.process_warm(config)
        deadline = time.monotonic() + 5
        while registry.warming() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not registry.warming()
    finally:
        ended.set()
        autopar.shutdown()


@pytest.mark.timeout(30)
def test_shutdown_does_not_wait_for_a_call_that_never_ends():
    # A warm-up waits for its call; an abandoned call (an imap never finished) must not
    # hold shutdown (or exit) for long, nor have a pool start behind shutdown's back.
    import threading
    import time

    from autopar._execute import registry

    config = _config.current()
    autopar.shutdown()
    never = threading.Event()
    pool_costs.warm_in_background(config, 2, prime=None, after=never)
    t0 = time.monotonic()
    autopar.shutdown()
    assert time.monotonic() - t0 < 5
    assert not registry.warming() and registry.peek("process") is None


def test_a_pool_for_later_calls_that_cannot_start_does_not_fail_the_call(monkeypatch):
    # (Its server fails to start: out of processes, say.) The call that asked goes on,
    # and nothing waits in the background.
    import threading

    from autopar._execute import forkserver, registry

    def refuse(start_method):
        raise OSError("no more processes")

    monkeypatch.setattr(forkserver, "start", refuse)
    autopar.shutdown()
    config = _config.current()
    ready = pool_costs.warm_in_background(config, 2, prime=None, after=threading.Event(), now=True)
    assert ready is None and not registry.warming()
    ended = threading.Event()  # (after the call: on its thread, which logs and gives up)
    ready = pool_costs.warm_in_background(config, 2, prime=None, after=ended)
    ended.set()
    if ready is not None:
        assert ready.wait(30)
    assert registry.peek("process") is None and not pool_costs.process_warm(config)


def _costs(**fields):
    from autopar._auto.cost_model import Measurements

    return Measurements(**{"samples": 32, **fields})


def test_thread_costs_are_timed_only_where_threads_could_win_with_them_free(monkeypatch):
    timed = []

    def timing():
        timed.append(True)
        return [1e-4] * 5, 5e-5

    monkeypatch.setattr(pool_costs, "_measured", {})
    monkeypatch.setattr(pool_costs, "_time_thread_costs", timing)
    config = _config.Config()
    # Python code that two threads ran no faster than one: threads lose even for free.
    holds_gil = _costs(wall=1e-4, cpu=1e-4, thread_speedup=1.0)
    o = pool_costs.for_items(config, holds_gil, 2_000)
    assert not timed and not o.threads_measured
    assert o.thread_dispatch == pool_costs.PRIOR_THREAD_DISPATCH
    # Waiting items: threads win if their costs allow it, so those are timed.
    waits = _costs(wall=1e-3, cpu=1e-5)
    o = pool_costs.for_items(config, waits, 2_000)
    assert timed == [True] and o.threads_measured
    # Once measured, they stand for every plan after, timed no more.
    assert pool_costs.for_items(config, holds_gil, 2_000).threads_measured
    assert timed == [True]


def test_a_serial_reason_cites_no_thread_cost_that_was_not_measured(monkeypatch):
    from autopar._auto import cost_model

    monkeypatch.setattr(pool_costs, "_measured", {})
    config = _config.Config()
    # Under the prior hand-off of 50 us, and dear to ship to a process.
    cheap = _costs(wall=2e-5, cpu=2e-5, ship_worker=5e-4)
    unmeasured = pool_costs.current(config, time_threads=False)
    plan = cost_model.decide(cheap, unmeasured, 100)
    assert plan.kind == "serial"
    assert "handing it to a thread" not in plan.reason, plan.reason
    measured = unmeasured._replace(threads_measured=True)
    assert "handing it to a thread" in cost_model.decide(cheap, measured, 100).reason
