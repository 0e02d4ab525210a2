"""Functions the fault tests send to workers: module level, so processes can import them."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Any


def square(x: int) -> int:
    return x * x


def pid(_: Any) -> int:
    return os.getpid()


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die_on(x: int, bad: int = 5, how: str = "exit") -> int:
    """Kill the worker process at item ``bad``; the others take a moment, then square."""
    if x == bad:
        time.sleep(0.3)  # so that the items before it have finished by then
        if how == "exit":
            os._exit(13)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        ctypes.string_at(0)  # a segfault
    time.sleep(0.01)
    return x * x


def die_on_exit(x: int) -> int:
    return die_on(x, how="exit")


def die_on_kill(x: int) -> int:
    return die_on(x, how="kill")


def die_on_segfault(x: int) -> int:
    return die_on(x, how="segv")


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x


class Unpicklable(Exception):
    """An exception that holds a lock, so it cannot be pickled back from a worker."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


def raise_unpicklable(x: int) -> int:
    raise Unpicklable(f"cannot ship item {x}")


class NeedsTwo(Exception):
    """Pickles, but cannot be rebuilt: its __init__ wants two arguments."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


def raise_needs_two(x: int) -> int:
    raise NeedsTwo("first", str(x))


def lock_for(x: int) -> Any:
    """A result that cannot be pickled."""
    return threading.Lock() if x == 2 else x


def blas_env(_: Any) -> dict[str, str | None]:
    return {
        v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }


def stuck(x: int) -> int:
    """Item 0 is stuck for a long time; the rest are quick."""
    if x == 0:
        time.sleep(600)
    return x


def slow_or_raise(spec: tuple[int, str, float]) -> int:
    """For the property test: ``(value, "ok"|"raise", sleep seconds)``."""
    value, what, seconds = spec
    if seconds:
        time.sleep(seconds)
    if what == "raise":
        raise KeyError(value)
    return value * 2


def length(data: bytes) -> int:
    return len(data)


def identity(x: Any) -> Any:
    return x


# Nesting: decorated functions that map other decorated functions from inside a worker.
from autopar import parallel  # noqa: E402


@parallel(kind="process", workers=2)
def inner(_: Any) -> tuple[int, int]:
    return os.getpid(), threading.get_ident()


@parallel(kind="process", workers=2)
def outer_process(n: int) -> tuple[int, list[tuple[int, int]], str]:
    got = inner.map(range(n))
    plan = inner.last_plan
    return os.getpid(), got, plan.kind if plan else "none"


@parallel(kind="thread", workers=2)
def outer_thread(n: int) -> tuple[int, int, list[tuple[int, int]], str]:
    got = inner.map(range(n))
    plan = inner.last_plan
    return os.getpid(), threading.get_ident(), got, plan.kind if plan else "none"


def _refuse() -> Any:
    raise RuntimeError("refusing to be rebuilt")


class BadReduce:
    """Pickles fine; unpickling it in the worker raises."""

    def __reduce__(self) -> Any:
        return _refuse, ()


def nap_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()
