"""The trap matrix: workloads that each catch a different wrong guess by ``kind="auto"``.

Run: ``.venv/bin/python -m pytest benchmarks/bench_matrix.py`` (a few minutes on two
cores; ``--bench-quick`` runs a tenth of the items). Each workload's ``trap`` in
:mod:`benchmarks.workloads` says what it catches: tiny items, waiting work, GIL-bound CPU,
GIL-free C code, big arguments, a cheap first item, growing costs, mixed wait and CPU,
medium items. Columns as in ``bench_classic.py``; ``auto_first`` is a fresh decorated
function every round (pools may be warm from earlier benchmarks), ``auto_later`` reuses one.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.conftest import Measure, slug
from benchmarks.workloads import Contender, Workload, contenders, suite


@pytest.mark.parametrize("contender", contenders(), ids=lambda c: slug(c.name))
@pytest.mark.parametrize("workload", suite("matrix"), ids=lambda w: w.name)
def test_matrix(benchmark: Any, measure: Measure, workload: Workload, contender: Contender) -> None:
    measure(benchmark, workload, contender)
