"""The benchmarks that write_results.py does not run, as sections of RESULTS.md.

Each such benchmark (bench_heavy.py, bench_buffers.py, bench_faults.py) run with
``--write`` saves its report as ``benchmarks/results/<name>.md``; RESULTS.md ends with
those reports under OTHER, in name order. Writing one refreshes that part of RESULTS.md in
place, so a section can be measured again without the ten minutes of write_results.py,
which keeps them all when it writes the rest.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Iterable, List

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
FOLDER = ROOT / "benchmarks" / "results"
OTHER = "## Other benchmarks"


def machine() -> str:
    """One line naming the machine and interpreter a section was measured on."""
    import os

    from autopar import _cpus

    budget = _cpus.budget()
    return (
        f"{budget.cpus} CPUs ({budget.source}), {os.cpu_count()} on the host; "
        f"{platform.processor() or platform.machine()}; Python {sys.version.split()[0]}"
    )


def other_lines() -> List[str]:
    """The OTHER part of RESULTS.md: every saved section, or nothing when none is."""
    files = sorted(FOLDER.glob("*.md"))
    if not files:
        return []
    lines = [
        OTHER,
        "",
        "Written by the benchmark named in each section (run with `--write`); each was "
        "measured on its own, on the machine it names.",
        "",
    ]
    for path in files:
        lines += [path.read_text().rstrip(), ""]
    return lines


def write_report(
    name: str, title: str, command: str, lines: Iterable[str], *, note: str = ""
) -> None:
    """Save section ``name``: a heading, the machine and the command that measured it (and
    ``note`` under them), then ``lines`` as a text block."""
    head = [f"### {title}", "", f"Machine: {machine()}. `{command}`."]
    write(name, [*head, *([note] if note else []), "", "```text", *lines, "```"])


def write(name: str, lines: List[str]) -> None:
    """Save section ``name`` and refresh the OTHER part of RESULTS.md."""
    FOLDER.mkdir(exist_ok=True)
    (FOLDER / f"{name}.md").write_text("\n".join(lines).rstrip() + "\n")
    text = RESULTS.read_text() if RESULTS.exists() else ""
    head = text.split(f"\n{OTHER}\n", 1)[0].rstrip()
    RESULTS.write_text(head + "\n\n" + "\n".join(other_lines()).rstrip() + "\n")
