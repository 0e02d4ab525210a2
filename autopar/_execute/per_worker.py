"""Per-worker state: an expensive value (a model, a connection) built once per worker.

A :class:`PerWorker` is a lazy handle. Calling it returns the value, building it with the
factory the first time it is needed *where the call runs*: once per process (the caller
for serial plans and plain calls, each process worker, each dask worker process), and in
threads once per thread unless the value was declared ``thread_safe``. The function that
uses it keeps its plain-call behaviour, since the handle works anywhere.

A handle travels to process workers with the function (by reference when it is a module
global, else pickled by value); every copy in one process shares the value, found by the
handle's token. Values built in the caller are torn down at ``autopar.shutdown()`` and at
exit; values built in a process worker when the worker exits normally.

Build times are kept so that auto can price them: a per-thread handle costs each new
thread a build, a handle costs each new process worker one (see the cost model).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterator,
    List,
    Optional,
    Tuple,
    TypeVar,
    overload,
)

T = TypeVar("T")

# Handles alive in this process by token, and the values they built; _lock guards both,
# and each handle's builds (a thread-safe value is built once even when threads race).
_lock = threading.RLock()
_handles: weakref.WeakValueDictionary[str, PerWorker[Any]] = weakref.WeakValueDictionary()
# Values to tear down, in build order: (teardown, value).
_built: List[Tuple[Callable[[Any], None], Any]] = []
# Seconds each thread (by ident) spent building values, [wall, CPU, perf_counter when a
# build in progress began, else 0]: the probe and the chunk runner take them out of the
# item that happened to build. Each thread writes its own entry; readers may see it mid-
# update, which costs a reading, never a crash.
_setup: Dict[int, List[float]] = {}


def setup_seconds(thread: Optional[int] = None) -> Tuple[float, float]:
    """(wall, CPU) seconds a thread (this one by default) has spent building per-worker
    values, a build still in progress included (its CPU time counted as wall)."""
    entry = _setup.get(threading.get_ident() if thread is None else thread)
    if entry is None:
        return 0.0, 0.0
    wall, cpu, since = entry
    if since:
        going = time.perf_counter() - since
        return wall + going, cpu + going
    return wall, cpu


@contextlib.contextmanager
def _setting_up() -> Iterator[None]:
    entry = _setup.setdefault(threading.get_ident(), [0.0, 0.0, 0.0])
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    entry[2] = wall0
    try:
        yield
    finally:
        entry[0] += time.perf_counter() - wall0
        entry[1] += time.thread_time() - cpu0
        entry[2] = 0.0


class PerWorker(Generic[T]):
    """A value built once per worker by ``factory()``; call the handle to get it.

    Build one with :func:`autopar.per_worker`.
    """

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        teardown: Optional[Callable[[T], None]] = None,
        thread_safe: bool = False,
        token: Optional[str] = None,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"per_worker() needs a callable factory, not {factory!r}")
        if teardown is not None and not callable(teardown):
            raise TypeError(f"argument teardown={teardown!r} must be callable")
        self.factory = factory
        self.teardown = teardown
        self.thread_safe = bool(thread_safe)
        self.token = token or os.urandom(16).hex()
        #: Seconds the last build in this process took (None before one); auto prices it.
        self.build_seconds: Optional[float] = None
        #: Times the value was fetched in this process (auto reads which handles a
        #: function used from these counts).
        self.uses = 0
        self._value: Any = _EMPTY
        self._per_thread = threading.local()
        with _lock:
            _handles.setdefault(self.token, self)

    def __call__(self) -> T:
        self.uses += 1
        if self.thread_safe:
            value = self._value
            if value is _EMPTY:
                # (A thread waiting for another's build counts the wait as set-up too.)
                with _setting_up(), _lock:
                    if self._value is _EMPTY:
                        self._value = self._build()
                    value = self._value
            return value  # type: ignore[no-any-return]
        value = getattr(self._per_thread, "value", _EMPTY)
        if value is _EMPTY:
            with _setting_up():
                value = self._per_thread.value = self._build()
        return value  # type: ignore[no-any-return]

    def _build(self) -> T:
        began = time.perf_counter()
        value = self.factory()
        self.build_seconds = time.perf_counter() - began
        if self.teardown is not None:
            with _lock:
                _built.append((self.teardown, value))
        return value

    def __reduce__(self) -> Any:
        return _restore, (self.token, self.factory, self.teardown, self.thread_safe)

    def __repr__(self) -> str:
        name = getattr(self.factory, "__qualname__", type(self.factory).__qualname__)
        return f"per_worker({name}, thread_safe={self.thread_safe})"

    def _forget(self) -> None:
        self._value = _EMPTY
        self._per_thread = threading.local()


_EMPTY: Any = object()


def _restore(token: str, factory: Any, teardown: Any, thread_safe: bool) -> PerWorker[Any]:
    """The handle with ``token`` in this process: every unpickled copy shares its value."""
    with _lock:
        handle = _handles.get(token)
        if handle is None:
            handle = PerWorker(factory, teardown=teardown, thread_safe=thread_safe, token=token)
        return handle


def used_since(before: Dict[str, int]) -> List[PerWorker[Any]]:
    """The live handles fetched since ``before`` (a :func:`use_counts` snapshot)."""
    with _lock:
        handles = list(_handles.values())
    return [h for h in handles if h.uses > before.get(h.token, 0)]


def use_counts() -> Dict[str, int]:
    """How often each live handle has been fetched in this process."""
    with _lock:
        return {h.token: h.uses for h in _handles.values()}


def tear_down() -> None:
    """Tear down every value built in this process, newest first, and forget them all;
    a later fetch builds afresh. A teardown that raises is logged and the rest go on."""
    import logging

    with _lock:
        built, _built[:] = list(_built), []
        handles = list(_handles.values())
        for handle in handles:
            handle._forget()
    for teardown, value in reversed(built):
        try:
            teardown(value)
        except Exception:
            logging.getLogger("autopar").exception("autopar: a per_worker teardown raised")


def _forget_after_fork() -> None:
    # A forked child (AUTOPAR_START_METHOD=fork) starts with copies of the values this
    # process built: a connection, a model on a device, this process's own. The child
    # builds its own on first use and tears none of these down; _setup's entries are
    # threads it does not have.
    global _lock
    _lock = threading.RLock()  # (another thread may have held it at the fork)
    _built.clear()
    _setup.clear()
    for handle in list(_handles.values()):
        handle._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def tear_down_at_worker_exit() -> None:
    """In a process worker: run :func:`tear_down` when the worker exits normally."""
    from multiprocessing import util

    util.Finalize(None, tear_down, exitpriority=10)


@overload
def per_worker(
    factory: Callable[[], T],
    *,
    teardown: Optional[Callable[[T], None]] = None,
    thread_safe: bool = False,
) -> PerWorker[T]: ...


@overload
def per_worker(
    factory: None = None,
    *,
    teardown: Optional[Callable[[Any], None]] = None,
    thread_safe: bool = False,
) -> Callable[[Callable[[], T]], PerWorker[T]]: ...


def per_worker(
    factory: Optional[Callable[[], T]] = None,
    *,
    teardown: Optional[Callable[[Any], None]] = None,
    thread_safe: bool = False,
) -> Any:
    """Build a value once per worker, lazily, and reuse it for every item there.

    ::

        @per_worker(teardown=lambda db: db.close())
        def db():
            return sqlite3.connect("data.db")

        @parallel
        def lookup(key):
            return db().execute("SELECT v FROM t WHERE k = ?", (key,)).fetchone()

    ``db()`` returns this worker's connection, opening it on first use: once in each
    process worker, once per thread on threads (one shared by all threads when
    ``thread_safe=True``), once in the caller for serial runs and plain calls.
    ``teardown(value)`` runs when the worker exits, and for values built in the calling
    process at ``autopar.shutdown()`` and exit. Auto prices the build: see
    docs/heavy-functions.md.
    """
    if factory is None:
        return lambda f: PerWorker(f, teardown=teardown, thread_safe=thread_safe)
    return PerWorker(factory, teardown=teardown, thread_safe=thread_safe)
