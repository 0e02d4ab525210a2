"""The share of this machine's runnable CPU time that its hypervisor gave to others (steal).

On a virtual machine the host may run other guests on the cores this one was lent. While
it does, a computing thread's wall clock runs on and its own CPU clock stops, so computing
items read as part waiting: on a 2-vCPU VM where the host took 40% of the time this guest
wanted to run, Python code read as waiting and went to threads instead of processes, and
near-free items read as waits and started helper threads. A thread that computed for ``c``
seconds by its own clock wanted ``c / (1 - share)`` of them; ``wanted`` gives that figure,
which the probe and the watch of a running call use wherever they read a CPU clock.

Linux counts steal per core in ``/proc/stat``, in ticks of 10 ms: far too coarse for one
item, so the share is read over a stretch of recent time holding at least ``MIN_TICKS`` of
the guest's runnable time, and kept until the next such stretch. The first estimate is
the share since boot. Where there is no such figure (bare metal, other systems) the share
is 0 and every reading stands as it is.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Optional, Tuple

# Runnable time (busy and stolen, over all cores) a reading must span: 0.3 s of core time
# puts one tick at 3% of the share.
MIN_TICKS = 30
# A share over this is not trusted to correct readings: a host that took most of the time
# leaves readings that say nothing either way, and 1 / (1 - share) would magnify noise.
MOST = 0.6
# Between reads of /proc/stat (about 8 us each) at least this long: callers may ask often.
READ_EVERY = 0.05

_lock = threading.Lock()
_share = 0.0
_since: Optional[Tuple[int, int]] = None  # (busy, stolen) ticks at the stretch's start
_read_at = -1.0


def _ticks() -> Optional[Tuple[int, int]]:
    """Busy and stolen ticks of all cores since boot, or None where /proc/stat has no
    steal column."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        # "cpu user nice system idle iowait irq softirq steal ..."
        busy = sum(int(fields[i]) for i in (1, 2, 3, 6, 7))
        return busy, int(fields[8])
    except (OSError, ValueError, IndexError):
        return None


def refresh() -> float:
    """Read the counters if READ_EVERY has passed since the last read, and return the
    share: updated once the stretch since the last update holds MIN_TICKS."""
    global _share, _since, _read_at
    now = time.monotonic()
    if now - _read_at < READ_EVERY:
        return _share
    with _lock:
        if now - _read_at < READ_EVERY:
            return _share
        _read_at = now
        ticks = _ticks()
        if ticks is None:
            return _share
        if _since is None:
            busy, stolen = ticks
            _share = _bounded(stolen, busy + stolen)
            _since = ticks
        else:
            busy, stolen = ticks[0] - _since[0], ticks[1] - _since[1]
            if busy + stolen >= MIN_TICKS:
                _share = _bounded(stolen, busy + stolen)
                _since = ticks
        return _share


def _bounded(stolen: int, runnable: int) -> float:
    return 0.0 if runnable <= 0 else min(MOST, stolen / runnable)


def since_boot() -> Optional[float]:
    """The share over the machine's whole uptime, or None where it cannot be read."""
    ticks = _ticks()
    return None if ticks is None else _bounded(ticks[1], ticks[0] + ticks[1])


def share() -> float:
    """The latest share, without reading the counters."""
    return _share


def wanted(cpu: float) -> float:
    """CPU seconds a thread wanted, for ``cpu`` seconds on its own clock."""
    return cpu / (1.0 - _share)


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
