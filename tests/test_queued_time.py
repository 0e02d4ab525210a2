"""A thread's time queued for a core, which its own CPU clock does not show."""

import subprocess
import sys
import threading
import time

import pytest

from autopar import _config
from autopar._auto import queued_time

READS = queued_time.for_this_thread().reads
needs_schedstat = pytest.mark.skipif(not READS, reason="needs Linux's per-thread schedstat")


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@needs_schedstat
def test_a_thread_starved_of_cores_counts_its_wait():
    spin = [sys.executable, "-c", "while True: pass"]
    hogs = [subprocess.Popen(spin) for _ in range(2 * _config.cpu_count())]
    try:
        time.sleep(0.2)
        clock = queued_time.for_this_thread()
        _spin(0.3)  # wall time, of which the hogs take a share
        queued = clock.after_item(0.3)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)
    assert 0.03 < queued < 0.3


def test_cheap_items_are_not_read_around():
    clock = queued_time.for_this_thread()
    assert clock.after_item(1e-6) == 0.0
    assert clock.mark is None  # the next item has no start reading: nothing to add
    assert clock.after_item(1.0) == 0.0
    assert (clock.mark is not None) == READS  # ... but it marks the one after a dear one


class _ScriptedClock(queued_time.QueueClock):
    """A clock whose readings (seconds queued so far) are given, not read from /proc."""

    def __init__(self, *readings):
        self._readings = list(readings)
        self._fd = -1  # (never used: _read is scripted)
        self.mark = self._read()

    def _read(self):
        return self._readings.pop(0)

    def close(self):
        self._fd = None

    __del__ = close


def test_a_dear_item_counts_the_wait_between_the_readings_around_it():
    clock = _ScriptedClock(2.0, 2.25, 2.25, 2.0, None, 3.0)
    assert clock.after_item(1.0) == 0.25  # queued a quarter second during the item
    assert clock.after_item(1.0) == 0.0  # no wait this time
    assert clock.after_item(1.0) == 0.0  # a reading that went back counts nothing
    assert clock.after_item(1.0) == 0.0  # a failed reading counts nothing ...
    assert clock.mark is None
    assert clock.after_item(1.0) == 0.0  # ... nor does the item after it, which it began
    assert clock.mark == 3.0
    assert clock.after_item(1e-6) == 0.0  # a cheap item: no reading taken
    assert clock.mark is None and clock._readings == []


def test_each_thread_has_its_own_clock_kept_between_calls():
    mine = queued_time.for_this_thread()
    assert queued_time.for_this_thread() is mine
    other = []
    thread = threading.Thread(target=lambda: other.append(queued_time.for_this_thread()))
    thread.start()
    thread.join()
    assert other[0] is not mine


needs_switches = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux's per-thread context switch counts"
)


@needs_switches
def test_another_thread_reads_how_often_a_thread_blocked():
    # The probe's watcher reads a worker's count from /proc to tell an item that computes
    # (its thread never blocks) from one that waits, whatever the item's CPU clock says.
    # The count is the one the thread reads of itself ...
    own = threading.get_native_id()
    assert any(
        queued_time.switches_of(own) == queued_time.thread_usage().ru_nvcsw for _ in range(5)
    )
    # ... and a wait shows in it, read from another thread.
    seen = {}
    go, release = threading.Event(), threading.Event()

    def worker():
        seen["id"], seen["at_start"] = threading.get_native_id(), queued_time.thread_usage()
        go.set()
        release.wait(30)  # blocks

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert go.wait(30)
        deadline = time.monotonic() + 10
        while queued_time.switches_of(seen["id"]) == seen["at_start"].ru_nvcsw:
            assert time.monotonic() < deadline, "a blocked thread read as never blocked"
            time.sleep(0.001)
    finally:
        release.set()
        thread.join(30)
