"""Functions for the per-item outcome tests (tests/faults/test_outcomes.py); process and
dask workers import them from here. Each takes ``(x, place)``: ``place`` is a directory
the test owns, where a hanging item waits for a ``release`` file and a flaky item counts
its attempts (one line per attempt: it works across processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, Tuple

from tests.helpers import Unpicklable

Spec = Tuple[int, str]

BAD, HUNG, DEAD, FLAKY = 3, 2, 4, 5


def _attempt(place: str, x: int) -> int:
    """Count one more attempt at item ``x``; the count so far, this one included."""
    with open(Path(place) / f"attempts-{x}", "a") as log:
        log.write(".\n")
    return len((Path(place) / f"attempts-{x}").read_text().splitlines())


def attempts(place: str, x: int) -> int:
    path = Path(place) / f"attempts-{x}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _hang(place: str) -> None:
    """Wait until the test releases the item (a minute at most)."""
    release = Path(place) / "release"
    for _ in range(600):
        if release.exists():
            return
        time.sleep(0.1)


def raises(spec: Spec) -> int:
    x, _ = spec
    if x == BAD:
        raise ValueError(f"item {x} is bad")
    return x * x


def hangs(spec: Spec) -> int:
    x, place = spec
    if x == HUNG:
        _hang(place)
    return x * x


def exits(spec: Spec) -> int:
    x, _ = spec
    if x == DEAD:
        os._exit(13)
    return x * x


def killed(spec: Spec) -> int:
    x, _ = spec
    if x == DEAD:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def unpicklable(spec: Spec) -> int:
    x, _ = spec
    if x == BAD:
        raise Unpicklable(f"cannot ship item {x}")
    return x * x


def flaky(spec: Spec) -> int:
    """Item FLAKY raises ConnectionError at its first two attempts, then succeeds."""
    x, place = spec
    if x == FLAKY and _attempt(place, x) < 3:
        raise ConnectionError(f"item {x} failed this time")
    return x * x


def dies_twice(spec: Spec) -> int:
    """Item FLAKY kills its worker at its first two attempts, then succeeds."""
    x, place = spec
    if x == FLAKY and _attempt(place, x) < 3:
        os._exit(13)
    return x * x


def hangs_once(spec: Spec) -> int:
    """Item FLAKY hangs at its first attempt (until released), then succeeds at once."""
    x, place = spec
    if x == FLAKY and _attempt(place, x) < 2:
        _hang(place)
    return x * x


async def araises(spec: Spec) -> int:
    await asyncio.sleep(0)
    return raises(spec)


async def ahangs(spec: Spec) -> int:
    x, _ = spec
    if x == HUNG:
        await asyncio.sleep(600)
    return x * x


async def aflaky(spec: Spec) -> int:
    await asyncio.sleep(0)
    return flaky(spec)


def square_pairs(n: int, place: Any) -> list:
    return [(i, str(place)) for i in range(n)]
