"""The classic comparison: sleeps of 0-4 s and ``math.pow(2, x)`` over 1,000 items.

Run: ``.venv/bin/python -m pytest benchmarks/bench_classic.py`` (about 2 minutes on two
cores; ``--bench-quick`` scales the sleeps down tenfold). One group per workload; in each,
plain ``map``, autopar's named kinds, the stdlib pools as their defaults make them (a fresh
pool per call), joblib and mpire defaults when installed, and ``kind="auto"``:

- ``auto_first``: a fresh decorated function every round, so calibration is included.
  autopar's pools are program-wide, so earlier benchmarks may have left them warm.
- ``auto_later``: the same decorated function after one untimed call (memory used).
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.conftest import Measure, slug
from benchmarks.workloads import Contender, Workload, contenders, suite


@pytest.mark.parametrize("contender", contenders(), ids=lambda c: slug(c.name))
@pytest.mark.parametrize("workload", suite("classic"), ids=lambda w: w.name)
def test_classic(
    benchmark: Any, measure: Measure, workload: Workload, contender: Contender
) -> None:
    measure(benchmark, workload, contender)
