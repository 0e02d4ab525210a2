"""Fresh programs start as a user's do: with autopar's modules compiled.

pip compiles a package's modules when it installs them, and a source checkout writes
their bytecode on first import. Where writing is off (``PYTHONDONTWRITEBYTECODE``, a
read-only checkout), every fresh program would compile the modules a first call imports
(the planner, calibration, the pools), and that compiling would read as the first
call's overhead: about 14 ms on the 2-core VM, against 5 ms to load them compiled.
Each benchmark that times fresh programs calls :func:`compile_sources` before the first.
"""

from __future__ import annotations

import compileall
from pathlib import Path

import autopar

ROOT = Path(__file__).resolve().parent


def compile_sources() -> None:
    """Write the bytecode of autopar's and the benchmarks' modules where it is missing or
    stale (``compileall`` writes it whatever ``PYTHONDONTWRITEBYTECODE`` says)."""
    for package in (Path(autopar.__file__).resolve().parent, ROOT):
        compileall.compile_dir(str(package), quiet=1)
