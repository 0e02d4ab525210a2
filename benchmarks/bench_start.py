"""A process pool's cold start as a program meets it, side by side in fresh programs.

    python -m benchmarks.bench_start [--programs 5] [--write]

Each program is a small script: it imports autopar either at its top level (as the
README shows) or only under its main guard, then times its first ``kind="process"``
call (2 workers, 4 items: the start is all there is to it) and, in the same program, a
fresh ``multiprocessing`` fork ``Pool(2)`` doing the same. Arms: those two scripts under
the default start method and under ``AUTOPAR_START_METHOD=fork``, interleaved program by
program. Reported: the cold call over the fork ``Pool``'s (median and worst), and each
worker's CPU time before its first item (median over all workers of all programs): what
a start costs the machine's other cores beside a call that is still running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Tuple

from benchmarks.bytecode import compile_sources

SCRIPT = """
import json
import multiprocessing
import os
import time
{top}

def first_item(_):
    return time.process_time(), os.getpid()

if __name__ == "__main__":
    from autopar import parallel

    t = time.perf_counter()
    out = parallel(first_item, kind="process", workers=2).map(range(4), chunksize=1)
    cold = time.perf_counter() - t
    seen = {{}}
    for cpu, pid in out:
        seen[pid] = min(cpu, seen.get(pid, cpu))
    t = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(first_item, range(4), chunksize=1)
    fork_pool = time.perf_counter() - t
    print(json.dumps({{"cold": cold, "fork_pool": fork_pool, "worker_cpu": list(seen.values())}}))
"""

ARMS: List[Tuple[str, str, Dict[str, str]]] = [
    ("autopar imported at the top", "from autopar import parallel", {}),
    ("autopar imported under the guard", "", {}),
    (
        "top, AUTOPAR_START_METHOD=fork",
        "from autopar import parallel",
        {"AUTOPAR_START_METHOD": "fork"},
    ),
    ("guard, AUTOPAR_START_METHOD=fork", "", {"AUTOPAR_START_METHOD": "fork"}),
]


def _run(folder: str, top: str, env: Dict[str, str]) -> Dict[str, Any]:
    path = os.path.join(folder, "start_script.py" if top else "guarded_script.py")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(SCRIPT.format(top=top))
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPAR_")}
    full.update(env)
    out = subprocess.run(
        [sys.executable, path], capture_output=True, text=True, env=full, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="save as a RESULTS.md section")
    args = parser.parse_args()
    compile_sources()
    results: Dict[str, List[Dict[str, Any]]] = {name: [] for name, _, _ in ARMS}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
            + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        for _ in range(args.programs):
            for name, top, env in ARMS:
                results[name].append(_run(folder, top, env))
    lines = [
        f"{args.programs} fresh programs an arm, interleaved; cold call over a fresh fork "
        "Pool(2) in the same program; worker CPU before its first item",
        f"{'arm':36} {'cold/Pool median':>16} {'worst':>7} {'worker CPU ms':>14}",
    ]
    for name, runs in results.items():
        ratios = [r["cold"] / r["fork_pool"] for r in runs]
        cpu = [c * 1e3 for r in runs for c in r["worker_cpu"]]
        lines.append(
            f"{name:36} {statistics.median(ratios):16.2f} {max(ratios):7.2f} "
            f"{statistics.median(cpu):14.0f}"
        )
    print("\n".join(lines))
    if args.write:
        from benchmarks import sections

        sections.write_report(
            "start",
            "A process pool's cold start (bench_start.py)",
            f"python -m benchmarks.bench_start --programs {args.programs} --write",
            lines,
        )


if __name__ == "__main__":
    main()
