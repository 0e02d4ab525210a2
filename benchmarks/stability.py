"""Stability benchmark: judge ``kind="auto"`` by its worst case over many fresh programs,
quiet and loaded, on the trap matrix, on drawn workloads and on real libraries.

Usage (from the repository root)::

    .venv/bin/python benchmarks/stability.py                  # full: about 1-2 hours on 2 cores
    .venv/bin/python benchmarks/stability.py --quick          # a few minutes; writes to /tmp
    .venv/bin/python benchmarks/stability.py --suite random --seed 7 --programs 3
    .venv/bin/python benchmarks/stability.py --only growing --only r03-bimodal-wait_compute \\
        --conditions loaded --out /tmp/s.md --json /tmp/s.json

Options: ``--programs N`` fresh programs per workload and condition (5; quick 2);
``--suite matrix|random|real|all``; ``--seed S`` for the drawn workloads (1);
``--draws N`` drawn workloads (30; quick 5); ``--later M`` later calls per program (3);
``--conditions quiet,loaded``; ``--timeout`` seconds per program (300; quick 120);
``--out`` the Markdown report (``benchmarks/STABILITY.md``; quick runs default to the
system temp directory so they never overwrite a full run); ``--json`` the raw measurements.

How: the parent calibrates the machine once, quiet (spin iterations per microsecond, C
hash speeds), then for each workload and condition runs fresh programs one after another
(``python -m benchmarks.stability_child``; see its docstring for what one program times).
For ``loaded``, one busy process per core (``os.sched_getaffinity``) starts before the
program and stops after it. A program that outlives its timeout is killed with its whole
process group. The report is rewritten after every workload, so an interrupted run
leaves what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script, only benchmarks/ is on the path: the suites import benchmarks.*
    sys.path.insert(0, str(ROOT))

from benchmarks import stability_report as report  # noqa: E402  (needs ROOT on sys.path)
from benchmarks.bytecode import compile_sources  # noqa: E402
from benchmarks.stability_base import Calibration, Entry, calibrate  # noqa: E402
from benchmarks.stability_child import MARK  # noqa: E402
from benchmarks.stability_workloads import DRAWS, QUICK_DRAWS, SUITES, entries  # noqa: E402
from benchmarks.write_results import _cpu_model, _git, _load  # noqa: E402

CONDITIONS = ("quiet", "loaded")
BUSY = "while True: pass"
Results = Dict[str, Dict[str, List[Dict[str, Any]]]]  # workload -> condition -> programs


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start_load() -> List[subprocess.Popen[bytes]]:
    """One pure-Python spinning process per core, already spinning when this returns."""
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(cores())]
    time.sleep(0.3)
    return busy


def stop_load(busy: List[subprocess.Popen[bytes]]) -> None:
    for process in busy:
        process.kill()
    for process in busy:
        process.wait()


def _kill_group(process: subprocess.Popen[str]) -> None:
    """Kill a program and what it started (its pool workers share its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _parse(stdout: str, stderr: str, returncode: int) -> Dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK) :]))
    tail = stderr.strip().splitlines()[-1:] or ["no output"]
    return {"crashed": f"exit {returncode}: {tail[0][:300]}"}


