"""How autopar scales with the cores of one machine: named kinds at 1 to N workers, and auto.

    python -m benchmarks.bench_cores [--write] [--quick] [--matrix]

Rows, each sized so that one worker per core has work to share:
- ``cpu``: 640 items of about 2 ms of pure Python (holds the GIL): processes scale;
- ``medium``: 8,000 items of about 0.1 ms of pure Python: the hand-off per chunk matters;
- ``sha256``: sha256 of 256 distinct 1 MiB buffers (C code that releases the GIL):
  threads scale, processes ship 1 MiB an item;
- ``wait``: 200 sleeps of 10 ms: threads overlap waits, more threads than cores help.

Columns, all measured in this one program, interleaved, the best of up to three calls:
plain ``map``; autopar's named kinds at 1, 2, 4, ... workers up to the CPU budget (and
more threads for ``wait``); ``kind="auto"`` on later calls and on a first call (a fresh
wrapper; the pools are warm); and a **cold** first call in a fresh interpreter beside a
plain ``map`` timed in that interpreter. Ratios only: speed-up over plain ``map``, and
auto's time over the best named choice (the machine is shared).

``--matrix`` adds, as measured on the same machine, the summary of ``write_results.py``
(the matrix rows, without the multi-second classic sleeps) and the results table of
``stability.py --suite matrix`` (fresh programs, quiet and loaded): the 2-core reports'
own tables, for a machine with more cores. About 5 minutes on 16 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import autopar
from autopar import _cpus, parallel
from benchmarks.bytecode import compile_sources
from benchmarks.cold import first_call as cold_first_call
from benchmarks.workloads import SPIN_2MS, SPIN_100US, _buffers, nap, sha256_hex, spin

REPS = 3
BUDGET = 2.0  # seconds a column may spend repeating before it keeps its best


def _spin_2ms(_: int) -> int:
    return spin(SPIN_2MS)


def _spin_100us(_: int) -> int:
    return spin(SPIN_100US)


def _nap_10ms(_: int) -> None:
    nap(0.01)


ROWS: Dict[str, Tuple[Callable[[Any], Any], Callable[[float], Sequence[Any]], str]] = {
    "cpu": (_spin_2ms, lambda s: range(int(640 * s)), "process"),
    "medium": (_spin_100us, lambda s: range(int(8000 * s)), "process"),
    "sha256": (sha256_hex, lambda s: _buffers(int(256 * s)), "thread"),
    "wait": (_nap_10ms, lambda s: range(int(200 * s)), "thread"),
}


def worker_counts(cpus: int) -> List[int]:
    """1, 2, 4, ... up to ``cpus``, with ``cpus`` itself last."""
    counts = []
    n = 1
    while n < cpus:
        counts.append(n)
        n *= 2
    return [*counts, cpus]


def columns(row: str, cpus: int) -> Dict[str, Callable[[Any], Any]]:
    """Every named choice for ``row``, as wrapped functions (autopar's pools, reused)."""
    fn, _, scales_with = ROWS[row]
    found: Dict[str, Callable[[Any], Any]] = {"serial": lambda items: list(map(fn, items))}
    counts = worker_counts(cpus)
    if row == "wait":
        counts = sorted({*counts, 4 * cpus, 128})
    for kind in ("process", "thread"):
        # The kind a row does not scale with runs once, at one worker per core.
        for n in counts if kind == scales_with else [cpus]:
            found[f"{kind} x{n}"] = parallel(kind=kind, workers=n)(fn).map
    return found


def _best(call: Callable[[], Any]) -> float:
    best, spent = float("inf"), 0.0
    for _ in range(REPS):
        t0 = time.perf_counter()
        call()
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
        if spent > BUDGET:
            break
    return best


def _cold(row: str, scale: float) -> Dict[str, Any]:
    return cold_first_call(
        "from benchmarks.bench_cores import ROWS\n"
        f"fn, make, _ = ROWS[{row!r}]\n"
        f"items = make({scale!r})"
    )


def measure(row: str, scale: float, cpus: int) -> List[str]:
    """One row's table and summary lines."""
    fn, make_items, _ = ROWS[row]
    items = make_items(scale)
    named = columns(row, cpus)
    later = parallel(fn)
    for call in [*named.values(), later.map]:
        call(items)  # warm: every pool started, auto's memory filled
    times: Dict[str, float] = {name: float("inf") for name in named}
    times["auto later"] = times["auto first"] = float("inf")
    plans: Dict[str, str] = {}
    for _ in range(REPS):  # interleaved, so that drift on the machine hits every column
        for name, call in named.items():
            times[name] = min(times[name], _best(lambda call=call: call(items)))
        times["auto later"] = min(times["auto later"], _best(lambda: later.map(items)))
        autopar_forget(fn)  # a true first call: nothing learned by an earlier wrapper
        first = parallel(fn)
        t0 = time.perf_counter()
        first.map(items)
        times["auto first"] = min(times["auto first"], time.perf_counter() - t0)
    plans["auto later"] = _plan(later.last_plan)
    plans["auto first"] = _plan(first.last_plan)
    coldrun = _cold(row, scale)
    serial = times["serial"]
    best_name = min(named, key=lambda n: times[n])
    best = times[best_name]
    lines = [
        f"#### {row}",
        "",
        "| column | speed-up over `map` | vs best named |",
        "|---|---:|---:|",
    ]
    for name, took in times.items():
        label = f"{name} ({plans[name]})" if name in plans else name
        lines.append(f"| {label} | {serial / took:.2f}x | {took / best:.2f}x |")
    lines.append("")
    if "error" in coldrun:
        lines.append(f"- cold first call failed: {coldrun['error']}")
    else:
        lines.append(
            f"- cold first call (fresh interpreter, no pools): "
            f"{coldrun['first'] / coldrun['plain']:.2f}x plain `map` there, "
            f"{coldrun['first'] / best:.2f}x best named here; "
            f"chose {coldrun['kind']} x{coldrun['workers']}"
        )
    lines.append(
        f"- best named: {best_name}; auto later {times['auto later'] / best:.2f}x, "
        f"auto first {times['auto first'] / best:.2f}x of it"
    )
    return [*lines, ""]


# The write_results rows for --matrix: all but the classic sleeps (seconds of serial
# sleeping each, the same on any number of cores).
MATRIX_ROWS = [
    "square", "tiny", "sleep_10ms", "cpu_2ms", "sha256_1mib", "len_1mib",
    "cheap_first", "growing", "mixed", "medium",
]  # fmt: skip


def matrix_lines(programs: int, keep: Optional[str] = None) -> List[str]:
    """write_results' summary and stability's results, run here, as one section part;
    their whole reports are kept in folder ``keep`` if given."""
    import tempfile
    from pathlib import Path

    here = Path(__file__).resolve().parent
    lines: List[str] = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = keep or temporary
        results, stability = Path(folder, "results.md"), Path(folder, "stability.md")
        suite = ["--suite", "matrix", "--programs", str(programs), "--out", str(stability)]
        runs = [
            (
                "write_results.py (best of 3, warm pools)",
                [str(here / "write_results.py"), "--out", str(results)]
                + [arg for row in MATRIX_ROWS for arg in ("--only", row)],
                results,
                "## Summary",
            ),
            (
                f"stability.py --suite matrix --programs {programs} (fresh programs)",
                [str(here / "stability.py"), *suite],
                stability,
                "## Results",
            ),
        ]
        for title, argv, out, heading in runs:
            done = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
            lines += [f"#### {title}", ""]
            if done.returncode != 0 or not out.exists():
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                lines += [f"- failed: {tail}", ""]
                continue
            lines += [*_table_after(out.read_text(), heading), ""]
    return lines


def _table_after(text: str, heading: str) -> List[str]:
    """The first Markdown table under ``heading``, with the sentence before it."""
    part = text.split(f"\n{heading}\n", 1)[-1].splitlines()
    start = next((i for i, line in enumerate(part) if line.startswith("|")), len(part))
    end = next((i for i in range(start, len(part)) if not part[i].startswith("|")), len(part))
    before = [line for line in part[:start] if line.strip() and not line.startswith("#")]
    return [*before[-1:], "", *part[start:end]]


def autopar_forget(fn: Callable[..., Any]) -> None:
    from autopar._auto import memory

    memory.forget(fn)


def _plan(plan: Optional[autopar.Plan]) -> str:
    return "-" if plan is None else f"{plan.kind} x{plan.workers}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the items")
    parser.add_argument("--write", action="store_true", help="save as a RESULTS.md section")
    parser.add_argument("--rows", default=",".join(ROWS), help="rows, comma-separated")
    parser.add_argument(
        "--matrix", action="store_true", help="add write_results' and stability's tables"
    )
    parser.add_argument("--programs", type=int, default=2, help="stability: programs a row")
    parser.add_argument("--reports", help="keep the --matrix runs' whole reports here")
    args = parser.parse_args(argv)
    scale = 0.25 if args.quick else 1.0
    cpus = _cpus.budget().cpus
    compile_sources()
    from benchmarks import sections

    lines = [
        "### How autopar scales with cores (`bench_cores.py`)",
        "",
        f"Machine: {sections.machine()}. `python -m benchmarks.bench_cores`: named kinds at "
        "1 to N workers and auto, side by side in one program; speed-up is plain `map`'s "
        "time over the column's (best of up to 3 calls).",
        "",
    ]
    try:
        for row in args.rows.split(","):
            t0 = time.perf_counter()
            lines += measure(row, scale, cpus)
            print(f"{row}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    finally:
        autopar.shutdown()
    if args.matrix:
        lines += matrix_lines(args.programs, args.reports)
    print("\n".join(lines))
    if args.write:
        sections.write("cores", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
