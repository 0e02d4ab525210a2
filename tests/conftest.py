from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

import autopar

ROOT = Path(__file__).resolve().parent.parent


def child_env(env: dict | None = None) -> dict:
    """This environment for a fresh interpreter: no AUTOPAR_* variable, this checkout
    first on its path, then ``env``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPAR_")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return full_env


@contextlib.contextmanager
def python_in_own_group(code: str) -> Iterator[subprocess.Popen]:
    """``code`` running in a fresh interpreter in a process group of its own (as a
    terminal's Ctrl-C reaches a program: ``os.killpg(proc.pid, SIGINT)``), its output
    piped; whatever of the group still runs at the end is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()  # also closes the pipes, which would otherwise leak


def run_python(
    code: str, *, env: dict | None = None, timeout: float = 60, args: tuple = ()
) -> subprocess.CompletedProcess:
    """Run ``code`` as a script in a fresh interpreter, killed after ``timeout`` seconds."""
    full_env = child_env(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=ROOT,
    )


def run_file(
    path: Path, *, env: dict | None = None, timeout: float = 60, args: tuple = ()
) -> subprocess.CompletedProcess:
    full_env = child_env(env)
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=ROOT,
    )


def shm_segments(pid: int | None = None) -> list:
    """Names in /dev/shm of the shared-memory segments process ``pid`` (this one) made."""
    from autopar._execute import shared_memory

    prefix = f"{shared_memory.PREFIX}{pid or os.getpid()}_"
    return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


@pytest.fixture
def no_segments_left():
    """After the test, and a shutdown: no segment of this process is left in /dev/shm."""
    yield
    autopar.shutdown()
    assert shm_segments() == []


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("AUTOPAR_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _nothing_learned():
    # Tests give the same helpers different costs: each test's wrappers measure afresh.
    from autopar._auto import memory

    with memory.lock:
        memory._learned.clear()


@pytest.fixture
def no_pilot(monkeypatch):
    """First calls go straight to the planner, for tests of how it measures and plans
    calls short enough for the pilot to run whole (see autopar._auto.pilot)."""
    from autopar._auto import pilot

    monkeypatch.setattr(pilot, "applies", lambda call, state: False)


@pytest.fixture(scope="session", autouse=True)
def _no_worker_outlives_the_session():
    yield
    autopar.shutdown()
    assert multiprocessing.active_children() == []
