"""Whether process workers can start without running the program's main script again.

A spawn or forkserver worker imports the program's main script before its first task, so
that functions defined there can be found. The script's top-level code runs again in
every worker unless it sits under ``if __name__ == "__main__":``; a worker that then
reaches a call that starts processes dies (multiprocessing refuses to start processes
while a process is still starting). So autopar asks, once per program, whether the main
script has such a guard: kind="auto" leaves processes out where it has none, and
kind="process" says so instead of losing its workers. It also reads what a worker's run
of the script imports (imported_again), which the server the workers fork from can
import once for all of them (autopar._execute.forkserver).
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Dict, List, Optional, Tuple

# An `if` line that compares __name__ with "__main__", either way round, at any depth.
_GUARD = re.compile(r"^\s*if\b.*(__name__.*__main__|__main__.*__name__)", re.MULTILINE)
# An unindented import statement: the module of `from M import ...`, or the names of
# `import A, B as C` (to the line's end).
_TOP_IMPORT = re.compile(
    r"^(?:from[ \t]+([\w.]+)[ \t]+import\b|import[ \t]+([^\n#;]+))", re.MULTILINE
)

_lock = threading.Lock()
# Main script path -> (has a main guard, imported_again), from one read (under _lock).
_scanned: Dict[str, Tuple[bool, Tuple[str, ...]]] = {}


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
    return _scan(path)[0]


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
    """The modules a worker imports when it runs the main script at ``path`` again, as far
    as a scan of its unindented import statements tells: those run at the script's top
    level, never inside a function, a class or the main guard. (Imports indented under a
    top-level ``try`` or ``if`` are missed, and relative ones left out. ast.parse would
    see them, in 4-44 ms for 350-2,600 lines where this scan takes 0.5-1 ms, and a
    process pool's start waits for it.) Empty where the script cannot be read."""
    return _scan(path)[1]


def _scan(path: str) -> Tuple[bool, Tuple[str, ...]]:
    """(whether the script at ``path`` has a main guard, imported_again), read once."""
    with _lock:
        known = _scanned.get(path)
    if known is not None:
        return known
    try:
        with open(path, encoding="utf-8", errors="replace") as source:
            text = source.read()
    except OSError:  # gone or unreadable: spawn could not import it either
        known = (False, ())
    else:
        found: List[str] = []
        for module, names in _TOP_IMPORT.findall(text):
            if module:
                found.append(module)
            for part in names.split(","):
                words = part.replace("(", " ").replace(")", " ").split()
                if words:
                    found.append(words[0])
        imports = tuple(name for name in dict.fromkeys(found) if not name.startswith("."))
        known = (_GUARD.search(text) is not None, imports)
    with _lock:
        _scanned[path] = known
    return known
