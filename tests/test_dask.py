"""kind="dask" against a real cluster: a LocalCluster of two worker processes, one thread each."""

from __future__ import annotations

import os
import socket
import threading
import time

import dask
import distributed
import pytest

import autopar
from autopar import (
    AutoparError,
    AutoparTimeoutError,
    ItemFailure,
    RemoteTraceback,
    parallel,
)
from autopar._auto import pool_costs
from autopar._execute import registry
from autopar._execute.backends import dask as dask_backend
from autopar.errors import PicklingFailedError, WorkerCrashedError
from tests import helpers
from tests.conftest import run_python


@pytest.fixture(scope="module")
def client():
    # allowed-failures=1: a task whose worker dies is retried once, then reported, so the
    # crash tests cost two worker restarts rather than dask's default four.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    # The cluster closes a worker's nanny for good when, lost-worker-timeout after one of
    # its deaths, the worker is away again (restarting after the next death): the poison
    # item tests kill workers often enough to meet that. (Read at each death: kept set.)
    lasting = dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"})
    # Not the default client: each test says whether a Client is active (see `active`).
    with lasting, cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c
        autopar.shutdown()


@pytest.fixture
def active(client):
    """The module's Client, made the current one for the test (as a user's own Client is)."""
    with client.as_current():
        yield client
    autopar.shutdown()


def worker_pids(client):
    client.wait_for_workers(2, timeout=60)
    return set(client.run(os.getpid).values())


def test_map_imap_unordered_and_starmap_match_builtins(active):
    f = parallel(kind="dask")(helpers.square)
    assert f.map(range(100)) == [x * x for x in range(100)]
    assert f.map([]) == []
    assert sorted(f.imap_unordered(range(50))) == [x * x for x in range(50)]
    assert parallel(kind="dask")(helpers.add).starmap([(1, 2), (3, 4)]) == [3, 7]


def test_runs_on_the_clusters_worker_processes(active):
    f = parallel(kind="dask", chunksize=1)(helpers.pid)
    pids = set(f.map(range(8)))
    assert os.getpid() not in pids
    assert pids <= worker_pids(active)


def test_plan_shows_dask_and_the_clusters_thread_count(active):
    f = parallel(kind="dask")(helpers.square)
    f.map(range(10))
    assert f.last_plan is not None
    assert (f.last_plan.kind, f.last_plan.workers) == ("dask", 2)
    assert "ran on: dask (workers=2" in f.explain()


def test_items_are_batched_into_one_task_per_chunk(active, monkeypatch):
    sizes = helpers.spy_chunk_sizes(monkeypatch, dask_backend.DaskBackend)
    assert parallel(kind="dask")(helpers.square).map(range(100)) == [x * x for x in range(100)]
    assert sizes == [13] * 7 + [9]  # about four chunks per worker thread, as for processes


def test_imap_keeps_order_and_reads_a_bounded_distance_ahead(active):
    seen = []

    def source():
        for i in range(10_000):
            seen.append(i)
            yield i

    f = parallel(kind="dask", workers=2, chunksize=2)(helpers.identity)
    results = f.imap(source())
    assert [next(results) for _ in range(10)] == list(range(10))
    results.close()
    # Consumed, plus the window: a pool that ships chunks and is the call's size keeps one
    # more chunk per worker queued, so 2 workers x 2 chunks of 2 items.
    assert len(seen) <= 10 + 2 * 2 * 2


def test_worker_exception_keeps_its_type_index_and_traceback(active):
    f = parallel(kind="dask", chunksize=2)(helpers.fail_on_three)
    with pytest.raises(ValueError, match="item 3 is bad") as info:
        f.map(range(10))
    assert info.value.autopar_index == 3
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fail_on_three" in info.value.__cause__.tb


def test_unpicklable_item_is_named_by_index(active):
    f = parallel(kind="dask", chunksize=1)(helpers.identity)
    with pytest.raises(PicklingFailedError, match="item 2 cannot be pickled") as info:
        f.map([1, 2, threading.Lock()])
    assert info.value.index == 2


def test_nested_call_inside_a_task_runs_serially(active):
    f = parallel(kind="dask")(helpers.outer_sum)
    assert f.map([4]) == [(0 + 1 + 4 + 9, "serial")]


def test_timeout_stops_the_call(active):
    f = parallel(kind="dask", chunksize=4, timeout=0.5)(helpers.nap)
    with pytest.raises(AutoparTimeoutError):
        f.map([0.2] * 8)
    assert f.map([0.0, 0.0]) == [0.0, 0.0]  # the pool still serves the next call


def test_abort_cancels_tasks_in_flight_but_keeps_the_users_client(active):
    f = parallel(kind="dask")(helpers.nap)
    f.map([0.0])
    backend = registry.peek("dask")
    payload = backend.prepare(helpers.nap)
    bridges = [backend.submit(payload, i, [0.3], star=False, deadline=None) for i in range(3)]
    tasks = [b.task for b in bridges]
    backend.abort()
    assert all(b.cancelled() for b in bridges)
    assert [t.status for t in tasks] == ["cancelled"] * 3
    assert active.status == "running"


