"""A call with an item stuck for minutes, with timeout= on the decorator, on the call, or
from AUTOPAR_TIMEOUT; and imap's timeout.

Must hold: AutoparTimeoutError (also a TimeoutError) within seconds; the pool holding the
stuck worker is replaced, and a stuck process is killed; the call's own timeout wins over
the decorator's; imap's timeout covers the whole call, after some results were handed out.
"""

from __future__ import annotations

import pytest

from tests.faults import script

TIMEOUT = """
import os, time
from autopar import AutoparTimeoutError, parallel
from autopar._execute import registry
from tests import helpers

KIND = "{kind}"
pids = parallel(kind="process", workers=2)(helpers.nap_pid)


def times_out(call):
    before = set(pids.map([0.3, 0.3], chunksize=1, timeout=30)) if KIND == "process" else set()
    t0 = time.monotonic()
    try:
        call()
    except TimeoutError as exc:
        assert isinstance(exc, AutoparTimeoutError), type(exc)
        assert "timeout=0.5" in str(exc), str(exc)
    else:
        raise SystemExit("no timeout")
    assert time.monotonic() - t0 < 10, time.monotonic() - t0
    assert registry.peek(KIND) is None, "the pool holding the stuck worker was replaced"
    for pid in before:  # the stuck worker was killed (and its pool with it)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise SystemExit(f"stuck worker {{pid}} was not killed")


# On the decorator, on the call, from the environment.
f = parallel(kind=KIND, workers=2, timeout=0.5)(helpers.stuck)
times_out(lambda: f.map(range(8), chunksize=1))
assert f.map(range(1, 5), timeout=30) == [1, 2, 3, 4]  # the call's own timeout wins
g = parallel(kind=KIND, workers=2)(helpers.stuck)
times_out(lambda: g.map(range(8), chunksize=1, timeout=0.5))
os.environ["AUTOPAR_TIMEOUT"] = "0.5"
times_out(lambda: g.map(range(8), chunksize=1))
del os.environ["AUTOPAR_TIMEOUT"]
assert g.map(range(1, 5)) == [1, 2, 3, 4]
print("ok")
"""


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_timeout_raises_in_time_and_replaces_the_stuck_worker(kind):
    assert script(TIMEOUT.format(kind=kind), timeout=60).strip() == "ok"


def test_imap_timeout_covers_the_whole_call():
    out = script(
        """
        import time
        from autopar import AutoparTimeoutError, parallel
        from tests import helpers

        f = parallel(kind="thread", workers=2)(helpers.nap)
        got = []
        t0 = time.monotonic()
        try:
            for r in f.imap([0.05] * 200, timeout=0.5, chunksize=1):
                got.append(r)
        except AutoparTimeoutError:
            pass
        assert 0 < len(got) < 200 and time.monotonic() - t0 < 10
        print("ok")
        """
    )
    assert out.strip() == "ok"
