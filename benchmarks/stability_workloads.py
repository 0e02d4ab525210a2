"""The stability suites in one registry: "matrix" (the trap matrix of
:mod:`benchmarks.workloads`, resized), "random" (drawn) and "real" (real libraries).

The parent lists entries to plan a run; a fresh program calls :func:`find` with the same
arguments to rebuild the one it measures.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Dict, Iterator, List

from benchmarks import stability_random, stability_real
from benchmarks.stability_base import Built, Context, Entry
from benchmarks.workloads import WORKLOADS, suite

SUITES = ("matrix", "random", "real")
DRAWS = 30  # random workloads in a full run (the issue asks for at least 30)
QUICK_DRAWS = 5

# Scales for the matrix workloads so plain map takes about 0.3 s or less on 2 cores: a
# program then runs auto four times and three fixed choices three or four times each
# within about 5 s. (Full sizes are in benchmarks/workloads.py; quick runs use a quarter.)
MATRIX_SCALE: Dict[str, float] = {
    "sleep_10ms": 0.15,
    "cpu_2ms": 0.5,
    "cheap_first": 0.5,
    "growing": 0.5,
    "mixed": 0.25,
}


@contextlib.contextmanager
def _matrix(name: str, context: Context) -> Iterator[Built]:
    workload = WORKLOADS[name]
    scale = MATRIX_SCALE.get(name, 1.0) * (0.25 if context.quick else 1.0)
    yield workload.fn, workload.items(scale)


def _matrix_entries() -> List[Entry]:
    return [
        Entry(w.name, "matrix", w.description, partial(_matrix, w.name)) for w in suite("matrix")
    ]


def entries(suites: List[str], *, seed: int, draws: int, quick: bool) -> List[Entry]:
    """Every entry of ``suites``, in registry order."""
    found: List[Entry] = []
    for name in SUITES:
        if name not in suites:
            continue
        if name == "matrix":
            found += _matrix_entries()
        elif name == "random":
            found += stability_random.entries(seed, draws, quick=quick)
        else:
            found += stability_real.entries()
    return found


def find(name: str, *, seed: int, draws: int, quick: bool) -> Entry:
    """The entry called ``name`` (a random one needs the seed and draw count it came from)."""
    for entry in entries(list(SUITES), seed=seed, draws=draws, quick=quick):
        if entry.name == name:
            return entry
    raise KeyError(f"no stability workload {name!r}")
