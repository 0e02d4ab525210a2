"""Pools over a program's life: recycling workers, exiting, and calls refused up front.

Must hold: with AUTOPAR_MAX_TASKS_PER_CHILD a worker is replaced after that many tasks
(and without it, kept); a program that exits with stuck workers, with a call still
running in a daemon thread, or after a worker crashed, exits at once, silently, with its
own exit code; a bad argument (items not iterable, a bad timeout or chunksize) fails with
an error naming it before any work or pool starts, and a bad AUTOPAR_MAX_TASKS_PER_CHILD
with an error naming the variable.
"""

from __future__ import annotations

import pytest

from tests.conftest import run_python
from tests.faults import script


def test_workers_are_recycled_after_max_tasks_per_child():
    out = script(
        """
        from autopar import parallel
        from tests import helpers

        f = parallel(kind="process", workers=1)(helpers.pid)
        pids = f.map(range(8), chunksize=1)  # 8 tasks, one worker, 2 tasks per worker
        assert len(set(pids)) >= 4, pids
        assert [len(set(pids[i : i + 2])) for i in range(0, 8, 2)] == [1, 1, 1, 1], pids
        assert parallel(kind="process", workers=1)(helpers.square).map(range(5)) == [0, 1, 4, 9, 16]
        print("ok")
        """,
        env={"AUTOPAR_MAX_TASKS_PER_CHILD": "2"},
    )
    assert out.strip() == "ok"


def test_workers_are_kept_without_max_tasks_per_child():
    out = script(
        """
        from autopar import parallel
        from tests import helpers

        print(len(set(parallel(kind="process", workers=1)(helpers.pid).map(range(8), chunksize=1))))
        """
    )
    assert out.strip() == "1"


STUCK_AT_EXIT = """
import sys, threading, time
from autopar import AutoparTimeoutError, parallel
from tests import helpers

def abandon(kind):
    try:
        parallel(kind=kind, workers=2)(helpers.nap).map([600.0, 600.0], timeout=0.3)
    except AutoparTimeoutError:
        pass

# One call times out in a background thread and leaves its workers stuck; another stays
# running when the program ends.
t = threading.Thread(target=abandon, args=("{kind}",))
t.start()
t.join()
background = threading.Thread(
    target=parallel(kind="{kind}", workers=2)(helpers.nap).map, args=([600.0, 600.0],), daemon=True
)
background.start()
time.sleep(1.0)
print("exiting", flush=True)
sys.exit(7)
"""


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_exit_with_stuck_workers_is_quick_silent_and_keeps_the_exit_code(kind):
    proc = run_python(STUCK_AT_EXIT.format(kind=kind), timeout=30)
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.strip() == "exiting"
    assert proc.stderr == ""  # no resource-tracker or leaked-semaphore warnings


def test_exit_after_a_crash_is_silent():
    proc = run_python(
        """
        from autopar import WorkerCrashedError, parallel
        from tests import helpers
        try:
            parallel(kind="process", workers=2)(helpers.die_on_kill).map(range(10), chunksize=1)
        except WorkerCrashedError:
            print("crashed")
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "crashed"
    assert proc.stderr == ""


@pytest.mark.parametrize("method", ["map", "imap", "imap_unordered", "starmap"])
def test_non_iterable_items_is_a_type_error_naming_items_before_any_work(method):
    from autopar import parallel
    from autopar._execute import registry
    from tests import helpers

    f = parallel(kind="process")(helpers.square)
    before = registry.peek("process")
    with pytest.raises(TypeError, match="items"):
        getattr(f, method)(5)
    assert registry.peek("process") is before  # no pool was started for it


@pytest.mark.parametrize(
    ("kwargs", "error", "culprit"),
    [
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": "1"}, TypeError, "timeout"),
        ({"chunksize": 0}, ValueError, "chunksize"),
        ({"chunksize": 1.5}, TypeError, "chunksize"),
    ],
)
def test_bad_call_arguments_fail_before_any_work(kwargs, error, culprit):
    from autopar import parallel

    calls = []
    f = parallel(kind="thread")(calls.append)
    for method in ("map", "imap", "imap_unordered"):
        with pytest.raises(error, match=culprit):
            list(getattr(f, method)(range(3), **kwargs))
    assert calls == []


def test_bad_max_tasks_per_child_names_the_variable(monkeypatch):
    from autopar import parallel
    from tests import helpers

    monkeypatch.setenv("AUTOPAR_MAX_TASKS_PER_CHILD", "0")
    with pytest.raises(ValueError, match="AUTOPAR_MAX_TASKS_PER_CHILD"):
        parallel(kind="process")(helpers.square).map(range(3))
