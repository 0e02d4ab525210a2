"""Workloads for the kind="auto" tests: module level, so process workers can import them."""

from __future__ import annotations

import hashlib
import os
import threading
import time

_lock = threading.Lock()
_running = 0
peak = 0


def square(x):
    return x * x


def burn(ms):
    """Pure-Python work for about ``ms`` milliseconds (holds the GIL)."""
    end = time.thread_time() + ms / 1e3
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i * i
    return total


def nap(seconds):
    """Waiting work that records how many naps overlap (``peak``)."""
    global _running, peak
    with _lock:
        _running += 1
        peak = max(peak, _running)
    try:
        time.sleep(seconds)
    finally:
        with _lock:
            _running -= 1
    return seconds


def reset_peak():
    global peak
    peak = 0


def digest(buffer):
    return hashlib.sha256(buffer).hexdigest()


def size(buffer):
    return len(buffer)


def burn_holding(lock_and_ms):
    lock, ms = lock_and_ms
    with lock:
        return burn(ms)


def burn_and_log(args):
    """Burn, then append the item's index to a file: counts executions across processes."""
    path, index, ms = args
    burn(ms)
    with open(path, "a") as log:
        log.write(f"{index}\n")
    return index


def tunable(args):
    """Sleeps as long as the item says: one function whose cost changes between calls.

    Zero means no sleep at all: time.sleep(0) yields the CPU, which on a busy machine can
    take a millisecond and make "cheap" noisy.
    """
    if args:
        time.sleep(args)
    return os.getpid()
