"""Fault scenarios: each runs in a fresh interpreter under a hard time bound."""

from __future__ import annotations

from tests.conftest import run_python


def script(code: str, *, timeout: float = 60, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter; it must exit 0 within ``timeout``. Its stdout."""
    proc = run_python(code, timeout=timeout, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
