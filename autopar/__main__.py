"""Command line: ``python -m autopar demo`` and ``python -m autopar info``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autopar", description="autopar: automatic parallelism for Python."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="the classic comparison: serial, threads, processes and autopar",
        description="Sleep 0..4 s and square 1000 numbers, each serially, on a "
        "multiprocessing ThreadPool and Pool (fresh, as in the classic article), and with "
        "autopar; print the table of times.",
    )
    demo.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the sleep durations by this (default 1.0: sleeps of 0..4 s)",
    )
    demo.add_argument(
        "--repeat", type=int, default=3, help="runs per cell; the best is shown (default 3)"
    )
    commands.add_parser(
        "info",
        help="what autopar measures on this machine",
        description="Measure and print this machine's cores, start method, and the start-up "
        "and per-item dispatch cost of each pool kind.",
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        if args.scale <= 0 or args.repeat < 1:
            parser.error("--scale must be > 0 and --repeat at least 1")
        run_demo(scale=args.scale, repeat=args.repeat)
    else:
        from ._info import print_info

        print_info()
    return 0


if __name__ == "__main__":
    sys.exit(main())
