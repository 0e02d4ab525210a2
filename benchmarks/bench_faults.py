"""What failing items cost a call under a per-item policy, per kind.

A fan-out of ``--n`` items (default 2,000) that each wait ``--item-ms`` milliseconds, run
three ways in one program, side by side:

- ``plain``: no policy, no failures (today's default path);
- ``clean``: ``errors="return"`` and ``item_timeout``, no failures (what the policy costs);
- ``faulty``: the same policy, where 1% of the items raise, 0.5% hang for ten times the
  item timeout, and one kills its worker (``os._exit``; on kinds whose workers are
  threads that would end the program, so there it raises instead).

It prints each kind's wall times and the ratios faulty/clean and clean/plain, checks
that every good item's result arrived, and prints the bound to reason against: the
failures should cost at most one item timeout per hung item, spread over the workers
(``ceil(hung / workers)`` timeouts), plus one worker start per hung or poisoned item.

Run: ``.venv/bin/python -m benchmarks.bench_faults`` (full size, minutes);
``--n 200 --item-timeout 0.3`` for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable, Dict, List, Tuple

from autopar import ItemFailure, ItemTimeoutError, WorkerCrashedError, parallel, shutdown

Spec = Tuple[int, str, float]  # (index, what, seconds): what is ok, raise, hang or die


def work(spec: Spec) -> int:
    index, what, seconds = spec
    if what == "hang":
        time.sleep(seconds)  # past the item timeout, but it ends: abandoned threads finish
    elif what == "die":
        os._exit(13)
    elif what == "die-here":  # (where the worker is a thread, dying would end the program)
        raise RuntimeError(f"item {index} would kill a process worker")
    elif what == "raise":
        raise ValueError(f"item {index} is bad")
    else:
        time.sleep(seconds)
    return index


def job(n: int, item_s: float, hang_s: float, *, faulty: bool, kill: bool = False) -> List[Spec]:
    specs: List[Spec] = [(i, "ok", item_s) for i in range(n)]
    if faulty:
        for i in range(7, n, 100):  # 1%
            specs[i] = (i, "raise", 0.0)
        for i in range(53, n, 200):  # 0.5%
            specs[i] = (i, "hang", hang_s)
        specs[n // 2 + 1] = (n // 2 + 1, "die" if kill else "die-here", 0.0)
    return specs


def timed(run: Callable[[], List[Any]]) -> Tuple[float, List[Any]]:
    t0 = time.perf_counter()
    out = run()
    return time.perf_counter() - t0, out


def one_kind(kind: str, args: argparse.Namespace) -> Dict[str, float]:
    f = parallel(kind=kind, workers=args.workers)(work)
    clean = job(args.n, args.item_ms / 1e3, 0.0, faulty=False)
    hang_s = 10 * args.item_timeout
    bad = job(args.n, args.item_ms / 1e3, hang_s, faulty=True, kill=kind == "process")
    policy: Dict[str, Any] = {"errors": "return", "item_timeout": args.item_timeout}
    plain_s, _ = timed(lambda: f.map(clean))
    clean_s, _ = timed(lambda: f.map(clean, **policy))
    faulty_s, out = timed(lambda: f.map(bad, **policy))
    for spec, value in zip(bad, out):
        if spec[1] == "ok":
            assert value == spec[0], (spec, value)  # every good result arrived
        else:
            assert isinstance(value, ItemFailure), (spec, value)
            expected = {"hang": ItemTimeoutError, "die": WorkerCrashedError}.get(spec[1], Exception)
            assert isinstance(value.exception, expected), (spec, value)
    hung = sum(s[1] == "hang" for s in bad)
    workers = 1 if kind == "serial" else args.workers
    bound = -(-hung // workers) * args.item_timeout  # the hung items, spread over the workers
    return {
        "plain": plain_s,
        "clean": clean_s,
        "faulty": faulty_s,
        "failed": float(sum(isinstance(v, ItemFailure) for v in out)),
        "bound": bound,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--item-ms", type=float, default=5.0)
    parser.add_argument("--item-timeout", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--kinds", default="serial,thread,process")
    parser.add_argument("--write", action="store_true", help="save as a RESULTS.md section")
    args = parser.parse_args()
    out: List[str] = []

    def say(line: str) -> None:
        print(line)
        out.append(line)

    say(
        f"{args.n} items of {args.item_ms:g} ms, item_timeout={args.item_timeout:g}s, "
        f"workers={args.workers}"
    )
    header = f"{'kind':<8} {'plain':>8} {'clean':>8} {'faulty':>8} {'failed':>6}"
    say(f"{header} {'clean/plain':>11} {'faulty/clean':>12} {'extra s':>8} {'bound s':>8}")
    for kind in args.kinds.split(","):
        r = one_kind(kind, args)
        say(
            f"{kind:<8} {r['plain']:8.2f} {r['clean']:8.2f} {r['faulty']:8.2f} "
            f"{int(r['failed']):6d} {r['clean'] / r['plain']:11.2f} "
            f"{r['faulty'] / r['clean']:12.2f} {r['faulty'] - r['clean']:8.2f} "
            f"{r['bound']:8.2f}"
        )
    say("bound: ceil(hung items / workers) x item_timeout (serial: workers=1), plus on")
    say("processes one worker start per hung or poisoned item; extra = faulty - clean")
    say("every good item's result arrived, and every failure has the expected type (checked)")
    shutdown()
    if args.write:
        from benchmarks import sections

        sections.write_report(
            "faults",
            "Per-item failures (bench_faults.py)",
            "python -m benchmarks.bench_faults --write",
            out,
            note="Times in seconds (the bound is in seconds too); the ratios are the result.",
        )


if __name__ == "__main__":
    # Under the module's own name, so that process workers import work() by reference.
    from benchmarks import bench_faults

    bench_faults.main()
