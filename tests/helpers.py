"""Functions the tests send to workers, in one module for every test file.

They live at module level so that process workers (and the fresh interpreters the fault
tests start) import them by reference: ``from tests import helpers``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Tuple

from autopar import parallel

# -- plain work ----------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def identity(x: Any) -> Any:
    return x


def length(data: bytes) -> int:
    return len(data)


def digest(buffer: bytes) -> str:
    return hashlib.sha256(buffer).hexdigest()


def pid(_: Any) -> int:
    return os.getpid()


def thread_id(_: Any) -> int:
    return threading.get_ident()


def blas_env(_: Any) -> dict[str, str | None]:
    return {
        v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }


# -- waiting and computing -----------------------------------------------------------------

_lock = threading.Lock()
_running = 0
peak = 0  # the most nap() calls that overlapped since reset_peak(), in this process


def nap(seconds: float) -> float:
    """Waiting work that records how many naps overlap (``peak``)."""
    global _running, peak
    with _lock:
        _running += 1
        peak = max(peak, _running)
    try:
        time.sleep(seconds)
    finally:
        with _lock:
            _running -= 1
    return seconds


def reset_peak() -> None:
    global peak
    peak = 0


def nap_unless_zero(seconds: float) -> float:
    """nap(), except that zero returns at once: near-free items that the probe batches."""
    return nap(seconds) if seconds else 0


def nap_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def burn(ms: float) -> int:
    """Pure-Python work for about ``ms`` milliseconds (holds the GIL)."""
    end = time.thread_time() + ms / 1e3
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i * i
    return total


def nap_then_burn(ms: float) -> int:
    """Waits 5 ms, then computes for ``ms`` milliseconds holding the GIL: part waiting."""
    time.sleep(0.005)
    return burn(ms)


def burn_holding(lock_and_ms: tuple[Any, float]) -> int:
    lock, ms = lock_and_ms
    with lock:
        return burn(ms)


def burn_and_log(args: tuple[str, int, float]) -> int:
    """Burn, then append the item's index to a file: counts executions across processes."""
    path, index, ms = args
    burn(ms)
    with open(path, "a") as log:
        log.write(f"{index}\n")
    return index


def tunable(seconds: float) -> int:
    """Sleeps as long as the item says: one function whose cost changes between calls.

    Zero means no sleep at all: time.sleep(0) yields the CPU, which on a busy machine can
    take a millisecond and make "cheap" noisy.
    """
    if seconds:
        time.sleep(seconds)
    return os.getpid()


def stuck(x: int) -> int:
    """Item 0 is stuck for a long time; the rest are quick."""
    if x == 0:
        time.sleep(600)
    return x


class Gate:
    """Item 0 waits until every other item has started (or ``timeout`` passes), and
    returns whether they all did: they can only start while item 0 is still running if
    something other than item 0's thread runs them."""

    def __init__(self, n: int, timeout: float = 10.0) -> None:
        self.others = threading.Semaphore(0)
        self.n, self.timeout = n, timeout

    def __call__(self, index: int) -> bool:
        if index == 0:
            deadline = time.monotonic() + self.timeout
            for _ in range(self.n - 1):
                if not self.others.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    return False
            return True
        self.others.release()
        time.sleep(0.01)
        return True


# -- failures ------------------------------------------------------------------------------


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x


def slow_or_raise(spec: tuple[int, str, float]) -> int:
    """For the property test: ``(value, "ok"|"raise", sleep seconds)``."""
    value, what, seconds = spec
    if seconds:
        time.sleep(seconds)
    if what == "raise":
        raise KeyError(value)
    return value * 2


def die_on(x: int, bad: int = 5, how: str = "exit") -> int:
    """Kill the worker process at item ``bad``; the others take a moment, then square."""
    if x == bad:
        time.sleep(0.3)  # so that the items before it have finished by then
        if how == "exit":
            os._exit(13)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        ctypes.string_at(0)  # a segfault
    time.sleep(0.01)
    return x * x


def die_on_exit(x: int) -> int:
    return die_on(x, how="exit")


def die_on_kill(x: int) -> int:
    return die_on(x, how="kill")


def die_on_segfault(x: int) -> int:
    return die_on(x, how="segv")


class Unpicklable(Exception):
    """An exception that holds a lock, so it cannot be pickled back from a worker."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


def raise_unpicklable(x: int) -> int:
    raise Unpicklable(f"cannot ship item {x}")


class NeedsTwo(Exception):
    """Pickles, but cannot be rebuilt: its __init__ wants two arguments."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


def raise_needs_two(x: int) -> int:
    raise NeedsTwo("first", str(x))


def lock_for(x: int) -> Any:
    """A result that cannot be pickled for item 2; the others are the item itself."""
    return threading.Lock() if x == 2 else x


def _refuse() -> Any:
    raise RuntimeError("refusing to be rebuilt")


class BadReduce:
    """Pickles fine; unpickling it in the worker raises."""

    def __reduce__(self) -> Any:
        return _refuse, ()


# -- decorated functions, and nesting ------------------------------------------------------


@parallel(kind="process")
def proc_square(x: int) -> int:
    """Square x in a worker process."""
    return x * x


@parallel(kind="thread", workers=4)
def thread_square(x: int) -> int:
    return x * x


