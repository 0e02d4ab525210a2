"""The multiprocessing context of process workers, and the server they fork from.

Under the forkserver start method (Linux's default here) every worker forks from one
server process per program. The server boots a fresh interpreter and imports what
preload() names once, so that each worker starts with autopar's worker code already
loaded. Starting the server alone costs the caller one spawn (a few milliseconds), and
this module imports only what that needs: auto starts the server ahead of a pool, beside
a call that is still running.
"""

from __future__ import annotations

import sys
from types import FunctionType, ModuleType
from typing import Any, List, Optional

from . import main_guard

# What the server imports before it forks any worker. (A name that does not import is
# skipped without a word: tests/test_kinds.py imports each.)
PRELOAD = ("autopar._execute.worker", "cloudpickle")
# ... and, where each worker's run of the program's main script imports autopar, the
# module behind autopar's public names. A spawn or forkserver worker runs that script
# again (as __mp_main__) before its first task; that import, with wrapt's (wrapt 2 loads
# asyncio and importlib.metadata), took 87-124 ms of each worker's CPU before its first
# item, where the server's preload left it 19-22 ms (2 cores, Python 3.11, wrapt 2.5).
# Where no worker would import it, the preload would only lengthen the server's boot,
# which every worker's start waits for.
PUBLIC = "autopar.decorator"


def preload(main: Optional[ModuleType]) -> List[str]:
    """The modules the server imports for a program whose main module is ``main``."""
    path = getattr(main, "__file__", None)
    if path and any(_brings_autopar(name) for name in main_guard.imported_again(path)):
        return [*PRELOAD, PUBLIC]
    return list(PRELOAD)


def _brings_autopar(name: str) -> bool:
    """Whether importing module ``name`` imports autopar: it is autopar, or (as this
    program loaded it) a global of its is autopar, one of its names or a value of its
    types (a decorated function)."""
    if _of_autopar(name):
        return True
    module = sys.modules.get(name)
    if module is None:
        return False
    for value in list(vars(module).values()):
        # (type(), not isinstance(): a decorated function is a proxy that passes for the
        # function it wraps, and answers with that function's module.)
        kind = type(value)
        if _of_autopar(kind.__module__):
            return True
        if kind is ModuleType and _of_autopar(value.__name__):
            return True
        if (isinstance(value, type) or kind is FunctionType) and _of_autopar(
            value.__module__ or ""
        ):
            return True
    return False


def _of_autopar(module_name: str) -> bool:
    return module_name == "autopar" or module_name.startswith("autopar.")


def context(start_method: str) -> Any:
    """The multiprocessing context for ``start_method``, preloading what preload() names
    under forkserver."""
    import multiprocessing  # (on first need: auto's planner loads this module)

    found = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        found.set_forkserver_preload(preload(sys.modules.get("__main__")))
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
