"""One fresh program of a stability run: auto's first and later calls, then the fixed
choices, side by side, in this one interpreter.

Run by ``benchmarks/stability.py`` as ``python -m benchmarks.stability_child SPEC_JSON``
(from the repository root; a module with a main guard, so spawn and forkserver workers
can import it). It prints one line ``STABILITY-RESULT {json}`` on stdout.

    build workload -> auto first call (nothing warm: fresh interpreter, no pools)
                   -> auto later calls x M (same wrapper)
                   -> each fixed choice: one untimed call, then the best of 2 or 3
                      (plain map, parallel(kind="thread"), parallel(kind="process"))
                   -> the cold fixed choices a user would write, pool start included:
                      a fresh ThreadPoolExecutor() and a fresh multiprocessing Pool()
                      per call, the best of 2 (the reference for auto's first call)
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

MARK = "STABILITY-RESULT "
FAST = 0.001  # a fixed-choice call under 1 ms is timed as the best of a burst ...
BURST = 20  # ... of this many calls, as timeit does
SLOW = 0.5  # a fixed-choice call over this many seconds gets 2 timed calls, not 3


def _timed(call: Callable[[], List[Any]]) -> Tuple[float, List[Any]]:
    t0 = time.perf_counter()
    result = call()
    return time.perf_counter() - t0, result


def _plan(wrapper: Any) -> Dict[str, Any]:
    plan = wrapper.last_plan
    if plan is None:
        return {"kind": "?", "workers": 0, "reason": "no plan"}
    return {"kind": plan.kind, "workers": plan.workers, "reason": plan.reason}


def _best_warm(call: Callable[[], List[Any]]) -> float:
    """One untimed call, then the best of 2 or 3 (a burst each, for calls under 1 ms)."""
    warm, _ = _timed(call)
    best = float("inf")
    for _ in range(2 if warm > SLOW else 3):
        for _ in range(BURST):
            seconds, _ = _timed(call)
            best = min(best, seconds)
            if seconds >= FAST:
                break
    return best


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def measure(
    fn: Callable[[Any], Any], items: Sequence[Any], later_calls: int, plans_only: bool = False
) -> Dict[str, Any]:
    """Time auto (first, then later calls) and the three fixed choices on ``items``; with
    ``plans_only``, plain map alone (benchmarks/bench_plans.py)."""
    from autopar import parallel

    out: Dict[str, Any] = {"n_items": len(items), "errors": []}
    auto = parallel(fn)
    first, result = _timed(lambda: auto.map(items))
    out["first"] = {"seconds": first, **_plan(auto)}
    out["later"] = []
    for _ in range(later_calls):
        seconds, _ = _timed(lambda: auto.map(items))
        out["later"].append({"seconds": seconds, **_plan(auto)})
    expected = list(map(fn, items))
    if list(result) != expected:
        out["errors"].append("auto's results differ from plain map")
    if plans_only:
        out["fixed"] = {"serial": _best_warm(lambda: list(map(fn, items)))}
        return out
    fixed: Dict[str, Optional[float]] = {}
    thread, process = parallel(kind="thread")(fn), parallel(kind="process")(fn)
    choices: Dict[str, Callable[[], List[Any]]] = {
        "serial": lambda: list(map(fn, items)),
        "thread": lambda: thread.map(items),
        "process": lambda: process.map(items),
    }
    for name, call in choices.items():
        try:
            fixed[name] = _best_warm(call)
        except Exception as exc:
            fixed[name] = None
            out["errors"].append(f"{name}: {_failure(exc)}")
    out["fixed"] = fixed
    cold: Dict[str, Optional[float]] = {"serial": fixed.get("serial")}
    for name, call in _cold_choices(fn, items).items():
        try:
            cold[name] = min(_timed(call)[0] for _ in range(2))
        except Exception as exc:
            cold[name] = None
            out["errors"].append(f"{name}: {_failure(exc)}")
    out["cold"] = cold
    return out


def _cold_choices(
    fn: Callable[[Any], Any], items: Sequence[Any]
) -> Dict[str, Callable[[], List[Any]]]:
    """Pools made for one call and shut down after it, with their defaults."""
    import concurrent.futures
    import multiprocessing

    def threads() -> List[Any]:
        with concurrent.futures.ThreadPoolExecutor() as pool:
            return list(pool.map(fn, items))

    def processes() -> List[Any]:
        with multiprocessing.Pool() as pool:
            return pool.map(fn, items)

    return {"thread_cold": threads, "process_cold": processes}


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Build the workload ``spec`` names, measure it, and stop autopar's pools."""
    import autopar
    from benchmarks.stability_base import Calibration, Context
    from benchmarks.stability_workloads import find

    entry = find(spec["name"], seed=spec["seed"], draws=spec["draws"], quick=spec["quick"])
    context = Context(
        Calibration.from_json(spec["calibration"]), spec["tmp"], spec["quick"], spec["seed"]
    )
    try:
        with entry.build(context) as (fn, items):
            return measure(fn, items, spec["later_calls"], spec.get("plans_only", False))
    finally:
        autopar.shutdown()


def main(argv: Sequence[str]) -> int:
    spec = json.loads(argv[0])
    try:
        result = run(spec)
    except Exception as exc:
        traceback.print_exc()
        result = {"crashed": _failure(exc)}
    print(MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
