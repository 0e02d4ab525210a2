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
