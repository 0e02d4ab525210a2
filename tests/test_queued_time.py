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
    assert clock.after_item(1.0) >= 0.0


def test_each_thread_has_its_own_clock_kept_between_calls():
    mine = queued_time.for_this_thread()
    assert queued_time.for_this_thread() is mine
    other = []
    thread = threading.Thread(target=lambda: other.append(queued_time.for_this_thread()))
    thread.start()
    thread.join()
    assert other[0] is not mine
