"""Whether process workers can start without running the program's main script again.

A spawn or forkserver worker imports the program's main script before its first task, so
that functions defined there can be found. The script's top-level code runs again in
every worker unless it sits under ``if __name__ == "__main__":``; a worker that then
reaches a call that starts processes dies (multiprocessing refuses to start processes
while a process is still starting). So autopar asks, once per program, whether the main
script has such a guard: kind="auto" leaves processes out where it has none, and
kind="process" says so instead of losing its workers.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

# An `if` line that compares __name__ with "__main__", either way round, at any depth.
_GUARD = re.compile(r"^\s*if\b.*(__name__.*__main__|__main__.*__name__)", re.MULTILINE)

_lock = threading.Lock()
_guarded: Dict[str, bool] = {}  # main script path -> has a main guard (under _lock)
_imports: Dict[str, Tuple[str, ...]] = {}  # main script path -> imported_again (under _lock)


def main_script() -> Optional[str]:
    """The path of the program's main script; None in a REPL, a notebook or ``-c``."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path or None


def processes_start_cleanly(start_method: str) -> bool:
    """True where new workers would not run the main script's work again: they fork from
    this process, the program has no main script, or the script has a main guard."""
    path = main_script()
    if start_method == "fork" or path is None:
        return True
    with _lock:
        known = _guarded.get(path)
    if known is None:
        try:
            with open(path, encoding="utf-8", errors="replace") as source:
                known = _GUARD.search(source.read()) is not None
        except OSError:  # gone or unreadable: spawn could not import it either
            known = False
        with _lock:
            _guarded[path] = known
    return known


def unguarded_error(start_method: str) -> str:
    """Why kind="process" cannot start its workers here, and what to do about it."""
    return (
        f"kind='process' cannot start workers for this program: the main script "
        f"{main_script()} has no 'if __name__ == \"__main__\":' guard, and every "
        f"{start_method} worker imports it first, so it would run the script's work again "
        f"(and die starting a pool of its own). Put the script's work under that guard "
        f"(or set AUTOPAR_START_METHOD=fork, which copies this process instead)"
    )


def imported_again(path: str) -> Tuple[str, ...]:
    """The modules a worker imports when it runs the main script at ``path`` again: those
    its import statements name outside functions, classes and the main guard (relative
    imports left out). Empty where the script cannot be read or parsed."""
    with _lock:
        known = _imports.get(path)
    if known is None:
        import ast  # (on first need: only a process pool's start asks)

        try:
            with open(path, "rb") as source:
                tree = ast.parse(source.read())
            known = tuple(dict.fromkeys(_imported(tree.body)))
        except (OSError, SyntaxError, ValueError):
            known = ()
        with _lock:
            _imports[path] = known
    return known


def _imported(body: List[Any]) -> Iterator[str]:
    import ast

    for node in body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.module
        elif isinstance(node, ast.If):
            if not _is_guard(node.test):  # (a guard's else branch: seldom, and left out)
                yield from _imported(node.body)
                yield from _imported(node.orelse)
        elif isinstance(node, (ast.Try, ast.With)) or type(node).__name__ == "TryStar":
            yield from _imported(node.body)
            for handler in getattr(node, "handlers", ()):
                yield from _imported(handler.body)
            yield from _imported(getattr(node, "orelse", []))
            yield from _imported(getattr(node, "finalbody", []))


def _is_guard(test: Any) -> bool:
    """Whether ``test`` compares __name__ with "__main__", either way round."""
    import ast

    if not isinstance(test, ast.Compare) or len(test.comparators) != 1:
        return False
    sides = [test.left, test.comparators[0]]
    names = {side.id for side in sides if isinstance(side, ast.Name)}
    values = {side.value for side in sides if isinstance(side, ast.Constant)}
    return names == {"__name__"} and values == {"__main__"}
