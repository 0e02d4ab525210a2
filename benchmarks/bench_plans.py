"""How often auto plans a call far from its best: many fresh programs, plans counted.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_plans [--programs 20] [--only tiny --only cpu_2ms]
        [--conditions quiet,loaded] [--later 2] [--write]

A misplan that comes once in thirty fresh programs (a stall read as the items' cost, a
noisy thread test) is rare enough that benchmarks/stability.py's five programs a row do
not show it, yet it is the call a user remembers. So this runs one workload of the
stability suites in many fresh programs (``benchmarks.stability_child`` with
``plans_only``: auto's first and later calls, then plain ``map`` as the reference, no
other fixed choice), quiet and with one busy process per core, and counts the plans each
call made. Every ratio is a call over plain ``map`` in the same program; ``far`` counts
the calls that took over twice plain ``map``'s time where a serial plan could have taken
about one. With ``--write`` the report becomes a section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from benchmarks import sections
from benchmarks.bytecode import compile_sources
from benchmarks.stability import CONDITIONS, run_program, start_load, stop_load
from benchmarks.stability_base import calibrate
from benchmarks.stability_report import plan_label
from benchmarks.stability_workloads import DRAWS, find

DEFAULT = ("tiny", "sleep_10ms", "cpu_2ms", "sha256_1mib")
FAR = 2.0  # a call over this many times plain map's time is counted as far off


def _counts(calls: List[Dict[str, Any]]) -> str:
    found = collections.Counter(plan_label(call) for call in calls)
    return ", ".join(f"{plan} {count}" for plan, count in found.most_common())


def summary(name: str, condition: str, programs: List[Dict[str, Any]]) -> List[str]:
    """Lines for one workload under one condition."""
    done = [p for p in programs if "crashed" not in p and p.get("fixed", {}).get("serial")]
    lines = [f"{name} {condition}: {len(done)} programs"]
    crashed = len(programs) - len(done)
    if crashed:
        lines.append(f"  {crashed} programs crashed or timed out")
    if not done:
        return lines
    firsts = [p["first"]["seconds"] / p["fixed"]["serial"] for p in done]
    later = [c["seconds"] / p["fixed"]["serial"] for p in done for c in p["later"]]
    far = sum(r > FAR for r in firsts + later)
    lines.append(f"  first plans: {_counts([p['first'] for p in done])}")
    lines.append(f"  later plans: {_counts([c for p in done for c in p['later']])}")
    lines.append(
        f"  over plain map: first median {statistics.median(firsts):.2f} worst "
        f"{max(firsts):.2f}; later median {statistics.median(later):.2f} worst "
        f"{max(later):.2f}; over {FAR:g}x: {far} of {len(firsts) + len(later)} calls"
    )
    errors = sorted({e for p in done for e in p.get("errors", [])})
    lines += [f"  error: {e}" for e in errors]
    return lines


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", type=int, default=20, help="fresh programs a row (20)")
    parser.add_argument("--only", action="append", metavar="NAME", help="workload(s) to run")
    parser.add_argument("--conditions", default="quiet,loaded", help="quiet,loaded")
    parser.add_argument("--later", type=int, default=2, help="later calls per program (2)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per program")
    parser.add_argument("--write", action="store_true", help="save as a RESULTS.md section")
    args = parser.parse_args(argv)
    args.names = [n for arg in args.only or DEFAULT for n in arg.split(",") if n]
    args.conditions = [c for c in args.conditions.split(",") if c]
    unknown = [c for c in args.conditions if c not in CONDITIONS]
    if unknown:
        parser.error(f"--conditions: unknown condition(s) {unknown}; choose from {CONDITIONS}")
    if args.programs < 1:
        parser.error("--programs must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    for name in args.names:  # (an unknown or unrunnable workload stops the run at once)
        try:
            entry = find(name, seed=1, draws=DRAWS, quick=False)
        except KeyError as exc:
            raise SystemExit(f"--only {name}: {exc.args[0]}") from None
        if entry.skip is not None:
            raise SystemExit(f"--only {name}: cannot run here: {entry.skip}")
    compile_sources()
    spec = {
        "seed": 1,
        "draws": DRAWS,
        "quick": False,
        "later_calls": args.later,
        "plans_only": True,
        "calibration": calibrate().to_json(),
    }
    out = [
        f"{args.programs} fresh programs a row, one after another; loaded: one busy "
        "process per core beside each program"
    ]
    started = time.perf_counter()
    for name in args.names:
        for condition in args.conditions:
            programs = []
            for _ in range(args.programs):
                busy = start_load() if condition == "loaded" else []
                try:
                    programs.append(run_program({**spec, "name": name}, args.timeout))
                finally:
                    stop_load(busy)
            lines = summary(name, condition, programs)
            print("\n".join(lines), flush=True)
            out += lines
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.write:
        command = f"python -m benchmarks.bench_plans --programs {args.programs}"
        command += "".join(f" --only {n}" for n in args.names)
        title = "Plans over many fresh programs (bench_plans.py)"
        sections.write_report("plans", title, command, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
