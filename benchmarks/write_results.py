"""Run every workload under every contender side by side and write ``benchmarks/RESULTS.md``.

Usage (from the repository root; ``make bench`` runs the full version)::

    .venv/bin/python benchmarks/write_results.py            # full sizes, ~10 minutes on 2 cores
    .venv/bin/python benchmarks/write_results.py --quick    # a tenth of the sizes, a smoke run
    .venv/bin/python benchmarks/write_results.py --only cpu_2ms --only tiny --out /tmp/r.md

Why a script and not pytest: the result is a set of *ratios* (auto against the best fixed
choice, and against joblib), so every column of a row must be measured in the same process,
interleaved, on the same machine state. Each cell is the best of a few repetitions: the
repetitions go round all the columns in turn, so a burst of noise from other tenants of a
shared machine hurts one repetition of each column rather than every repetition of one.

"auto first" is a fresh ``parallel(fn)`` wrapper per repetition, so calibration is in every
timing; autopar's pools are program-wide, though, so the process pool is usually warm from
the "autopar process" column. One truly cold first call (a fresh interpreter, no pools) is
timed in a subprocess for two CPU workloads (0.6 s and 0.2 s of Python code). A workload
or cell that fails becomes an error entry in the report, never a crash.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script, only benchmarks/ is on the path: workers must import benchmarks.*
    sys.path.insert(0, str(ROOT))

import autopar  # noqa: E402  (needs ROOT on sys.path, set just above)
from benchmarks.bytecode import compile_sources  # noqa: E402
from benchmarks.cold import first_call as cold_first_call  # noqa: E402
from benchmarks.sections import other_lines  # noqa: E402
from benchmarks.workloads import (  # noqa: E402
    WORKLOADS,
    Contender,
    Workload,
    contenders,
    missing_optional,
    square_int,
)

QUICK_SCALE = 0.1
# Calls under FAST seconds are timed in a burst of BURST back-to-back calls and the best
# kept, as timeit does: one call of microseconds, right after another contender's pool
# work, measures cold caches and scheduler noise, not the call.
FAST = 0.001
BURST = 20
# Timed once more as a truly cold first call, in a subprocess.
COLD_WORKLOADS = ("cpu_2ms", "medium")

# Targets for kind="auto" (ratios to the best fixed choice and to joblib's default).
FIRST_VS_FIXED = 1.5
LATER_VS_FIXED = 1.25
VS_JOBLIB = 1.0
CLASSIC_SLEEP_LIMIT = 4.1  # seconds at full scale: the longest item is 4 s
SQUARE_LATER_VS_SERIAL = 3.0
SQUARE_FIRST_LIMIT = 0.005
# Workloads judged by their own targets instead of the ratios to the best fixed choice:
# square's items cost ~0.1 us, so any calibration at all is many times plain map.
OWN_TARGETS = ("square",)


@dataclasses.dataclass
class Cell:
    """One contender on one workload: best time over the repetitions that ran."""

    best: Optional[float] = None
    reps: int = 0
    spent: float = 0.0
    error: Optional[str] = None
    plan: Optional[autopar.Plan] = None

    def add(self, seconds: float) -> None:
        self.best = seconds if self.best is None else min(self.best, seconds)
        self.reps += 1
        self.spent += seconds


@dataclasses.dataclass
class Row:
    """One workload's results: a cell per contender, or an error for the whole row."""

    workload: Workload
    n_items: int = 0
    cells: Dict[str, Cell] = dataclasses.field(default_factory=dict)
    error: Optional[str] = None
    cold: Optional[Dict[str, Any]] = None


# --- measuring ----------------------------------------------------------------------------


