"""Scenario 6: timeout= on the decorator, on the call, and from AUTOPAR_TIMEOUT."""

from __future__ import annotations

import pytest

from tests.faults import script

TIMEOUT = """
import os, time
import autopar
from autopar import AutoparTimeoutError, _pools, parallel
from tests.faults import funcs

{make}
t0 = time.monotonic()
try:
    {call}
except TimeoutError as exc:
    assert isinstance(exc, AutoparTimeoutError), type(exc)
    assert "timeout=0.5" in str(exc), str(exc)
else:
    raise SystemExit("no timeout")
assert time.monotonic() - t0 < 10, time.monotonic() - t0
old = _pools.peek("{kind}")
assert old is None, "the pool holding the stuck worker was replaced"
if "{kind}" == "process":
    for pid in before:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise SystemExit(f"stuck worker {{pid}} was not killed")
assert f.map(range(1, 5), timeout=30) == [1, 2, 3, 4]
print("ok")
"""

PIDS = """
pids = parallel(kind="process", workers=2)(funcs.nap_pid)
before = set(pids.map([0.3, 0.3], chunksize=1, timeout=30))
"""

MAKES = {
    "decorator": ('f = parallel(kind="{kind}", workers=2, timeout=0.5)(funcs.stuck)', ""),
    "call": ('f = parallel(kind="{kind}", workers=2)(funcs.stuck)', "timeout=0.5"),
    "environment": ('f = parallel(kind="{kind}", workers=2)(funcs.stuck)', ""),
}


@pytest.mark.parametrize("kind", ["thread", "process"])
@pytest.mark.parametrize("where", sorted(MAKES))
def test_timeout_raises_in_time_and_replaces_the_stuck_worker(kind, where):
    make, arg = MAKES[where]
    make = make.format(kind=kind)
    if kind == "process":  # the workers' PIDs, to check that the stuck one is killed
        make += PIDS
    call = f"f.map(range(8), chunksize=1, {arg})" if arg else "f.map(range(8), chunksize=1)"
    env = {"AUTOPAR_TIMEOUT": "0.5"} if where == "environment" else None
    out = script(TIMEOUT.format(make=make, call=call, kind=kind), env=env, timeout=60)
    assert out.strip() == "ok"


def test_imap_timeout_covers_the_whole_call():
    out = script(
        """
        import time
        from autopar import AutoparTimeoutError, parallel
        from tests.faults import funcs

        f = parallel(kind="thread", workers=2)(funcs.nap)
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
