"""The multiprocessing context of process workers, and the server they fork from.

Under the forkserver start method (Linux's default here) every worker forks from one
server process per program. The server boots a fresh interpreter and imports PRELOAD once,
so that each worker starts with autopar's worker code already loaded. Starting the server
alone costs the caller one spawn (a few milliseconds), and this module imports only what
that needs: auto starts the server ahead of a pool, beside a call that is still running.
"""

from __future__ import annotations

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


def start(start_method: str) -> None:
    """Start the server now, if ``start_method`` has one (forkserver only)."""
    if start_method != "forkserver":
        return
    from multiprocessing import forkserver

    context(start_method)
    forkserver.ensure_running()