def _failure(exc: BaseException) -> str:
    """An exception as one short line for a table cell."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text[:160]


def warm_pools() -> None:
    """Start every pool that outlives a call (autopar's, joblib's) before any timing.

    Their start-up is a once-per-program cost; left in, it would land in whichever cell
    happened to run first. The cold cost is reported separately (``measure_cold``).
    """
    for contender in contenders():
        if contender.keeps_pool and not contender.fresh:
            try:
                contender.make(square_int)(range(64))
            except Exception as exc:
                print(f"warming {contender.name}: {_failure(exc)}", file=sys.stderr)


def measure_row(workload: Workload, scale: float, reps: int, budget: float) -> Row:
    """Every contender on one workload, interleaved, best of up to ``reps`` repetitions.

    A cell stops repeating once it has spent ``budget`` seconds, so multi-second cells
    (the classic sleeps, serial 10 s) run once and the whole report stays within minutes.
    """
    row = Row(workload)
    try:
        items = workload.items(scale)
        row.n_items = len(items)
    except Exception as exc:
        row.error = f"making items: {_failure(exc)}"
        return row
    runners = _prepare(workload, items, row)
    expected: Optional[List[Any]] = None
    # Columns that fork this process run after all the others (see Contender.forks): what
    # follows a fork pool's end runs slower for a second or more, whatever it is.
    passes = [[c for c in contenders() if not c.forks], [c for c in contenders() if c.forks]]
    for columns in passes:
        for rep in range(reps):
            # Each repetition starts one column further along, so that no column always
            # runs right after the same one. The first starts with plain map, whose results
            # the others are checked against.
            shift = rep * len(columns) // max(1, reps)
            for contender in columns[shift:] + columns[:shift]:
                cell = row.cells[contender.name]
                if cell.error is None and (rep == 0 or cell.spent < budget):
                    result = _time_cell(workload, contender, items, runners, cell, expected)
                    if contender.name == "serial" and result is not None:
                        expected = result
    return row


def _prepare(workload: Workload, items: Sequence[Any], row: Row) -> Dict[str, Any]:
    """Runners made once per workload (all but auto's first call); auto later is warmed."""
    runners: Dict[str, Any] = {}
    for contender in contenders():
        cell = row.cells[contender.name] = Cell()
        if contender.fresh:
            continue
        try:
            runners[contender.name] = runner = contender.make(workload.fn)
            if contender.warm_up:
                runner(items)
        except Exception as exc:
            cell.error = _failure(exc)
    return runners


def _time_cell(
    workload: Workload,
    contender: Contender,
    items: Sequence[Any],
    runners: Dict[str, Any],
    cell: Cell,
    expected: Optional[List[Any]],
) -> Optional[List[Any]]:
    """One timed call into ``cell`` (the best of a burst, for calls under FAST seconds);
    wrong results or an exception mark the cell failed."""
    best = math.inf
    try:
        for _ in range(BURST):
            runner = contender.make(workload.fn) if contender.fresh else runners[contender.name]
            t0 = time.perf_counter()
            result = runner(items)
            best = min(best, time.perf_counter() - t0)
            if best >= FAST:
                break
    except Exception as exc:
        cell.error = _failure(exc)
        return None
    if expected is not None and list(result) != expected:
        cell.error = "results differ from plain map"
        return None
    cell.add(best)
    cell.plan = runner.plan
    return list(result)


def measure_cold(workload: Workload, scale: float) -> Dict[str, Any]:
    """auto's first call in a fresh interpreter (no pools, nothing measured yet), and
    plain ``map`` in the same interpreter afterwards, as the side-by-side reference."""
    return cold_first_call(
        "from benchmarks.workloads import WORKLOADS\n"
        f"fn = WORKLOADS[{workload.name!r}].fn\n"
        f"items = WORKLOADS[{workload.name!r}].items({scale!r})"
    )


# --- judging ------------------------------------------------------------------------------


def best_fixed(row: Row) -> Optional[tuple[str, float]]:
    """The fastest fixed choice (serial, threads or processes, autopar-named or stdlib)."""
    fixed = {c.name for c in contenders() if c.fixed}
    times = [(n, c.best) for n, c in row.cells.items() if n in fixed and c.best is not None]
    if not times:
        return None
    name, seconds = min(times, key=lambda t: t[1])
    return name, seconds


def ratio(row: Row, name: str, against: Optional[float]) -> Optional[float]:
    """``name``'s best time over ``against``, or None when either is missing."""
    mine = row.cells.get(name, Cell()).best
    if mine is None or not against:
        return None
    return mine / against


def misses(row: Row, scale: float) -> List[str]:
    """The targets this row's auto columns missed, in words."""
    found: List[str] = []
    fixed = best_fixed(row)
    joblib = row.cells.get("joblib", Cell()).best
    checks = [
        ("first call", "auto first", joblib, VS_JOBLIB, "joblib"),
        ("later calls", "auto later", joblib, VS_JOBLIB, "joblib"),
    ]
    if row.workload.name not in OWN_TARGETS:
        checks += [
            ("first call", "auto first", fixed and fixed[1], FIRST_VS_FIXED, "best fixed"),
            ("later calls", "auto later", fixed and fixed[1], LATER_VS_FIXED, "best fixed"),
        ]
    for label, name, against, limit, what in checks:
        r = ratio(row, name, against or None)
        if r is not None and r > limit:
            found.append(f"{label} {r:.2f}x {what} (target <= {limit}x)")
    found += _classic_misses(row, scale)
    for name in ("auto first", "auto later"):
        if row.cells.get(name, Cell()).best is None:
            found.append(f"{name}: no time ({row.cells.get(name, Cell()).error or 'not run'})")
    return found


def _classic_misses(row: Row, scale: float) -> List[str]:
    """The classic examples' own targets: absolute for the sleeps, serial-relative for square."""
    found: List[str] = []
    first, later = (row.cells.get(n, Cell()).best for n in ("auto first", "auto later"))
    if row.workload.name.startswith("sleep_") and row.workload.suite == "classic":
        limit = CLASSIC_SLEEP_LIMIT * scale
        for label, t in (("first call", first), ("later calls", later)):
            if t is not None and t > limit:
                found.append(f"{label} {t:.2f} s (target <= {limit:.2f} s)")
    if row.workload.name == "square":
        r = ratio(row, "auto later", row.cells["serial"].best)
        if r is not None and r > SQUARE_LATER_VS_SERIAL:
            found.append(f"later calls {r:.1f}x serial (target <= {SQUARE_LATER_VS_SERIAL}x)")
        if first is not None and first >= SQUARE_FIRST_LIMIT:
            found.append(f"first call {fmt_time(first)} (target < 5 ms)")
    return found


# --- writing ------------------------------------------------------------------------------


def fmt_time(seconds: Optional[float]) -> str:
    """Seconds in a unit that reads at a glance."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def fmt_ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_plan(plan: Optional[autopar.Plan]) -> str:
    if plan is None:
        return "-"
    return f"{plan.kind} x{plan.workers} (chunk {plan.chunksize})"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load() -> str:
    """The 1-minute load average: how busy the shared machine was (above the core count,
    other tenants were competing with the benchmark for CPU)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines(scale: float, reps: int) -> List[str]:
    """The header: which machine, which code, and how the numbers were taken."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    status = _git("status", "--porcelain", "--", "autopar").splitlines()
    dirty = [line.split(None, 1)[-1] for line in status]
    code = f"`{commit}`"
    if dirty:
        # Others edit autopar/ while benchmarks run: say exactly what was not committed.
        code += f" plus uncommitted changes in {', '.join(f'`{d}`' for d in dirty)}"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = f"quick (scale {scale:g})" if scale < 1 else "full"
    return [
        f"- **cores**: {cores} (`os.sched_getaffinity`); CPU: {_cpu_model()}",
        f"- **Python** {platform.python_version()} on {platform.system()}; date: {now}",
        f"- **autopar** commit {code}",
        f"- joblib {_version('joblib')}, mpire {_version('mpire')}; "
        f"`multiprocessing` default start method: {multiprocessing.get_start_method()}",
        f"- mode: {mode}; each cell is the "
        f"best of up to {reps} repetitions (fewer for cells of seconds: see `reps`); "
        f"a call under {FAST * 1e3:g} ms counts as the best of {BURST} back-to-back calls",
    ]


_PREAMBLE = """\
# autopar benchmark results

Generated by `benchmarks/write_results.py`; do not edit by hand. **This machine is shared
and noisy**: read the ratios (every column of a row was measured side by side, interleaved,
in one process), not the absolute times.

Columns: `serial` is plain `map`; `autopar thread` / `autopar process` are autopar's named
kinds on its reused pools; `ThreadPool()` / `Pool()` are fresh `multiprocessing` pools with
their defaults, made per call; `joblib` is `Parallel(n_jobs=-1)` (its loky pool is reused);
`mpire` is a default `WorkerPool()` per call. `serial named first` is a fresh
`parallel(kind="serial")(fn)` each repetition: autopar's own call path with nothing to
measure, the least any autopar first call can cost. `auto first` is a fresh `parallel(fn)` each
repetition (calibration included; autopar's process pool is usually already warm from the
`autopar process` column, and machine overheads were measured earlier in the run);
`auto later` is the same decorated function after one untimed call. **Best fixed** is the
fastest of serial, autopar thread/process and `ThreadPool()`/`Pool()`.

Targets for auto: first call <= 1.5x best fixed, later calls <= 1.25x, never slower than
joblib; classic sleeps also <= 4.1 s; classic square instead: later calls <= 3x serial,
first call < 5 ms (plain map takes ~0.2 ms there, so no calibration can be within 1.5x).

**How auto holds up at its worst** (each workload in several fresh programs, quiet and
with one busy process per core, on the matrix, on drawn workloads and on real libraries:
first call, worst and median later call) is in [STABILITY.md](STABILITY.md), written by
`benchmarks/stability.py`. **Many cores**: the summary and the per-workload tables
come from the 2-core machine named below. One lent 16-core machine ran
`benchmarks/bench_cores.py` (named kinds at 1 to 16 workers, auto beside them, and this
report's and the stability table's rows on that machine): its section, "How autopar
scales with cores", is near the end of this file.
"""


def summary_lines(rows: List[Row], scale: float) -> List[str]:
    lines = [
        "| workload | items | best fixed | serial named first | auto first | auto later "
        "| first/joblib | later/joblib | auto chose (first / later) | targets |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        if row.error:
            lines.append(f"| {row.workload.name} | - | ERROR: {row.error} | | | | | | | |")
            continue
        fixed = best_fixed(row)
        base = fixed[1] if fixed else None
        joblib = row.cells.get("joblib", Cell()).best
        missed = misses(row, scale)
        lines.append(
            f"| {row.workload.name} | {row.n_items} "
            f"| {f'{fixed[0]} {fmt_time(fixed[1])}' if fixed else '-'} "
            f"| {fmt_ratio(ratio(row, 'serial named first', base))} "
            f"| {fmt_ratio(ratio(row, 'auto first', base))} "
            f"| {fmt_ratio(ratio(row, 'auto later', base))} "
            f"| {fmt_ratio(ratio(row, 'auto first', joblib))} "
            f"| {fmt_ratio(ratio(row, 'auto later', joblib))} "
            f"| {_chose(row, 'auto first')} / {_chose(row, 'auto later')} "
            f"| {'**MISS**: ' + '; '.join(missed) if missed else 'ok'} |"
        )
    cold = [row for row in rows if row.cold and not row.error]
    if cold:
        lines += ["", "Cold first calls (not a target; see each workload below):", ""]
        lines += [f"- {row.workload.name}: {_cold_line(row)}" for row in cold]
    return lines


def _chose(row: Row, name: str) -> str:
    plan = row.cells[name].plan
    return "-" if plan is None else f"{plan.kind} x{plan.workers}"


def detail_lines(row: Row, scale: float) -> List[str]:
    w = row.workload
    lines = [f"### {w.name}", "", f"{w.description}. Trap: {w.trap}.", ""]
    if row.error:
        return [*lines, f"**ERROR**: {row.error}", ""]
    fixed = best_fixed(row)
    lines += [
        "| column | best time | reps | vs best fixed | autopar ran |",
        "|---|---:|---:|---:|---|",
    ]
    for name, cell in row.cells.items():
        shown = f"ERROR: {cell.error}" if cell.error else fmt_time(cell.best)
        r = ratio(row, name, fixed[1] if fixed else None)
        lines.append(f"| {name} | {shown} | {cell.reps} | {fmt_ratio(r)} | {fmt_plan(cell.plan)} |")
    lines.append("")
    for name in ("auto first", "auto later"):
        plan = row.cells[name].plan
        if plan is not None:
            lines.append(f"- {name} chose **{plan.kind}** x{plan.workers}: {plan.reason}")
    if row.cold:
        lines.append(f"- {_cold_line(row)}")
    missed = misses(row, scale)
    lines.append(f"- targets: {'**MISS**: ' + '; '.join(missed) if missed else 'all met'}")
    return [*lines, ""]


def _cold_line(row: Row) -> str:
    cold = row.cold or {}
    if "error" in cold:
        return f"cold first call (fresh interpreter): ERROR {cold['error']}"
    fixed = best_fixed(row)
    vs_fixed = fmt_ratio(cold["first"] / fixed[1]) if fixed else "-"
    return (
        f"cold first call (fresh interpreter, no pools): {fmt_time(cold['first'])}, "
        f"{cold['first'] / cold['plain']:.2f}x plain map in that interpreter, "
        f"{vs_fixed} best fixed above; chose {cold['kind']} x{cold['workers']}"
    )


def render(rows: List[Row], scale: float, reps: int, load: str) -> str:
    lines = [_PREAMBLE, "## Machine", "", *machine_lines(scale, reps)]
    lines += [f"- load average (1 min) at start and end of the run: {load}", ""]
    missing = missing_optional()
    if missing:
        lines += [f"Not installed, so not compared: {', '.join(missing)}.", ""]
    lines += ["## Summary", "", "Ratios are auto's time over the reference (lower is better).", ""]
    lines += [*summary_lines(rows, scale), "", "## Per workload", ""]
    for row in rows:
        lines += detail_lines(row, scale)
    lines += other_lines()  # (the sections other benchmarks saved: see sections.py)
    return "\n".join(lines).rstrip() + "\n"


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes, a smoke run")
    parser.add_argument("--only", action="append", metavar="NAME", help="workload(s) to run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per cell (max)")
    return parser.parse_args(argv)


def selected(only: Optional[List[str]]) -> List[Workload]:
    """The workloads named by ``--only`` (repeated or comma-separated), else all of them."""
    if not only:
        return list(WORKLOADS.values())
    names = [n for arg in only for n in arg.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    return [WORKLOADS[n] for n in names]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    scale = QUICK_SCALE if args.quick else 1.0
    reps = args.reps or (2 if args.quick else 3)
    budget = 1.0 if args.quick else 3.0
    rows: List[Row] = []
    compile_sources()
    load_start = _load()
    try:
        warm_pools()
        for workload in selected(args.only):
            t0 = time.perf_counter()
            row = measure_row(workload, scale, reps, budget)
            if workload.name in COLD_WORKLOADS and not row.error:
                row.cold = measure_cold(workload, scale)
            rows.append(row)
            print(f"{workload.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    finally:
        autopar.shutdown()
    args.out.write_text(render(rows, scale, reps, f"{load_start} and {_load()}"))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