@parallel(kind="thread", workers=2)
def outer_calls_inner(n: int) -> int:
    # A decorated function mapping another one from inside a worker.
    return sum(thread_square.map(range(n)))


@parallel(kind="process", workers=2)
def inner(_: Any) -> tuple[int, int]:
    return os.getpid(), threading.get_ident()


@parallel(kind="process", workers=2)
def outer_process(n: int) -> tuple[int, list[tuple[int, int]], str]:
    got = inner.map(range(n))
    plan = inner.last_plan
    return os.getpid(), got, plan.kind if plan else "none"


@parallel(kind="thread", workers=2)
def outer_thread(n: int) -> tuple[int, int, list[tuple[int, int]], str]:
    got = inner.map(range(n))
    plan = inner.last_plan
    return os.getpid(), threading.get_ident(), got, plan.kind if plan else "none"


# -- for kind="dask" (a cluster's worker processes import them too) -----------------------


def die_once(marker: str) -> str:
    """Kill the worker process the first time (leaving ``marker``), succeed on the retry."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        os._exit(1)
    return "survived"


def die_always(_: object) -> None:
    os._exit(1)


@parallel(kind="dask")
def inner_square(x: int) -> int:
    return x * x


def outer_sum(n: int) -> tuple[int, str]:
    """Map a dask-decorated function from inside a dask task; report how that ran."""
    total = sum(inner_square.map(range(n)))
    plan = inner_square.last_plan
    return total, plan.kind if plan else "none"


# -- test tools (not sent to workers) ------------------------------------------------------


def spy_chunk_sizes(monkeypatch: Any, backend_class: type) -> List[int]:
    """A list that fills with the size of each chunk ``backend_class`` is handed."""
    sizes: List[int] = []
    submit: Callable[..., Any] = backend_class.submit

    def spy(self: Any, payload: Any, start: int, items: Any, *, star: bool, deadline: Any) -> Any:
        sizes.append(len(items))
        return submit(self, payload, start, items, star=star, deadline=deadline)

    monkeypatch.setattr(backend_class, "submit", spy)
    return sizes


# -- heavy functions -------------------------------------------------------------------------


class Table:
    """A large object that notes, in the file at ``log``, each process that unpickles it."""

    def __init__(self, log: str, data: Any) -> None:
        self.log = log
        self.data = data

    def __reduce__(self) -> Any:
        return _rebuild_table, (self.log, self.data)


def _rebuild_table(log: str, data: Any) -> Table:
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    return Table(log, data)


def look_up(table: Any, i: int) -> int:
    """The byte at ``i`` of ``table`` (a Table or any buffer), with the worker's pid."""
    data = table.data if isinstance(table, Table) else table
    return int(data[i])


class Weights:
    """A flat buffer that pickles out-of-band (protocol 5), as a NumPy array does."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> Any:
        if protocol < 5:
            return Weights, (bytes(self.data),)
        return Weights, (pickle.PickleBuffer(self.data),)


def where_held(weights: Any, i: int) -> Tuple[str, bool, int]:
    """What backs the data of ``weights`` (a Weights over a writable buffer, or a NumPy
    array) in this process, as /proc/self/maps names it (a file's path; "" or a name in
    brackets for private memory); whether the data is writable; and its byte at ``i``."""
    if isinstance(weights, Weights):
        view = memoryview(weights.data).cast("B")
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
        writable, value = not view.readonly, view[i]
    else:
        address, writable = weights.ctypes.data, bool(weights.flags.writeable)
        value = weights.tobytes()[i]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(bound, 16) for bound in fields[0].split("-"))
            if low <= address < high:
                return (fields[5] if len(fields) > 5 else ""), writable, value
    return "", writable, value


def bump_first(weights: Any, _: int) -> int:
    """Add 1 to the first element of the array ``weights``; return it."""
    weights[0] += 1
    return int(weights[0])


# -- per-worker state ------------------------------------------------------------------------


def _note_pid(log: str) -> str:
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    return log


_counted_logs: dict[str, Any] = {}
_counted_lock = threading.Lock()  # (threads of one call race to make a log's handle)


def _counted(log: str) -> Any:
    # One handle per log file, so that each test counts its own builds.
    from autopar import per_worker

    with _counted_lock:
        handle = _counted_logs.get(log)
        if handle is None:
            handle = _counted_logs[log] = per_worker(lambda: _note_pid(log), thread_safe=True)
        return handle


def use_counted_state(args: tuple[str, int]) -> int:
    log, i = args
    _counted(log)()
    return i


def _torn_down(log: str) -> Any:
    from autopar import per_worker

    with _counted_lock:
        handle = _counted_logs.get("teardown:" + log)
        if handle is None:
            handle = per_worker(lambda: log, teardown=_note_pid)
            _counted_logs["teardown:" + log] = handle
        return handle


def use_torn_down_state(args: tuple[str, int]) -> int:
    log, i = args
    _torn_down(log)()
    return i


def new_object() -> object:
    return object()


def _slow_build() -> str:
    time.sleep(0.3)
    return "model"


def use_slow_state(i: int) -> int:
    from autopar import per_worker

    global _slow
    with _counted_lock:
        if _slow is None:
            _slow = per_worker(_slow_build, thread_safe=True)
    _slow()
    return i


_slow: Any = None
