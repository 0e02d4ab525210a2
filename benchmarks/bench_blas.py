"""Matrix products on autopar threads, with and without the BLAS cap, against serial.

    python benchmarks/bench_blas.py [--reps N] [--items N] [--size N] [--workers N]

Needs numpy and threadpoolctl (the ``blas`` extra). Each repetition runs every variant
once, in turn, so that a noisy spell hits them alike; the medians are printed, with each
variant's ratio to serial with BLAS's own threads. Also prints what the cap costs a call:
the check on a call with no BLAS module loaded, and a cap applied and taken back.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

import numpy as np
import threadpoolctl

from autopar import parallel
from autopar._config import cpu_count
from autopar._execute import blas_limits


def product(a: Any) -> Any:
    return a @ a


def _variants(matrices: List[Any], workers: int) -> Dict[str, Callable[[], Any]]:
    threads = parallel(product, kind="thread", workers=workers)

    def uncapped() -> Any:
        kept, blas_limits.BLAS_MODULES = blas_limits.BLAS_MODULES, ()  # (seen as no BLAS)
        try:
            return threads.map(matrices)
        finally:
            blas_limits.BLAS_MODULES = kept

    def serial_one_blas_thread() -> Any:
        with threadpoolctl.threadpool_limits(1):
            return list(map(product, matrices))

    return {
        "serial, BLAS's own threads": lambda: list(map(product, matrices)),
        "serial, BLAS 1 thread": serial_one_blas_thread,
        "autopar threads, BLAS uncapped": uncapped,
        "autopar threads, BLAS capped": lambda: threads.map(matrices),
    }


def _per_call_costs(calls: int = 20_000) -> Dict[str, float]:
    """Microseconds a call spends on the cap: without a BLAS module, and with a real one."""
    kept, blas_limits.BLAS_MODULES = blas_limits.BLAS_MODULES, ("no_such_module",)
    t0 = time.perf_counter()
    for _ in range(calls):
        with blas_limits.limited(2):
            pass
    blas_limits.BLAS_MODULES = kept
    t1 = time.perf_counter()
    for _ in range(calls):
        with blas_limits.limited(2):
            pass
    t2 = time.perf_counter()
    return {
        "check, no BLAS module loaded": (t1 - t0) / calls * 1e6,
        "cap applied and restored (OpenBLAS)": (t2 - t1) / calls * 1e6,
    }


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--workers", type=int, default=cpu_count(), help="autopar threads")
    parser.add_argument("--write", action="store_true", help="save as a RESULTS.md section")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    matrices = [rng.standard_normal((args.size, args.size)) for _ in range(args.items)]
    variants = _variants(matrices, args.workers)
    for run in variants.values():  # warm: pools started, BLAS threads up
        run()
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["serial, BLAS's own threads"])
    out: List[str] = [
        f"{args.items} products of {args.size}x{args.size}, {cpu_count()} CPUs, "
        f"{args.workers} autopar threads, BLAS:",
        f"  {threadpoolctl.threadpool_info()}",
        f"median of {args.reps}; ratio = time / serial with BLAS's own threads",
    ]
    for name, seconds in times.items():
        out.append(f"  {name:<32} {statistics.median(seconds) / base:5.2f}")
    for name, micros in _per_call_costs().items():
        out.append(f"  {name:<38} {micros:6.2f} us a call")
    print("\n".join(out))
    if args.write:
        from benchmarks import sections

        sections.write_report(
            f"blas-{args.workers}-threads",
            f"BLAS under {args.workers} autopar threads (bench_blas.py)",
            f"python -m benchmarks.bench_blas --workers {args.workers} --write",
            out,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
