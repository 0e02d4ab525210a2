"""pytest-benchmark plumbing shared by ``bench_classic.py`` and ``bench_matrix.py``.

Each benchmark is one workload run by one contender (see :mod:`benchmarks.workloads`),
timed with ``benchmark.pedantic`` and a few rounds so both suites stay within minutes on
two cores. ``--bench-quick`` (implied by ``--benchmark-disable``) scales the workloads down,
so ``pytest benchmarks/bench_classic.py --benchmark-disable -q`` is a quick smoke check.
Timing comparisons with ratios live in ``write_results.py``; these suites are for
pytest-benchmark's own tables, history and comparisons between commits.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterator, List

import pytest

import autopar
from benchmarks.workloads import Contender, Runner, Workload

QUICK_SCALE = 0.1
ROUNDS = 3  # per benchmark; slow workloads (seconds per run) get one

Measure = Callable[[Any, Workload, Contender], None]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-quick",
        action="store_true",
        default=False,
        help="autopar benchmarks: scaled-down workloads (sleep lengths, item counts)",
    )


def slug(name: str) -> str:
    """A test id for a workload or contender name ("autopar thread" -> "autopar_thread")."""
    return name.replace("()", "").replace(" ", "_")


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> float:
    """How big the workloads are: 1.0, or small for quick runs and disabled benchmarks."""
    quick = request.config.getoption("--bench-quick")
    disabled = request.config.getoption("benchmark_disable", default=False)
    return QUICK_SCALE if quick or disabled else 1.0


@pytest.fixture(scope="session", autouse=True)
def _stop_pools() -> Iterator[None]:
    """autopar's pools are program-wide: stop them once, after the last benchmark."""
    yield
    autopar.shutdown()


@pytest.fixture(scope="session")
def measure(scale: float) -> Measure:
    """Time one workload under one contender, check its results, and label the benchmark."""
    expected: Dict[str, List[Any]] = {}

    def run(benchmark: Any, workload: Workload, contender: Contender) -> None:
        items = workload.items(scale)
        benchmark.group = f"{workload.suite}: {workload.name}"
        benchmark.extra_info.update(items=len(items), cores=len(os.sched_getaffinity(0)))
        result = _time(benchmark, workload, contender, items)
        _check(workload, items, result, expected)

    return run


def _time(benchmark: Any, workload: Workload, contender: Contender, items: Any) -> List[Any]:
    """Run pedantic rounds the way the contender is defined (fresh, warmed, or as is)."""
    rounds = 1 if workload.slow else ROUNDS
    if contender.fresh:
        # A new runner per round, made outside the timing: every round is a first call.
        def setup() -> Any:
            return (contender.make(workload.fn),), {}

        def first(runner: Runner) -> List[Any]:
            result = runner(items)
            _note_plan(benchmark, runner)
            return result

        return benchmark.pedantic(first, setup=setup, rounds=rounds)  # type: ignore[no-any-return]
    runner = contender.make(workload.fn)
    if contender.warm_up:
        runner(items)  # part of the definition: "later calls" follow a first one
    warmup = 1 if contender.keeps_pool and not workload.slow else 0
    result = benchmark.pedantic(runner, args=(items,), rounds=rounds, warmup_rounds=warmup)
    _note_plan(benchmark, runner)
    return result  # type: ignore[no-any-return]


def _note_plan(benchmark: Any, runner: Runner) -> None:
    """Record what autopar ran, so the saved JSON says what each number means."""
    plan = runner.plan
    if plan is not None:
        benchmark.extra_info.update(kind=plan.kind, workers=plan.workers, chunk=plan.chunksize)


def _check(workload: Workload, items: Any, result: List[Any], cache: Dict[str, List[Any]]) -> None:
    """Every contender must return what plain ``map`` does (only the length, for sleeps)."""
    assert len(result) == len(items)
    if workload.slow:
        return
    if workload.name not in cache:
        cache[workload.name] = list(map(workload.fn, items))
    assert result == cache[workload.name]
