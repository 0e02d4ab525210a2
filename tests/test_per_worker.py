"""per_worker(): a value built once per worker, on every kind, and torn down."""

from __future__ import annotations

import os
import pickle
import threading

import pytest

import autopar
from autopar import parallel, per_worker
from autopar._execute import per_worker as state
from tests import helpers

pytestmark = pytest.mark.timeout(60)


def test_a_handle_builds_once_per_thread_unless_thread_safe():
    builds = []
    per_thread = per_worker(lambda: builds.append(threading.get_ident()) or len(builds))
    shared = per_worker(thread_safe=True)(lambda: object())
    seen = []
    together = threading.Barrier(4)  # all alive at once: no thread ident is reused

    def use():
        seen.append((per_thread(), per_thread(), shared()))
        together.wait(timeout=10)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 4 and len(set(builds)) == 4
    assert all(a == b for a, b, _ in seen)
    assert len({id(s) for _, _, s in seen}) == 1


def test_copies_in_one_process_share_the_value():
    handle = per_worker(helpers.new_object, thread_safe=True)
    copy = pickle.loads(pickle.dumps(handle))
    assert copy is handle
    assert copy() is handle()


def test_plain_calls_work_without_any_pool(tmp_path):
    log = tmp_path / "builds"
    assert helpers.use_counted_state((str(log), 3)) == 3
    assert helpers.use_counted_state((str(log), 4)) == 4
    assert log.read_text().split() == [str(os.getpid())]


@pytest.mark.parametrize("kind", ["serial", "thread", "process"])
def test_built_once_per_worker_on_each_kind(kind, tmp_path):
    log = tmp_path / "builds"
    f = parallel(helpers.use_counted_state, kind=kind, workers=2)
    items = [(str(log), i) for i in range(60)]
    assert f.map(items, chunksize=1) == list(range(60))
    assert f.map(items, chunksize=1) == list(range(60))
    builds = log.read_text().split()
    assert len(builds) == len(set(builds)), f"a worker built its value twice: {builds}"
    if kind == "process":
        assert str(os.getpid()) not in builds and 1 <= len(builds) <= 2
    elif kind == "serial":
        assert builds == [f"{os.getpid()}"]


def test_values_built_here_are_torn_down_at_shutdown():
    closed = []
    handle = per_worker(lambda: ["open"], teardown=closed.append)
    value = handle()
    autopar.shutdown()
    assert closed == [value]
    assert handle() is not value  # built afresh after a shutdown


def test_process_workers_tear_down_when_they_exit(tmp_path):
    log = tmp_path / "teardowns"
    f = parallel(helpers.use_torn_down_state, kind="process", workers=2)
    f.map([(str(log), i) for i in range(20)], chunksize=1)
    autopar.shutdown()  # workers exit normally: each runs its teardown
    pids = log.read_text().split()
    assert pids and len(pids) == len(set(pids))
    assert str(os.getpid()) not in pids


def test_a_teardown_that_raises_is_logged_and_others_still_run(caplog):
    closed = []
    bad = per_worker(lambda: 1, teardown=lambda v: 1 / 0)
    good = per_worker(lambda: 2, teardown=closed.append)
    bad(), good()
    state.tear_down()
    assert closed == [2]
    assert "teardown raised" in caplog.text


def test_bad_arguments_name_the_culprit():
    with pytest.raises(TypeError, match="callable factory"):
        per_worker(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="teardown="):
        per_worker(lambda: 1, teardown=3)  # type: ignore[arg-type]


def test_build_time_is_kept_out_of_item_timing_and_priced_apart():
    f = parallel(helpers.use_slow_state)
    assert f.map(range(40)) == list(range(40))
    measured = f.last_plan.measured
    # The 0.3 s build happened inside one probed item; the items themselves cost ~0.
    assert measured["wall"] < 0.05
    assert measured["setup_per_process"] >= 0.3


_FORKED = """
import os
import sys

from autopar import parallel, per_worker, shutdown

log = sys.argv[1]

def record(tag, value):
    with open(log, "a") as f:
        f.write(f"{tag}:{value}:{os.getpid()}\\n")

def shared_down(value):
    record("shared", value)

def thread_down(value):
    record("thread", value)

shared = per_worker(os.getpid, teardown=shared_down, thread_safe=True)
per_thread = per_worker(os.getpid, teardown=thread_down)

def values(_):
    return shared(), per_thread(), os.getpid()

if __name__ == "__main__":
    here = (shared(), per_thread())  # built in the caller before its workers fork
    out = parallel(values, kind="process", workers=2).map(range(8), chunksize=1)
    shutdown()
    print(here == (os.getpid(), os.getpid()), all(a == b == pid for a, b, pid in out))
"""


def test_forked_workers_build_their_own_values_and_leave_the_callers_alone(tmp_path):
    # Under fork a worker starts as a copy of the caller, values and teardown list
    # included: it must build its own, and tear down only its own.
    from tests.conftest import run_python

    log = tmp_path / "teardowns"
    proc = run_python(_FORKED, env={"AUTOPAR_START_METHOD": "fork"}, args=(str(log),))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
    torn = [tuple(line.split(":")) for line in log.read_text().split()]
    assert torn and all(value == pid for _, value, pid in torn), torn
    assert len(torn) == len(set(torn)), torn  # (each value torn down once)
