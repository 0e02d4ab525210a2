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


def thread_of(_):
    return threading.get_ident()


class Gate:
    """Item 0 waits until every other item has started (or ``timeout`` passes), and
    returns whether they all did: they can only start while item 0 is still running if
    something other than item 0's thread runs them."""

    def __init__(self, n: int, timeout: float = 10.0) -> None:
        self.others = threading.Semaphore(0)
        self.n, self.timeout = n, timeout

    def __call__(self, index: int) -> bool:
        if index == 0:
            deadline = time.monotonic() + self.timeout
            for _ in range(self.n - 1):
                if not self.others.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    return False
            return True
        self.others.release()
        time.sleep(0.01)
        return True


def nap_unless_zero(seconds):
    """nap(), except that zero returns at once: near-free items that the probe batches."""
    return nap(seconds) if seconds else 0


def nap_then_burn(ms):
    """Waits 5 ms, then computes for ``ms`` milliseconds holding the GIL: part waiting."""
    time.sleep(0.005)
    return burn(ms)