def test_kind_from_the_environment(active, monkeypatch):
    monkeypatch.setenv("AUTOPAR_KIND", "dask")
    f = parallel(helpers.square)
    assert f.map(range(5)) == [0, 1, 4, 9, 16]
    assert f.last_plan is not None and f.last_plan.kind == "dask"


def test_address_route_connects_and_shutdown_closes_only_its_own_client(client, monkeypatch):
    monkeypatch.setenv("AUTOPAR_DASK_ADDRESS", client.scheduler.address)
    f = parallel(kind="dask", chunksize=1)(helpers.pid)
    assert set(f.map(range(4))) <= worker_pids(client)
    own = registry.peek("dask").client
    assert own is not client
    autopar.shutdown()
    assert own.status == "closed"
    assert client.status == "running"


def test_without_a_cluster_the_error_says_how_to_name_one():
    f = parallel(kind="dask")(helpers.square)
    with pytest.raises(AutoparError, match="AUTOPAR_DASK_ADDRESS") as info:
        f.map([1, 2])
    assert "distributed.Client" in str(info.value)


def test_unreachable_address_is_reported(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AUTOPAR_DASK_ADDRESS", f"tcp://127.0.0.1:{port}")
    f = parallel(kind="dask")(helpers.square)
    fail_fast = dask.config.set({"distributed.comm.timeouts.connect": "1s"})
    with fail_fast, pytest.raises(AutoparError, match="could not connect to the dask scheduler"):
        f.map([1, 2])


def test_without_the_extra_the_error_names_it():
    proc = run_python(
        """
        import sys
        sys.modules["distributed"] = None  # as if dask.distributed were not installed
        from autopar import parallel
        from tests.helpers import square
        try:
            parallel(kind="dask")(square).map([1, 2])
        except ImportError as exc:
            print("ImportError:", exc)
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ImportError: kind='dask' needs dask.distributed" in proc.stdout
    assert "pip install 'autopar[dask]'" in proc.stdout


def test_a_script_on_the_address_route_exits_cleanly(client):
    proc = run_python(
        """
        from autopar import parallel
        from tests.helpers import square
        print(parallel(kind="dask")(square).map(range(5)))
        """,
        env={"AUTOPAR_DASK_ADDRESS": client.scheduler.address},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 1, 4, 9, 16]"
    assert "Traceback" not in proc.stderr


def test_measure_dispatch_returns_seconds_per_task(client):
    seconds = dask_backend.measure_dispatch(client, tasks=5)
    assert isinstance(seconds, float) and seconds > 0


# Last: these kill worker processes, which the nannies restart (worker_pids waits for them).
def test_a_worker_that_dies_once_is_retried(active, tmp_path):
    f = parallel(kind="dask")(helpers.die_once)
    assert f.map([str(tmp_path / "died")]) == ["survived"]
    worker_pids(active)


def test_a_task_that_keeps_killing_workers_is_reported(active):
    f = parallel(kind="dask", chunksize=2)(helpers.die_always)
    with pytest.raises(WorkerCrashedError, match=r"dask gave up on items 0\.\.1") as info:
        f.map(range(2))
    assert info.value.items == range(0, 2)
    worker_pids(active)


def stray_tasks(client):
    """autopar's tasks the scheduler still holds, after a few seconds to forget them."""

    def held(dask_scheduler):
        return [str(key) for key in dask_scheduler.tasks if str(key).startswith("autopar-")]

    for _ in range(100):
        left = client.run_on_scheduler(held)
        if not left:
            break
        time.sleep(0.1)
    return left


POISON = 5  # helpers.die_on kills its worker at this item


@pytest.mark.timeout(120)
def test_a_poison_item_is_isolated_and_the_others_get_their_results(active):
    f = parallel(kind="dask", chunksize=4)(helpers.die_on)
    got = f.map(range(12), errors="return")
    assert [v for i, v in enumerate(got) if i != POISON] == [
        i * i for i in range(12) if i != POISON
    ]
    failure = got[POISON]
    assert isinstance(failure, ItemFailure) and failure.index == POISON
    assert type(failure.exception) is WorkerCrashedError
    assert failure.exception.items == range(POISON, POISON + 1)
    assert f"item {POISON} killed the dask worker" in str(failure.exception)
    assert [x.index for x in f.last_failures] == [POISON]
    assert stray_tasks(active) == []
    worker_pids(active)


@pytest.mark.timeout(120)
def test_a_poison_item_is_left_out_of_a_stream_under_skip(active):
    f = parallel(kind="dask", chunksize=4)(helpers.die_on)
    assert list(f.imap(range(12), errors="skip")) == [i * i for i in range(12) if i != POISON]
    assert [x.index for x in f.last_failures] == [POISON]
    assert stray_tasks(active) == []
    worker_pids(active)


@pytest.mark.timeout(120)
def test_a_poison_item_is_retried_when_named_and_still_fails(active):
    f = parallel(kind="dask", chunksize=4)(helpers.die_on)
    got = f.map(range(12), errors="return", retries=1, retry_on=WorkerCrashedError)
    assert [v for i, v in enumerate(got) if i != POISON] == [
        i * i for i in range(12) if i != POISON
    ]
    assert type(got[POISON].exception) is WorkerCrashedError
    assert got[POISON].attempts == 2
    assert stray_tasks(active) == []
    worker_pids(active)


@pytest.mark.timeout(120)
def test_under_raise_with_a_policy_the_error_names_the_poison_item(active):
    f = parallel(kind="dask", chunksize=4)(helpers.die_on)
    with pytest.raises(WorkerCrashedError, match=f"item {POISON} killed") as info:
        f.map(range(12), retries=1, retry_on=ConnectionError)
    assert info.value.items == range(POISON, POISON + 1)
    assert info.value.autopar_index == POISON
    assert set(range(POISON)) <= set(info.value.partial_results)
    assert info.value.partial_results[POISON - 1] == (POISON - 1) ** 2
    assert stray_tasks(active) == []
    worker_pids(active)


def test_auto_shows_the_cluster_as_a_candidate_when_an_address_is_set(
    client, monkeypatch, no_pilot
):
    monkeypatch.setenv("AUTOPAR_DASK_ADDRESS", client.scheduler.address)
    f = parallel(helpers.square)
    assert f.map(range(500)) == [x * x for x in range(500)]
    plan = f.last_plan
    assert "dask" in plan.predicted  # measured and predicted, with its time
    assert plan.kind != "dask"  # tiny items: the scheduler's cost per task cannot pay
    assert plan.predicted["dask"] > plan.predicted["serial"]
    assert "dask" in f.explain()


def test_shutdown_closes_the_client_auto_connected_only_to_measure(client, monkeypatch, no_pilot):
    # Left open, that Client retried its vanished scheduler for the rest of the test run.
    autopar.shutdown()  # (no pool or Client left from an earlier test)
    monkeypatch.setenv("AUTOPAR_DASK_ADDRESS", client.scheduler.address)
    monkeypatch.setattr(pool_costs, "_clusters", {})  # measured afresh: connects again
    f = parallel(helpers.square)
    f.map(range(500))
    assert f.last_plan.kind != "dask" and registry.peek("dask") is None  # no pool on it
    own = dask_backend._owned[1]
    assert own is not client and own.status == "running"
    autopar.shutdown()
    assert own.status == "closed"
    assert client.status == "running"


def test_auto_leaves_the_cluster_out_without_an_address():
    f = parallel(helpers.square)
    f.map(range(500))
    assert "dask" not in f.last_plan.predicted


@pytest.mark.timeout(90)
def test_per_item_policies_on_dask(active, tmp_path):
    from autopar import ItemFailure, ItemTimeoutError
    from tests import outcome_helpers as h

    place = str(tmp_path)
    pairs = [(i, place) for i in range(12)]
    try:
        got = parallel(kind="dask")(h.raises).map(pairs, errors="return")
        assert [v for i, v in enumerate(got) if i != h.BAD] == [
            i * i for i in range(12) if i != h.BAD
        ]
        assert isinstance(got[h.BAD], ItemFailure) and type(got[h.BAD].exception) is ValueError
        streamed = list(parallel(kind="dask")(h.raises).imap(pairs, errors="skip"))
        assert streamed == [i * i for i in range(12) if i != h.BAD]
        flaky = parallel(kind="dask")(h.flaky)
        assert flaky.map(pairs, retries=2, retry_on=ConnectionError) == [i * i for i in range(12)]
        assert h.attempts(place, h.FLAKY) == 3
        hung = parallel(kind="dask")(h.hangs).map(pairs, item_timeout=1.0, errors="return")
        assert isinstance(hung[h.HUNG].exception, ItemTimeoutError)
        assert [v for i, v in enumerate(hung) if i != h.HUNG] == [
            i * i for i in range(12) if i != h.HUNG
        ]
    finally:
        (tmp_path / "release").touch()  # the abandoned item's thread on its worker ends


def test_a_large_function_is_scattered_once_not_sent_with_each_task(active, monkeypatch):
    import functools

    sent = []
    submit = active.submit

    def spy(fn, payload, *args, **kwargs):
        sent.append(payload)
        return submit(fn, payload, *args, **kwargs)

    monkeypatch.setattr(active, "submit", spy)
    table = bytes(range(256)) * 1024  # 256 KiB: over LARGE_FUNCTION
    f = parallel(functools.partial(helpers.look_up, table), kind="dask")
    for _ in range(2):
        assert f.map(range(50), chunksize=1) == [i % 256 for i in range(50)]
    assert len(sent) == 100
    assert all(isinstance(p, distributed.Future) for p in sent)
    assert len({p.key for p in sent}) == 1  # the second call reused the first's
    small = parallel(helpers.square, kind="dask")
    small.map(range(4), chunksize=1)
    assert all(isinstance(p, bytes) for p in sent[100:])
