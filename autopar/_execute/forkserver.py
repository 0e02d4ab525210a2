"""The multiprocessing context of process workers, and the server they fork from.

Under the forkserver start method (Linux's default here) every worker forks from one
server process per program. The server boots a fresh interpreter and imports PRELOAD once,
so that each worker starts with autopar's worker code already loaded. Starting the server
alone costs the caller one spawn (a few milliseconds), and this module imports only what
that needs: auto starts the server ahead of a pool, beside a call that is still running.
"""

from __future__ import annotations

import sys
from typing import Any

# What the server imports before it forks any worker. (A name that does not import is
# skipped without a word: tests/test_kinds.py imports each.)
PRELOAD = ("autopar._execute.worker", "cloudpickle")


def context(start_method: str) -> Any:
    """The multiprocessing context for ``start_method``, preloading PRELOAD under
    forkserver."""
    import multiprocessing  # (on first need: auto's planner loads this module)

    found = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        found.set_forkserver_preload(list(PRELOAD))
    return found


# The modules a worker's start imports in the parent, by start method (multiprocessing
# imports them on the first start; see import_start_modules).
_START_MODULES = {
    "forkserver": ("multiprocessing.forkserver", "multiprocessing.popen_forkserver"),
    "spawn": (
        "multiprocessing.popen_spawn_win32"
        if sys.platform == "win32"
        else "multiprocessing.popen_spawn_posix",
    ),
    "fork": ("multiprocessing.popen_fork",),
}
_START_MODULES_ALWAYS = (
    "multiprocessing.resource_tracker",
    "multiprocessing.spawn",
    "multiprocessing.synchronize",
)


def import_start_modules(start_method: str) -> None:
    """Import what starting a worker under ``start_method`` imports, in the calling thread.

    For a start made on another thread: an import makes many system calls, and a thread
    that gives up the GIL for one, beside a thread computing in Python, waits out a switch
    interval (5 ms) to get it back. The start's imports (about 40 modules, some 9 ms of
    work) stretched a start beside such a caller from 0.15-0.22 s to 0.36-0.80 s (2 cores).
    """
    import importlib

    for name in (*_START_MODULES.get(start_method, ()), *_START_MODULES_ALWAYS):
        importlib.import_module(name)


def start(start_method: str) -> None:
    """Start the server now, if ``start_method`` has one (forkserver only)."""
    if start_method != "forkserver":
        return
    from multiprocessing import forkserver

    context(start_method)
    forkserver.ensure_running()
