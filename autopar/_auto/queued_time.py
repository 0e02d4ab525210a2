"""How long the calling thread sat runnable but waiting for a free core (Linux schedstat),
and whether it blocked at all (its voluntary context switches).

On a busy machine a computing item spends part of its wall time queued for a core, and
its own CPU clock does not show that, so calibration would take it for waiting work and
give GIL-bound Python code threads (about serial speed) where processes win
(tests/test_probe.py::test_time_the_caller_sat_queued_for_a_core_is_not_the_items_cost;
the end-to-end decision under load is a benchmark row: the "loaded" rows of
benchmarks/STABILITY.md). Counted as the item's cost instead, one preemption makes a
near-free item read as milliseconds of computing.
The calling thread, the probe's first worker, takes the time it sat queued during an
item off the item's wall time: what is left is the item on a core of its own.

Only the thread itself reads its own figure: the kernel adds a wait when the wait ends,
so another thread's reading lags by a whole wait. (And only the caller: many threads
waking from sleeps together all queue for a core, which would make sleeping count as
computing.)
Where /proc has no schedstat (other systems, old kernels) the clock reads 0.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional

# The clock is read after items at least this long (and before a call's first item, when
# no other thread waits): a read gives up the GIL, which a watcher thread waiting for it
# then holds a while, far longer than a cheap item
# (tests/test_queued_time.py::test_cheap_items_are_not_read_around).
COSTLY_ITEM = 50e-6


class QueueClock:
    """Seconds the thread that opened it has sat queued for a core, item by item.

    ``mark`` is the reading at the start of the item running now (None: not read, as
    after a cheap item). Open it before other threads start, and call ``after_item``
    only from that thread; others may read ``since_mark()``, which lags by the wait
    going on, if any.
    """

    def __init__(self) -> None:
        self._fd: Optional[int] = None
        self.mark: Optional[float] = None
        try:
            self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            self.mark = self._read()
        except OSError:
            self.close()

    @property
    def reads(self) -> bool:
        """Whether the system gives this figure (else everything reads 0)."""
        return self._fd is not None

    def after_item(self, wall: float) -> float:
        """The seconds queued during the item just run (0 where unknown); marks the next."""
        if self._fd is None or wall < COSTLY_ITEM:
            self.mark = None
            return 0.0
        mark, self.mark = self.mark, self._read()
        return 0.0 if mark is None or self.mark is None else max(0.0, self.mark - mark)

    def since_mark(self) -> float:
        mark = self.mark
        now = self._read() if mark is not None else None
        return 0.0 if mark is None or now is None else max(0.0, now - mark)

    def _read(self) -> Optional[float]:
        if self._fd is None:
            return None
        try:
            # "<ns on a core> <ns queued for one> <timeslices>"; pread regenerates it.
            return int(os.pread(self._fd, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:  # noqa: SIM105 (at interpreter exit contextlib may be torn down too)
                os.close(fd)
            except (OSError, TypeError):  # (TypeError: os torn down at interpreter exit)
                pass

    __del__ = close  # (when its thread ends, with the thread's local storage)


def for_this_thread() -> QueueClock:
    """The calling thread's clock, marked now; opened once per thread and kept: opening
    and closing it costs more than a cheap item, and closing gives up the GIL to a
    waiting watcher."""
    clock: Optional[QueueClock] = getattr(_local, "clock", None)
    if clock is None:
        clock = _local.clock = QueueClock()
    else:
        clock.mark = clock._read()
    return clock


def thread_usage() -> Optional[Any]:
    """The calling thread's resource usage (its CPU time, and how many times it blocked:
    voluntary context switches), or None where the system does not give it."""
    if _RUSAGE_THREAD is None:
        return None
    try:
        return resource.getrusage(_RUSAGE_THREAD)
    except OSError:
        return None


def held_off_since(before: Optional[Any], wall: float) -> float:
    """Of ``wall`` seconds since ``before`` (thread_usage()), those the calling thread was
    held off a core: all but its CPU time if it never blocked meanwhile (no sleep, I/O,
    lock or GIL wait), else 0. A thread that never blocked cannot have waited: what its
    CPU clock missed, a busy core or the hypervisor (on a VM: steal time) took."""
    after = thread_usage()
    if before is None or after is None or after.ru_nvcsw != before.ru_nvcsw:
        return 0.0
    cpu = float(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return max(0.0, wall - cpu)


def switches_of(native_id: int) -> Optional[int]:
    """How many times the thread ``native_id`` of this process has blocked so far (its
    voluntary context switches, as thread_usage() reads them in the thread itself), read
    from another thread; None where /proc does not say."""
    try:
        with open(f"/proc/self/task/{native_id}/status", "rb") as f:
            for line in f:
                if line.startswith(b"voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


try:
    import resource

    _RUSAGE_THREAD: Optional[int] = getattr(resource, "RUSAGE_THREAD", None)
except ImportError:  # (Windows)
    _RUSAGE_THREAD = None


# Each thread's own clock (thread-local storage: no lock needed).
_local = threading.local()


def _forget_after_fork() -> None:
    # A child's copy of the file reads the parent's thread: close it, open afresh later.
    global _local
    clock: Optional[QueueClock] = getattr(_local, "clock", None)
    if clock is not None:
        clock.close()
    _local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