def run_program(spec: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """One fresh program, with its own private temporary directory; never two at once."""
    command = [sys.executable, "-m", "benchmarks.stability_child"]
    with tempfile.TemporaryDirectory(prefix="autopar-stability-") as tmp:  # mode 0700
        process = subprocess.Popen(
            [*command, json.dumps({**spec, "tmp": tmp})],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            return {"crashed": f"timed out after {timeout:g} s and was killed"}
        except BaseException:  # Ctrl-C: the program is in its own session, stop it too
            _kill_group(process)
            process.communicate()
            raise
    return _parse(stdout, stderr, process.returncode)


def run_entry(entry: Entry, args: argparse.Namespace, spec: Dict[str, Any]) -> Dict[str, Any]:
    """Every program of one workload: program by program, each condition in turn."""
    found: Dict[str, List[Dict[str, Any]]] = {c: [] for c in args.conditions}
    for _ in range(args.programs):
        for condition in args.conditions:
            busy = start_load() if condition == "loaded" else []
            try:
                found[condition].append(run_program({**spec, "name": entry.name}, args.timeout))
            finally:
                stop_load(busy)
    return found


# --- writing ----------------------------------------------------------------------------------


def machine_lines(args: argparse.Namespace, calibration: Calibration, load: str) -> List[str]:
    code = f"`{_git('rev-parse', '--short', 'HEAD') or 'unknown'}`"
    status = _git("status", "--porcelain", "--", "autopar").splitlines()
    if status:  # others edit autopar/ while benchmarks run: say what was not committed
        code += " plus uncommitted changes in "
        code += ", ".join(f"`{line.split(None, 1)[-1]}`" for line in status)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- **cores**: {cores()} (`os.sched_getaffinity`); CPU: {_cpu_model()}",
        f"- **Python** {platform.python_version()} on {platform.system()}; date: {now}",
        f"- **autopar** commit {code}",
        f"- load average (1 min) at start and end: {load}; {_autogroups()}",
        f"- mode: {'quick' if args.quick else 'full'}; {args.programs} programs per workload "
        f"and condition; {args.later} later calls per program; seed {args.seed}, "
        f"{args.draws} drawn workloads; timeout {args.timeout:g} s per program",
        *(
            [
                "- **quick run**: a quarter of the items and shorter drawn calls; rows of a few"
                " ms mostly measure fixed costs (imports, measuring, pool starts), so judge the"
                " targets on a full run"
            ]
            if args.quick
            else []
        ),
        f"- calibration (quiet, once per run): {calibration.spin_per_us:.1f} spin iterations "
        f"per us; command: `{' '.join(['benchmarks/stability.py', *sys.argv[1:]])}`",
    ]


def _autogroups() -> str:
    """Whether Linux shares the cores session by session (see HOW_TO_READ's `loaded`)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            on = f.read().strip() == "1"
    except OSError:
        return "autogroups: not known here"
    return (
        "autogroups: on (a loaded program gets about half the cores)" if on else "autogroups: off"
    )


def _ran(results: Results, entry: Entry) -> str:
    """How many items the programs ran (matrix and quick sizes differ from descriptions)."""
    for programs in results.get(entry.name, {}).values():
        for program in programs:
            if "n_items" in program:
                return f"; ran with {program['n_items']:,} items"
    return ""


def render(chosen: List[Entry], skipped: List[Entry], results: Results, header: List[str]) -> str:
    lines = ["# autopar stability results", "", "Generated by `benchmarks/stability.py`; "]
    lines[-1] += "do not edit by hand. Read the ratios, not the times.\n"
    lines += ["## Machine", "", *header, "", "## How to read", "", report.HOW_TO_READ]
    rows, notes, met = [], [], 0
    for entry in chosen:
        for condition, programs in results.get(entry.name, {}).items():
            summary = report.Summary()
            for program in programs:
                summary.add(program)
            met += not summary.misses() and not summary.errors
            rows.append(report.row(entry.name, condition, summary))
            notes += report.notes(entry.name, condition, summary)
    lines += ["## Results", "", f"{met} of {len(rows)} rows meet every target.", ""]
    lines += [*report.HEADER, *rows, ""]
    if notes:
        lines += ["## Misses: what auto said when it was worst", "", *notes, ""]
    lines += ["## Workloads", ""]
    lines += [f"- `{e.name}` ({e.suite}): {e.description}{_ran(results, e)}" for e in chosen]
    lines += [f"- `{e.name}` ({e.suite}): **skipped**, {e.skip}" for e in skipped]
    return "\n".join(lines).rstrip() + "\n"


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller calls, 2 programs")
    parser.add_argument("--programs", type=int, help="fresh programs per row (5; quick 2)")
    parser.add_argument("--only", action="append", metavar="NAME", help="workload(s) to run")
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--seed", type=int, default=1, help="seed of the drawn workloads")
    parser.add_argument("--draws", type=int, help="drawn workloads (30; quick 5)")
    parser.add_argument("--later", type=int, default=3, help="later calls per program")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="quiet,loaded")
    parser.add_argument("--timeout", type=float, help="seconds per program (300; quick 120)")
    parser.add_argument("--out", type=Path, help="Markdown report")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args(argv)
    args.programs = args.programs or (2 if args.quick else 5)
    args.draws = args.draws if args.draws is not None else (QUICK_DRAWS if args.quick else DRAWS)
    args.timeout = args.timeout or (120.0 if args.quick else 300.0)
    args.conditions = [c for c in args.conditions.split(",") if c]
    unknown = [c for c in args.conditions if c not in CONDITIONS]
    if unknown:
        parser.error(f"unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
    if args.out is None:
        quick = Path(tempfile.gettempdir()) / "autopar-STABILITY-quick.md"
        args.out = quick if args.quick else ROOT / "benchmarks" / "STABILITY.md"
    return args


def selected(args: argparse.Namespace) -> List[Entry]:
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    found = entries(suites, seed=args.seed, draws=args.draws, quick=args.quick)
    if not args.only:
        return found
    names = [n for arg in args.only for n in arg.split(",") if n]
    unknown = [n for n in names if n not in {e.name for e in found}]
    if unknown:
        known = ", ".join(e.name for e in found)
        raise SystemExit(f"unknown workload(s) {unknown} in suite {args.suite}; known: {known}")
    return [e for e in found if e.name in names]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    workloads = selected(args)
    runnable = [e for e in workloads if e.skip is None]
    skipped = [e for e in workloads if e.skip is not None]
    compile_sources()
    load_start = _load()
    calibration = calibrate()
    spec = {
        "seed": args.seed,
        "draws": args.draws,
        "quick": args.quick,
        "later_calls": args.later,
        "calibration": calibration.to_json(),
    }
    results: Results = {}
    started = time.perf_counter()
    for entry in runnable:
        t0 = time.perf_counter()
        results[entry.name] = run_entry(entry, args, spec)
        print(f"{entry.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        header = machine_lines(args, calibration, f"{load_start} and {_load()}")
        args.out.write_text(render(runnable, skipped, results, header))
        if args.json:
            raw = {"spec": spec, "header": header, "results": results}
            args.json.write_text(json.dumps(raw, indent=1))
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
