"""Heavy functions and per-worker state, side by side in one run (issue 15's benchmarks).

    python -m benchmarks.bench_heavy [--programs 3] [--rows table,weights,model]

Rows:
- ``table``: ``partial(work, table)`` where ``table`` is 50 MiB of bytes, 200 items of
  about 1.5 ms of pure Python each (the function is the heavy part, not the items).
- ``weights``: the same with a 50 MiB NumPy array in place of the bytes (a model's
  weights), which process workers map instead of copying (needs numpy).
- ``model``: a model-like value that takes 0.5 s of computing to build, used by 500 items
  of about 2 ms: autopar's ``per_worker``, mpire's ``worker_init``/``worker_state``, and
  for joblib the usual idiom, a module-level cache filled on first use in each worker.
  Builds are counted, one line per build in a log file.

Each fixed choice runs three times in this program, warm (a first untimed call starts its
pool), and the median is reported as a ratio to plain ``map``. ``kind="auto"`` runs in
``--programs`` fresh interpreters, four calls each: the first call (calibration and any
pool start included) and the worst and median of the later three, as ratios to plain
``map`` measured in the same child. Ratios, not seconds: the machine is shared.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

from benchmarks.bytecode import compile_sources

TABLE_BYTES = 50 * 2**20
TABLE_ITEMS = 200
MODEL_ITEMS = 500


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


# Loop counts for 1.5 ms and 2 ms of pure Python, set once per process by _calibrate().
_LOOPS: Dict[str, int] = {}


def _calibrate() -> None:
    """Loop counts measured once by the first program, shared with its workers (and its
    auto children) through the environment, so that every process runs the same work."""
    if _LOOPS:
        return
    shared = os.environ.get("BENCH_HEAVY_LOOPS")
    if shared:
        _LOOPS.update(json.loads(shared))
        return
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(5):
        _spin(n)
    per_loop = (time.perf_counter() - t0) / (5 * n)
    _LOOPS["table"] = max(1, int(1.5e-3 / per_loop))
    _LOOPS["model"] = max(1, int(2e-3 / per_loop))
    _LOOPS["build"] = max(1, int(0.5 / per_loop))
    os.environ["BENCH_HEAVY_LOOPS"] = json.dumps(_LOOPS)


def table_work(table: Any, i: int) -> int:
    _calibrate()
    return _spin(_LOOPS["table"]) + int(table[i])


def _work_of(row: str) -> Tuple[Callable[..., Any], List[int]]:
    """The function and items of ``row``."""
    if row == "table":
        return functools.partial(table_work, bytes(TABLE_BYTES)), list(range(TABLE_ITEMS))
    if row == "weights":
        import numpy

        weights = numpy.ones(TABLE_BYTES // 8)
        return functools.partial(table_work, weights), list(range(TABLE_ITEMS))
    return model_work, list(range(MODEL_ITEMS))


# -- the model row --------------------------------------------------------------------------

BUILD_LOG = os.environ.get("BENCH_HEAVY_LOG", os.devnull)


def _build_model() -> List[int]:
    _calibrate()
    _spin(_LOOPS["build"])
    with open(BUILD_LOG, "a") as f:
        f.write(f"{os.getpid()}\n")
    return list(range(1000))


def _model_handle() -> Any:
    from autopar import per_worker

    global _HANDLE
    if _HANDLE is None:
        _HANDLE = per_worker(_build_model, thread_safe=True)
    return _HANDLE


_HANDLE: Any = None


def model_work(i: int) -> int:
    _calibrate()
    model = _model_handle()()
    return _spin(_LOOPS["model"]) + model[i % 1000]


_CACHED: Any = None


def model_work_cached(i: int) -> int:
    """joblib's idiom: a module global filled on first use in each worker process."""
    global _CACHED
    if _CACHED is None:
        _CACHED = _build_model()
    _calibrate()
    return _spin(_LOOPS["model"]) + _CACHED[i % 1000]


def _mpire_init(worker_state: Dict[str, Any]) -> None:
    worker_state["model"] = _build_model()


def _mpire_work(worker_state: Dict[str, Any], i: int) -> int:
    _calibrate()
    return _spin(_LOOPS["model"]) + worker_state["model"][i % 1000]


# -- timing ---------------------------------------------------------------------------------


