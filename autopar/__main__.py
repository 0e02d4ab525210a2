"""Command line: ``python -m autopar demo`` and ``python -m autopar info`` (or ``autopar ...``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

EPILOG = """examples:
  %(prog)s info                         what this machine offers
  %(prog)s demo --scale 0.1 --repeat 1  a quick run of the comparison
  %(prog)s -v demo                      the same, logging each decision autopar makes
"""


def _prog() -> str:
    # `python -m autopar` runs this file as __main__.py; the console script has its own name.
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m autopar" if name in ("__main__.py", "", "-c") else name


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``autopar`` command, with its two subcommands."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="autopar: automatic parallelism for Python.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"autopar {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log autopar's decisions to stderr"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    commands.add_parser(
        "info",
        help="what autopar measures on this machine",
        description="Measure and print this machine's CPU budget (and where it came from), "
        "start method, and the start-up and per-item dispatch cost of each pool kind.",
    )
    return parser


def _add_demo(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        # Only the command line configures logging; the library just emits records.
        logging.basicConfig(format="%(name)s %(levelname)s: %(message)s")
        logging.getLogger("autopar").setLevel(logging.DEBUG)
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
