"""The pool registry: one backend per kind for the whole program, made on first use and
reused by every call.

A pool is replaced when it can no longer serve a call (broken, too small, other settings),
and the reason is logged. A child made by ``os.fork()`` forgets the parent's pools, and
every pool is stopped at interpreter exit before ``concurrent.futures`` joins its threads.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
from typing import Callable, Dict, List, Optional

from .._config import Config
from .backends.base import Backend

log = logging.getLogger("autopar")
# A library logs and lets the application decide where records go: without this, Python's
# last-resort handler would print our WARNINGs to stderr when no logging is configured.
# (Here, not in __init__: every module that logs loads this one; a worker process does not.)
log.addHandler(logging.NullHandler())

# kind -> "module:class"; modules are imported on first use (process machinery is heavy).
_FACTORIES = {
    "serial": "autopar._execute.backends.serial:SerialBackend",
    "thread": "autopar._execute.backends.thread:ThreadBackend",
    "process": "autopar._execute.backends.process:ProcessBackend",
    "dask": "autopar._execute.backends.dask:DaskBackend",
}

# _lock guards _backends, _users and _retired. RLock: a backend's constructor may log, and
# logging may call back.
_lock = threading.RLock()
_backends: Dict[str, Backend] = {}
# Calls running on each pool. A pool replaced while calls still run on it (another thread
# wanted more workers, or other settings) is retired, and stopped when its last call ends.
_users: Dict[Backend, int] = {}
_retired: List[Backend] = []
# Set once, by the exit hook: calls that then lose their pool are in abandoned threads.
_exiting = False


# kind -> class, filled on first use (a dict write is atomic; a race imports twice).
_classes: Dict[str, type[Backend]] = {}


def backend_class(kind: str) -> type[Backend]:
    """The backend class for ``kind``, importing its module the first time."""
    cls = _classes.get(kind)
    if cls is None:
        module, _, name = _FACTORIES[kind].partition(":")
        cls = getattr(importlib.import_module(module), name)
        # After the import: concurrent.futures.process registers its own exit hook then,
        # and ours must be newer to run first (see run_shutdown_before_concurrent_futures).
        _run_shutdown_before_concurrent_futures()
        _classes[kind] = cls
    return cls


def get(kind: str, config: Config, workers: int) -> Backend:
    """The live pool for ``kind``, made or replaced so that it can serve ``workers`` workers.

    For a short use that no replacement can race (warming a pool up); a call uses
    :func:`acquire` instead.
    """
    return _current(kind, config, workers, 0)


def acquire(kind: str, config: Config, workers: int) -> Backend:
    """Like :func:`get`, and the caller becomes one of the pool's users until it calls
    :func:`release`: until then, replacing the pool retires it instead of stopping it."""
    return _current(kind, config, workers, 1)


def _current(kind: str, config: Config, workers: int, users: int) -> Backend:
    stop = []
    with _lock:
        backend = _backends.get(kind)
        if backend is not None:
            replacement = backend.replacement(config, workers)
            if replacement is not None:
                # A broken pool is a recovery the user should hear of; other reasons are choices.
                level = logging.WARNING if replacement.broken else logging.DEBUG
                log.log(level, "autopar: replacing the %s pool: %s", kind, replacement.why)
                stop = _retire(backend)
                backend = None
        if backend is None:
            backend = _backends[kind] = backend_class(kind)(config, workers)
        if users:
            _users[backend] = _users.get(backend, 0) + users
    for old in stop:
        old.shutdown()
    return backend


def _retire(backend: Backend) -> List[Backend]:
    """Forget ``backend`` (under _lock); the pools to stop now, outside the lock."""
    if _backends.get(backend.kind) is backend:
        del _backends[backend.kind]
    if _users.get(backend, 0) == 0:
        _users.pop(backend, None)
        return [backend]
    if backend not in _retired:
        _retired.append(backend)
    return []


def release(backend: Backend) -> None:
    """One call on ``backend`` ended; a retired pool stops when its last call ends."""
    with _lock:
        left = _users.get(backend, 0) - 1
        if left > 0:
            _users[backend] = left
            return
        _users.pop(backend, None)
        if backend not in _retired:
            return
        _retired.remove(backend)
    backend.shutdown()


def peek(kind: str) -> Backend | None:
    """The live pool for ``kind`` if one exists, without making one."""
    with _lock:
        return _backends.get(kind)


def discard(backend: Backend) -> None:
    """Stop ``backend``'s work now where its kind can (kill processes), and replace it.

    A pool that cannot stop its work (threads) is retired: the stuck threads no longer
    take capacity, and the pool stops when the calls still on it end. Killing a process
    pool also fails the other calls running on it at that moment (WorkerCrashedError).
    """
    with _lock:
        stop = _retire(backend)
        if backend.can_abort and backend in _retired:
            _retired.remove(backend)
            stop = [backend]
    for old in stop:
        old.abort()


def in_background(start: Callable[[], None]) -> bool:
    """Run ``start`` (a pool warm-up) on a daemon thread, unless one still runs; whether
    it was started.

    :func:`shutdown` waits for it first, so that no pool starts behind its back (and a
    warm-up waiting in :func:`wait_until` gives up).
    """
    global _background
    with _lock:
        if _exiting or (_background is not None and _background.is_alive()):
            return False
        _background = threading.Thread(target=start, name="autopar-warm", daemon=True)
        _background.start()
        return True


def wait_until(event: threading.Event) -> bool:
    """For a warm-up: wait for ``event``; False if :func:`shutdown` came first."""
    while not event.wait(0.05):
        if _stopping.is_set():
            return False
    return True


_background: Optional[threading.Thread] = None  # guarded by _lock
_stopping = threading.Event()  # set while shutdown() waits for the warm-up


def warming() -> bool:
    """Whether a warm-up started by :func:`in_background` is still running."""
    with _lock:
        return _background is not None and _background.is_alive()


BACKGROUND_WAIT = 60.0  # seconds shutdown() waits for a warm-up (a start hung in the OS)


def shutdown() -> None:
    """Stop every pool now, retired ones too. The next call starts fresh ones."""
    with _lock:
        background = _background
    if background is not None and background is not threading.current_thread():
        _stopping.set()
        try:
            background.join(BACKGROUND_WAIT)
        finally:
            _stopping.clear()
    with _lock:
        backends = [*_backends.values(), *_retired]
        _backends.clear()
        _retired.clear()
        _users.clear()
    for backend in backends:
        backend.shutdown()
    for kind, factory in _FACTORIES.items():
        if factory.partition(":")[0] in sys.modules:  # (a kind never loaded holds nothing)
            backend_class(kind).close_shared()
    per_worker = sys.modules.get(f"{__package__}.per_worker")
    if per_worker is not None:  # (values built here: serial runs, threads, plain calls)
        per_worker.tear_down()


def _shutdown_at_exit() -> None:
    global _exiting
    _exiting = True
    shutdown()


def park_if_exiting() -> None:
    """Block a daemon thread whose call lost its pool to the exit hook, until the end.

    At exit the hook kills workers still running calls, so that exit cannot hang; a call
    running in a daemon thread then ends with the thread, as daemon threads do, rather
    than printing a crash error while the program exits.
    """
    thread = threading.current_thread()
    if _exiting and thread.daemon and thread is not threading.main_thread():
        threading.Event().wait()


def _forget_after_fork() -> None:
    # The parent's pools, threads and pipes belong to the parent: start from nothing.
    global _lock, _background, _stopping
    _lock = threading.RLock()
    _background = None
    _stopping = threading.Event()
    _backends.clear()
    _users.clear()
    _retired.clear()
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is not None:
        # multiprocessing keeps one forkserver per program and does not notice a fork: the
        # child would talk to the parent's server, which is not its child. Forget it too.
        server = forkserver._forkserver
        server._forkserver_address = server._forkserver_alive_fd = None
        server._forkserver_pid = server._inherited_fds = None
        server._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


_hooked = threading.Event()


def _run_shutdown_before_concurrent_futures() -> None:
    """Make exit stop our pools before ``concurrent.futures`` waits for its workers.

    threading's exit hooks run before atexit's, newest first, and
    ``concurrent.futures.process`` registers one there that waits for running work. This
    runs after each backend module loads, and registers once that module system has
    loaded (the process backend imports it), so a stuck worker is killed at exit rather
    than waited for forever.
    """
    # (Not at exit: threading takes no more hooks then, and ours is running already. A
    # backend module loaded by a plain import, as the planner loads the serial one, meets
    # this first in the exit hook's own backend_class.)
    if _exiting or _hooked.is_set() or "concurrent.futures.process" not in sys.modules:
        return
    _hooked.set()
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_shutdown_at_exit)


atexit.register(_shutdown_at_exit)