def _timed(run: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _median_warm(run: Callable[[], Any], repeats: int = 3) -> float:
    run()  # pools start, caches fill
    return statistics.median(_timed(run) for _ in range(repeats))


def _fixed(row: str) -> Dict[str, float]:
    """Seconds per fixed choice (warm medians), plain map first."""
    from autopar import parallel

    _calibrate()
    fn, items = _work_of(row)
    times = {"map": _median_warm(lambda: list(map(fn, items)))}
    for kind in ("thread", "process"):
        f = parallel(fn, kind=kind)
        times[kind] = _median_warm(lambda f=f: f.map(items))  # type: ignore[misc]
    times.update(_peers(row, fn, items))
    return times


def _peers(row: str, fn: Callable[..., Any], items: List[int]) -> Dict[str, float]:
    times: Dict[str, float] = {}
    try:
        from joblib import Parallel, delayed
    except ImportError:
        pass
    else:
        job = model_work_cached if row == "model" else fn
        times["joblib n_jobs=2"] = _median_warm(
            lambda: Parallel(n_jobs=2)(delayed(job)(i) for i in items)
        )
    try:
        from mpire import WorkerPool
    except ImportError:
        return times
    if row == "model":
        pool = WorkerPool(n_jobs=2, use_worker_state=True, keep_alive=True)
        run = lambda: pool.map(_mpire_work, items, worker_init=_mpire_init)  # noqa: E731
    else:
        pool = WorkerPool(n_jobs=2, keep_alive=True)
        run = lambda: pool.map(fn, items)  # noqa: E731
    try:
        times["mpire n_jobs=2"] = _median_warm(run)
    finally:
        pool.terminate()
    return times


def _auto_child(row: str) -> Dict[str, Any]:
    """In a fresh interpreter: plain map, then four auto calls of the same function."""
    from autopar import parallel

    _calibrate()
    fn, items = _work_of(row)
    fn(items[0])  # (in this process: builds the model row's value before plain map is timed)
    plain = statistics.median(_timed(lambda: list(map(fn, items))) for _ in range(3))
    f = parallel(fn)
    calls, kinds = [], []
    for _ in range(4):
        calls.append(_timed(lambda: f.map(items)) / plain)
        kinds.append(f.last_plan.kind if f.last_plan else "?")
    return {"calls": calls, "kinds": kinds}


def _run_child(row: str, log: str) -> Dict[str, Any]:
    env = {**os.environ, "BENCH_HEAVY_LOG": log}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_heavy", "--child", row],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _builds(log: str) -> Dict[int, int]:
    counts: Dict[int, int] = {}
    if os.path.exists(log):
        with open(log) as f:
            for line in f.read().split():
                counts[int(line)] = counts.get(int(line), 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=3)
    parser.add_argument("--rows", default="table,weights,model")
    parser.add_argument("--write", action="store_true", help="save as a RESULTS.md section")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_auto_child(args.child)))
        return
    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}")
    compile_sources()
    with tempfile.TemporaryDirectory() as tmp:
        # Before any pool starts: workers inherit the loop counts and the log's path.
        _calibrate()
        global BUILD_LOG
        BUILD_LOG = os.environ["BENCH_HEAVY_LOG"] = os.path.join(tmp, "builds")
        out: List[str] = []
        for row in args.rows.split(","):
            _row(row, BUILD_LOG, args.programs, out)
    if args.write:
        from benchmarks import sections

        sections.write_report(
            "heavy",
            "Heavy functions and per-worker state (bench_heavy.py)",
            f"python -m benchmarks.bench_heavy --programs {args.programs} --write",
            (line.strip("\n") for line in out),
        )


def _row(row: str, log: str, programs: int, out: List[str]) -> None:
    def say(line: str) -> None:
        print(line)
        out.append(line)

    open(log, "w").close()
    fixed = _fixed(row)
    builds_fixed = _builds(log)
    plain = fixed.pop("map")
    say(f"\n[{row}] warm medians, ratio to plain map:")
    for name, seconds in fixed.items():
        say(f"  {name:<18} {seconds / plain:5.2f}")
    if row == "model":
        say(f"  builds per process over every fixed run: {sorted(builds_fixed.values())}")
    best = min(1.0, *(s / plain for s in fixed.values()))
    say(f"  best fixed choice: {best:.2f}")
    for p in range(programs):
        open(log, "w").close()
        child = _run_child(row, log)
        calls = child["calls"]
        later = calls[1:]
        say(
            f"  auto program {p + 1}: first {calls[0]:.2f}, later worst "
            f"{max(later):.2f} median {statistics.median(later):.2f} "
            f"(vs best fixed: worst {max(later) / best:.2f}); kinds {child['kinds']}"
            + (f"; builds per process {sorted(_builds(log).values())}" if row == "model" else "")
        )


if __name__ == "__main__":
    # Run under the module's own name, so that workers import these functions by
    # reference: from __main__, joblib's cloudpickle ships them by value, and the cache
    # of model_work_cached would start empty for every task.
    from benchmarks import bench_heavy

    bench_heavy.main()
