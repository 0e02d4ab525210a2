"""Failure tests: crashes, exceptions, Ctrl-C, timeouts, exits, streaming, nesting.

Each module's docstring says which failure it causes and what must hold afterwards. Most
run their code in a fresh interpreter (``script``) under a hard time bound, so that a hang
or a crash fails the test instead of the test run; the functions sent to workers live in
``tests/helpers.py``.
"""

from __future__ import annotations

from tests.conftest import run_python


def script(code: str, *, timeout: float = 60, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter; it must exit 0 within ``timeout``. Its stdout."""
    proc = run_python(code, timeout=timeout, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
