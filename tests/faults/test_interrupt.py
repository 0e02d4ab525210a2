"""Ctrl-C during a map: SIGINT to the script's whole process group, as a terminal sends
it, on process and thread pools and while kind="auto" measures in the calling thread.

Must hold: KeyboardInterrupt reaches the caller within seconds, no worker process
outlives it, nothing is written to stderr, and the next call on the same function works.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from tests.conftest import python_in_own_group

INTERRUPTED = """
import multiprocessing, os, signal, time
# A shell that runs us in the background (CI, nohup, `&`) starts us with SIGINT ignored,
# and Python then installs no KeyboardInterrupt handler: restore the terminal's default.
signal.signal(signal.SIGINT, signal.default_int_handler)
from autopar import parallel
from tests import helpers

f = parallel(kind="{kind}", workers=2)(helpers.nap_pid)
before = set(f.map([0.3, 0.3], chunksize=1))  # starts both workers; these are their PIDs
print("running", flush=True)
t0 = time.monotonic()
try:
    f.map([30.0] * 10, chunksize=1)
except KeyboardInterrupt:
    pass
else:
    raise SystemExit("the map was not interrupted")
print("stopped after", round(time.monotonic() - t0, 1), flush=True)
assert multiprocessing.active_children() == [], multiprocessing.active_children()
if "{kind}" == "process":
    assert os.getpid() not in before and len(before) == 2, before
    for pid in before:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise SystemExit(f"worker {{pid}} outlived the interrupt")
assert len(f.map([0.0, 0.0])) == 2  # the pool works again
print("ok", flush=True)
"""


def _interrupt(script: str) -> None:
    """Run ``script`` in its own process group, Ctrl-C it once it prints "running", and
    check that it stopped within seconds, cleanly, and printed "ok" last."""
    with python_in_own_group(script) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "running"
        time.sleep(0.5)  # the map is under way
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # the whole group: caller, workers, forkserver
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"{out}\n{err}"
    assert out.splitlines()[-1] == "ok"
    assert time.monotonic() - t0 < 20  # seconds, not the 30 s a task would take
    assert err == ""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a process group is POSIX")
@pytest.mark.parametrize("kind", ["process", "thread"])
def test_ctrl_c_stops_the_map_kills_its_workers_and_the_next_call_works(kind):
    _interrupt(INTERRUPTED.format(kind=kind))


INTERRUPTED_WHILE_MEASURING = """
import signal, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from autopar import parallel
from tests import helpers

f = parallel(helpers.nap_pid)  # kind="auto", never called: item 1 runs in this thread
print("running", flush=True)
t0 = time.monotonic()
try:
    f.map([30.0] * 10)
except KeyboardInterrupt:
    pass
else:
    raise SystemExit("the map was not interrupted")
print("stopped after", round(time.monotonic() - t0, 1), flush=True)
assert len(f.map([0.0, 0.0])) == 2  # the function works again
print("ok", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a process group is POSIX")
def test_ctrl_c_while_auto_measures_in_the_calling_thread():
    # Item 0 sleeps on the pilot's thread, item 1 in the caller (the planner's probe runs
    # the rest there first), helper threads sleep on the others.
    _interrupt(INTERRUPTED_WHILE_MEASURING)
