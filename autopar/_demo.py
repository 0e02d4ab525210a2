"""The headline demo: the two classic workloads, serial vs threads vs processes vs autopar.

The fixed choices use fresh ``multiprocessing`` pools sized by core count, exactly as
the article that started autopar did; autopar's column is a first call (calibration
included) and a later call (decision remembered) of the same decorated function.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.pool
import time
from functools import partial
from typing import Any, Callable, Dict, List, Sequence, Tuple

from .decorator import parallel

square = partial(math.pow, 2)


def _serial(fn: Callable[[Any], Any], items: Sequence[Any]) -> None:
    list(map(fn, items))


def _threads(fn: Callable[[Any], Any], items: Sequence[Any]) -> None:
    with multiprocessing.pool.ThreadPool() as pool:
        pool.map(fn, items)


def _processes(fn: Callable[[Any], Any], items: Sequence[Any]) -> None:
    with multiprocessing.get_context("forkserver" if _has_forkserver() else "spawn").Pool() as p:
        p.map(fn, items)


def _has_forkserver() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def _best(run: Callable[[], Any], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def workloads(scale: float) -> List[Tuple[str, Callable[[Any], Any], Sequence[Any]]]:
    sleep = partial(_scaled_sleep, scale)
    return [("sleep 0..4 s", sleep, range(5)), ("square x1000", square, range(1000))]


def _scaled_sleep(scale: float, seconds: float) -> None:
    time.sleep(seconds * scale)


def run_demo(scale: float = 1.0, repeat: int = 3) -> Dict[str, Dict[str, float]]:
    """Print the table and return it as {workload: {column: seconds}}."""
    table: Dict[str, Dict[str, float]] = {}
    columns = ["serial", "threads", "processes", "autopar 1st", "autopar later"]
    print(f"{'workload':<14}" + "".join(f"{c:>15}" for c in columns))
    for name, fn, items in workloads(scale):
        auto = parallel(fn)
        slow = name.startswith("sleep")
        reps = 1 if slow else repeat
        row = {
            "serial": _best(partial(_serial, fn, items), reps),
            "threads": _best(partial(_threads, fn, items), reps),
            "processes": _best(partial(_processes, fn, items), reps),
            "autopar 1st": _best(partial(auto.map, items), 1),
            "autopar later": _best(partial(auto.map, items), reps),
        }
        table[name] = row
        print(f"{name:<14}" + "".join(f"{_fmt(row[c]):>15}" for c in columns))
        print(
            f"{'':<14}autopar chose: {auto.last_plan.kind if auto.last_plan else '?'}"
            f" ({auto.last_plan.reason if auto.last_plan else ''})"
        )
    return table


def _fmt(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 0.1 else f"{seconds * 1e3:.2f} ms"
