"""A process worker dies in the middle of a call: ``os._exit``, SIGKILL, a segfault.

Must hold: the call raises WorkerCrashedError within seconds, naming the item that died
among the lost ones and keeping every finished result in ``partial_results`` (each item
read from the input is one or the other, never both); imap hands out what finished before
the crash; the broken pool is replaced, so the next call works.
"""

from __future__ import annotations

import pytest

from tests.faults import script

CRASH = """
import time
import autopar
from autopar import WorkerCrashedError, parallel
from tests import helpers

f = parallel(kind="process", workers=2)(helpers.die_on_{how})
t0 = time.monotonic()
try:
    f.map(range(40), chunksize=2)
except WorkerCrashedError as exc:
    err = exc
else:
    raise SystemExit("no error")
elapsed = time.monotonic() - t0
assert elapsed < 20, elapsed
assert 5 in err.items, err.items
assert "5" in str(err) and "worker process died" in str(err), str(err)
assert {{0, 1, 2, 3}} <= set(err.partial_results), err.partial_results
assert all(err.partial_results[i] == i * i for i in err.partial_results)
assert 5 not in err.partial_results
# Every item read from the input is accounted for: a result, or named as lost.
assert not set(err.items) & set(err.partial_results)
seen = set(err.items) | set(err.partial_results)
assert seen == set(range(max(seen) + 1)), (err.items, sorted(err.partial_results))
# The broken pool is replaced: the next call works.
g = parallel(kind="process", workers=2)(helpers.square)
assert g.map(range(10)) == [x * x for x in range(10)]
print("ok")
"""


@pytest.mark.parametrize("how", ["exit", "kill", "segfault"])
def test_dead_worker_raises_worker_crashed_error_and_the_next_call_works(how):
    assert script(CRASH.format(how=how), timeout=60).strip() == "ok"


def test_crash_in_imap_names_in_flight_items_and_keeps_unconsumed_results():
    out = script(
        """
        from autopar import WorkerCrashedError, parallel
        from tests import helpers

        f = parallel(kind="process", workers=2)(helpers.die_on_exit)
        got = []
        try:
            for r in f.imap(range(40), chunksize=2):
                got.append(r)
        except WorkerCrashedError as exc:
            err = exc
        assert got == [x * x for x in range(len(got))] and len(got) <= 5, got
        assert 5 in err.items
        # What the loop consumed is the caller's; what finished but was not consumed is kept.
        assert all(err.partial_results[i] == i * i for i in err.partial_results)
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_chunks_of_a_broken_pool_are_left_for_its_manager_thread_to_fail():
    # A dead worker breaks the pool: its manager thread fails every pending chunk, while
    # the caller's clean-up cancels the chunks not started. Before Python 3.12 the
    # manager thread raises on a chunk already cancelled ("InvalidStateError:
    # CANCELLED") and dies with a traceback before its clean-up
    # (tests/test_shared_buffers.py::test_no_segment_is_left_after_a_worker_dies failed
    # so in 2 of 3 full-suite runs on a 2-core VM). So a broken pool's chunks are not
    # cancelled; a sound pool's are.
    from concurrent.futures import Future
    from types import SimpleNamespace

    from autopar._execute.backends.process import ProcessBackend

    backend = ProcessBackend.__new__(ProcessBackend)  # (no pool: only the rule is tried)
    backend._executor = SimpleNamespace(_broken="A child process terminated abruptly")
    pending = Future()
    assert backend.cancel(pending) is False and not pending.cancelled()
    backend._executor = SimpleNamespace(_broken=False)
    assert backend.cancel(pending) is True and pending.cancelled()
