"""What every stability workload is made of: an entry, the context a program builds it in,
and the machine calibration that turns microseconds of work into loop counts.

An :class:`Entry` names a workload and knows how to build it inside a fresh program:
``entry.build(context)`` is a context manager yielding ``(fn, items)`` and cleaning up
whatever it made (temporary files, a local server). ``fn`` is always a module-level
function of a ``benchmarks`` module, so process workers import it by reference.

The calibration is measured once per stability run by the parent, on a quiet machine,
and passed to every program: a drawn workload then does the same amount of work quiet
and loaded, and a "microsecond" of work means the same on any machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
import zlib
from functools import partial
from typing import Any, Callable, ContextManager, Dict, Optional, Sequence, Tuple

from benchmarks.workloads import spin

Fn = Callable[[Any], Any]
Built = Tuple[Fn, Sequence[Any]]
KIB = 1 << 10
MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Calibration:
    """This machine's speeds: spin iterations per microsecond, and the cost of one round
    of each C hash as ``fixed_us + per_byte_us * size``."""

    spin_per_us: float
    rounds: Dict[str, Tuple[float, float]]  # "sha256"/"zlib" -> (fixed_us, per_byte_us)

    def spin_count(self, microseconds: float) -> int:
        """The ``spin`` argument that computes for about ``microseconds``."""
        return max(0, round(microseconds * self.spin_per_us))

    def round_us(self, work: str, size: int) -> float:
        """Microseconds one round of ``work`` takes over a buffer of ``size`` bytes."""
        fixed, per_byte = self.rounds[work]
        return fixed + per_byte * size

    def to_json(self) -> Dict[str, Any]:
        return {"spin_per_us": self.spin_per_us, "rounds": self.rounds}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Calibration:
        rounds = {k: (float(v[0]), float(v[1])) for k, v in data["rounds"].items()}
        return cls(float(data["spin_per_us"]), rounds)


def hash_round(work: str, buf: bytes) -> int:
    """One round of C work over ``buf``; both release the GIL for buffers over 2 KiB."""
    if work == "sha256":
        return hashlib.sha256(buf).digest()[0]
    return len(zlib.compress(buf, 1))


def _rounds(work: str, buf: bytes, count: int) -> None:
    for _ in range(count):
        hash_round(work, buf)


def _best_us(call: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def calibrate() -> Calibration:
    """Measure this machine (about 0.3 s); best of several readings, as timeit does."""
    iterations = 200_000
    spin_per_us = iterations / _best_us(lambda: spin(iterations), 5)
    # Incompressible bytes, so zlib's speed does not depend on what the items hold.
    big = random.Random(0).randbytes(MIB)
    small = big[: 1 * KIB]
    rounds: Dict[str, Tuple[float, float]] = {}
    for work in ("sha256", "zlib"):
        small_us = _best_us(partial(_rounds, work, small, 100), 3) / 100
        big_us = _best_us(partial(_rounds, work, big, 1), 3)
        per_byte = max(0.0, (big_us - small_us) / (MIB - KIB))
        rounds[work] = (max(0.0, small_us - per_byte * KIB), per_byte)
    return Calibration(spin_per_us, rounds)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a program knows when it builds its workload."""

    calibration: Calibration
    tmp: str  # a private (0700) directory the parent removes after the program
    quick: bool
    seed: int


@dataclasses.dataclass(frozen=True)
class Entry:
    """One stability workload: its name, suite, a line saying what it is, and its builder.

    ``skip`` is a reason it cannot run here (a library not installed), shown in the report.
    ``params`` are the drawn parameters of a random workload, shown in the report.
    """

    name: str
    suite: str
    description: str
    build: Callable[[Context], ContextManager[Built]]
    skip: Optional[str] = None
    params: Optional[Dict[str, Any]] = None
