"""The share of this machine's CPU time that its hypervisor gave to other guests (steal),
while this one was busy.

On a virtual machine the host may run other guests on the cores this one was lent. While
it does, a computing thread's wall clock runs on and its own CPU clock stops, so computing
items read as part waiting: on a 2-vCPU VM where the host took 30-48% of the time this
guest wanted to run, Python code read 0.32-0.45 of its wall as CPU. A thread that computed
for ``c`` seconds by its own clock wanted ``c / (1 - share)``; ``wanted`` gives that, and
the probe and the watch of a running call use it for each item's CPU time, which tells
waiting from computing. (Rates of the process as a whole are left as read: the share is
an estimate over a stretch of time, and a ratio of two rates would magnify its error.)

Linux counts steal per core in ``/proc/stat``, in ticks of 10 ms: far too coarse for one
item, so the share is read over a stretch of recent time. Only stretches in which the
guest was busy for most of its cores' time count: an idle guest's few wake-ups each
wait for the host, which reads as a large share of a small busy time (0.6 and more after
a program of sleeps) and says nothing of how computing fares. Where there is no such
figure (bare metal, other systems) the share is 0 and every reading stands as it is.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Optional, Tuple

# Busy time a stretch must hold (ticks, over all cores): 0.3 s of core time, so one tick
# is 3% of the share at most.
MIN_TICKS = 30
# ... and the share of its cores' time the guest must have been busy (or stolen) in it.
MIN_BUSY = 0.5
# A stretch that has not qualified within this many seconds starts again: the share is
# meant to say how the host treats this guest now.
MAX_STRETCH = 5.0
# The most the share may reach: 1 / (1 - share) magnifies noise without bound.
MOST = 0.5
# Between reads of /proc/stat (about 10 us each) at least this long: callers ask often.
READ_EVERY = 0.05

_lock = threading.Lock()
_share = 0.0
_since: Optional[Tuple[float, int, int]] = None  # (monotonic, busy, stolen) at its start
_read_at = -1.0
_clock = time.monotonic
_CORES = os.cpu_count() or 1  # (the cores /proc/stat's first line sums)


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
    share, updated when the stretch since its last update qualifies."""
    global _share, _since, _read_at
    now = _clock()
    if now - _read_at < READ_EVERY:
        return _share
    with _lock:
        if now - _read_at < READ_EVERY:
            return _share
        _read_at = now
        ticks = _ticks()
        if ticks is None:
            return _share
        if _since is None or now - _since[0] > MAX_STRETCH:
            _since = (now, *ticks)
            return _share
        busy, stolen = ticks[0] - _since[1], ticks[1] - _since[2]
        capacity = (now - _since[0]) * 100 * _CORES  # (USER_HZ: 100 ticks a second)
        if busy >= MIN_TICKS and busy + stolen >= MIN_BUSY * capacity:
            _share = min(MOST, stolen / (busy + stolen))
            _since = (now, *ticks)
        return _share


def wanted(cpu: float) -> float:
    """CPU seconds a thread wanted, for ``cpu`` seconds on its own clock."""
    return cpu / (1.0 - _share)


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
