"""What runs inside a worker: one chunk of items through the user's function.

Thread and serial backends call :func:`run_chunk` directly. Process workers call
:func:`run_chunk_pickled`, which unpickles the function (cached per process) and the
items, and pickles the results itself so that an unpicklable result is reported with its
item index instead of as an anonymous queue error. This module is imported by the
forkserver before it forks workers, so it must stay light.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import signal
import threading
import time
import traceback
from typing import (
    Any,
    Callable,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import item_mappings
from .per_worker import setup_seconds
from .shared_buffers import (
    Keeper,
    SegmentHeld,
    Shipped,
    create_returned,
    load_function,
    pack,
    wrap_flat,
)

# True in a process started by autopar's process pool; set once by init_process().
_IN_PROCESS_WORKER = False
# Marks a thread that is running a chunk for a thread pool (nested calls go serial there).
_local = threading.local()

# Libraries that start one thread per core at import; in a worker that is cores x workers.
BLAS_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


class Failure(NamedTuple):
    """An exception raised by the function for item ``index``, with its formatted traceback."""

    index: int  # type: ignore[assignment]  # (shadows tuple.index, on purpose)
    exc: BaseException
    tb: str


class ChunkResult(NamedTuple):
    """What a worker sends back for one chunk; ``results`` stops before a failing item."""

    results: List[Any]
    wall: float  # seconds spent in the function, by the worker's clock
    cpu: float  # CPU seconds of the worker's thread over the same span
    failure: Optional[Failure]


def function_name(fn: Any) -> str:
    """A short name for ``fn`` in logs and errors. Never its repr: a partial's repr holds
    the repr of every argument it carries (a 50 MiB table is a 200 MB string)."""
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    inner = getattr(fn, "func", None)  # functools.partial
    if inner is not None and inner is not fn:
        return f"partial({function_name(inner)})"
    return f"<{type(fn).__qualname__} object>"


def in_worker() -> bool:
    """Whether the current code runs inside an autopar worker (thread or process)."""
    return _IN_PROCESS_WORKER or getattr(_local, "active", False)


@contextlib.contextmanager
def mark_worker_thread() -> Iterator[None]:
    """Flag the current thread as an autopar worker while inside the block."""
    previous = getattr(_local, "active", False)
    _local.active = True
    try:
        yield
    finally:
        _local.active = previous


def init_process(caller: int, blas_threads: int = 1) -> None:
    """Initializer of every process worker; ``caller`` is the pid of the process that owns
    the pool (not always the worker's parent: forkserver workers are the server's)."""
    global _IN_PROCESS_WORKER
    _IN_PROCESS_WORKER = True
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, str(blas_threads))
    # Ctrl-C is the parent's to handle: it cancels the call and terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(caller,), daemon=True).start()
    from .per_worker import tear_down_at_worker_exit

    tear_down_at_worker_exit()


def _exit_when_orphaned(caller: int) -> None:
    # If the program is killed outright (SIGKILL, os._exit) nothing shuts the pool down, and
    # a worker blocked on its task queue would wait forever (a forkserver worker also keeps
    # the server alive): leave once the caller is gone.
    while _alive(caller):
        time.sleep(1.0)
    os._exit(0)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, killed but not yet reaped, does not)."""
    if os.getppid() == pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid was reused by another user's process
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc here: a live pid is taken as the caller
        return True


def run_chunk(
    fn: Callable[..., Any],
    start: int,
    items: Iterable[Any],
    *,
    star: bool,
    mark_thread: bool = False,
    deadline: Optional[float] = None,
    into: Optional[List[Any]] = None,
) -> ChunkResult:
    """Run ``fn`` over ``items`` (indices from ``start``); stop at the first exception.

    ``mark_thread`` flags the thread as a worker, so nested autopar calls inside it run serially.
    ``deadline`` (a ``time.monotonic()`` value) stops the chunk between items once passed.
    ``into``: append the results to this list, whose earlier entries stay (the result's
    ``results`` is that list; a failure's index counts from this chunk's first item).
    """
    results: List[Any] = [] if into is None else into
    before = len(results)
    previous = getattr(_local, "active", False)
    if mark_thread:
        _local.active = True
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    setup0 = setup_seconds()
    failure = None
    try:
        if deadline is None:
            run_all(fn, items, results, star=star)
        else:
            _run_until(fn, items, results, star=star, deadline=deadline, start=start - before)
    except Exception as exc:
        # results holds exactly the items before the one that raised.
        failure = Failure(start + len(results) - before, exc, traceback.format_exc())
    finally:
        _local.active = previous
    # Building per-worker state is the worker's cost, not the items': out of their timing.
    setup = setup_seconds()
    wall = time.perf_counter() - wall0 - (setup[0] - setup0[0])
    cpu = time.thread_time() - cpu0 - (setup[1] - setup0[1])
    return ChunkResult(results, max(0.0, wall), max(0.0, cpu), failure)


def run_here(fn: Callable[..., Any], items: Iterable[Any], *, star: bool) -> List[Any]:
    """Every item in this thread, in input order, at ``map``'s speed; an exception carries
    the index of the item that raised it (the serial shortcuts of autopar._auto)."""
    out: List[Any] = []
    try:
        run_all(fn, items, out, star=star)
    except Exception as exc:
        from ..errors import annotate

        annotate(exc, len(out), "serial worker")
        raise
    return out


def run_all(fn: Callable[..., Any], items: Iterable[Any], out: List[Any], *, star: bool) -> None:
    """Append ``fn`` of every item to ``out``: the hot loop of every kind, the pilot's
    batches included, in C. list.extend keeps what it appended before an exception, so
    len(out) is then the failing item's offset."""
    out.extend(itertools.starmap(fn, items) if star else map(fn, items))


def _run_until(
    fn: Callable[..., Any],
    items: Iterable[Any],
    out: List[Any],
    *,
    star: bool,
    deadline: float,
    start: int,
) -> None:
    for item in items:
        if time.monotonic() > deadline:
            from ..errors import AutoparTimeoutError

            raise AutoparTimeoutError(f"the call's timeout passed before item {start + len(out)}")
        out.append(fn(*item) if star else fn(item))


# Unpickled functions by payload (small functions travel with each chunk) or by segment
# name (large ones are read from shared memory), so a worker unpickles each once. A dask
# worker runs tasks on several threads: _functions_lock guards both (a race would only
# unpickle twice, but nothing here leans on the GIL; a fork takes no thread).
_functions_lock = threading.Lock()
_functions: dict[bytes, Callable[..., Any]] = {}
_shared_functions: dict[str, Callable[..., Any]] = {}
# Large functions a worker keeps: as many as the caller keeps segments for.
_KEEP_SHARED = 4


def dumps(obj: Any, keeper: Optional[Keeper] = None) -> bytes:
    """Pickle with the standard pickler, falling back to cloudpickle for lambdas and closures.

    ``keeper`` takes the large out-of-band buffers (see shared_buffers.Keeper).
    """
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=keeper)
    except Exception:
        import io

        if keeper is not None:
            keeper.kept.clear()  # (what the failed attempt kept)
        buffer = io.BytesIO()
        pickler = _cloudpickler()(buffer, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=keeper)
        pickler.dump(obj)
        return buffer.getvalue()


class _Parts(list):  # type: ignore[type-arg]
    """A pickler's output file that keeps each write as it came."""

    def write(self, data: Any) -> None:
        # A large bytes value is written as the very object (immutable: safe to keep);
        # any other buffer may be a view of memory its owner frees or changes: copied.
        self.append(data if type(data) is bytes else bytes(data))


def dump_parts(obj: Any, keeper: Optional[Keeper] = None) -> Tuple[bytes, ...]:
    """``obj`` pickled as dumps() does, as the pieces the pickler wrote. A large bytes
    value it holds (a table a heavy function carries) is passed on as the very object, so
    nothing is copied: b"".join() of the pieces is dumps(obj), and two pickles of the
    same unchanged value compare equal at a memcmp's cost. ``keeper`` takes the large
    out-of-band buffers (the data of arrays it holds), which are then not among the
    pieces."""
    parts = _Parts()
    try:
        pickle.Pickler(parts, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=keeper).dump(obj)
    except Exception:
        if keeper is not None:
            keeper.kept.clear()  # (what the failed attempt kept)
        parts = _Parts()
        _cloudpickler()(parts, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=keeper).dump(obj)
    return tuple(parts)


_PICKLER: Any = None  # made on first need; a race makes it twice, and either serves


def _cloudpickler() -> Any:
    """cloudpickle's Pickler, taught that autopar's wrappers reduce themselves.

    cloudpickle sees a decorated function as a plain function (the proxy forwards
    ``__class__``) and would pickle it by value, which a proxy cannot do; a type that
    defines ``_autopar_reduce`` is pickled by that method instead.
    """
    global _PICKLER
    if _PICKLER is None:
        import cloudpickle  # type: ignore[import-untyped,unused-ignore]

        class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
            def reducer_override(self, obj: Any) -> Any:
                reduce = getattr(type(obj), "_autopar_reduce", None)
                if reduce is not None:
                    return reduce(obj)
                return super().reducer_override(obj)

        _PICKLER = Pickler
    return _PICKLER


def find_unpicklable(values: Sequence[Any]) -> Tuple[int, BaseException]:
    """Index and error of the first value in ``values`` that cannot be pickled."""
    for i, value in enumerate(values):
        try:
            dumps(value)
        except Exception as exc:
            return i, exc
    return -1, TypeError("pickling failed but no single value is unpicklable")


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a RemoteError with its text."""
    try:
        pickle.loads(dumps(exc))
        return exc
    except Exception:
        from ..errors import RemoteError

        return RemoteError(type(exc).__qualname__, str(exc))


def run_chunk_pickled(
    payload: Any,
    start: int,
    items: Union[bytes, Shipped],
    star: bool,
    deadline: Optional[float],
    count: int = 0,
    returns: Optional[Tuple[int, str]] = None,
) -> Union[bytes, Shipped, SegmentHeld]:
    """Process-side entry point: unpickle, run, pickle; every failure comes back as data.

    ``items`` is a pickle, or a Shipped one whose large buffers lie in shared memory.
    ``returns`` (threshold, segment name): results' buffers from that size go back in a
    segment of that name; None sends everything through the pipe. The reply comes as
    SegmentHeld when the items' segment must not be reused (see shared_buffers).
    """
    if isinstance(items, bytes):
        return _run_pickled(payload, start, items, star, deadline, count, returns)[0]
    try:
        values, slices = item_mappings.load(items)
    except Exception as error:
        item_mappings.release(items.name, [], keep=False)
        return SegmentHeld(dumps(_unpickling_failed(error, payload, start, count)))
    reply, failed = _run_pickled(payload, start, values, star, deadline, count, returns)
    del values  # (the last reference here: the chunk's own went with its frames)
    # A failed chunk's exception may hold frames that view its items: not reused either.
    released = item_mappings.release(items.name, slices, keep=not failed)
    return reply if released and not failed else SegmentHeld(reply)


def _run_pickled(
    payload: Any,
    start: int,
    items: Any,
    star: bool,
    deadline: Optional[float],
    count: int,
    returns: Optional[Tuple[int, str]],
) -> Tuple[Union[bytes, Shipped], bool]:
    """The reply for a chunk whose ``items`` are a pickle or already loaded; whether the
    chunk failed."""
    try:
        fn = _function(payload)
        values = pickle.loads(items) if isinstance(items, bytes) else items
    except Exception as error:
        return dumps(_unpickling_failed(error, payload, start, count)), True
    del items
    result = run_chunk(fn, start, values, star=star, deadline=deadline)
    del values
    failed = result.failure is not None
    return _reply(result, start, returns), failed


def _reply(
    result: ChunkResult, start: int, returns: Optional[Tuple[int, str]]
) -> Union[bytes, Shipped]:
    if result.failure is not None:
        f = result.failure
        result = result._replace(failure=Failure(f.index, _portable(f.exc), f.tb))
    try:
        if returns is None:
            return dumps(result)
        return _pack_result(result, *returns)
    except Exception:
        index, exc = find_unpicklable(result.results)
        failure = Failure(start + index, result_unpicklable(start + index, exc), "")
        return dumps(result._replace(results=result.results[:index], failure=failure))


def _pack_result(result: ChunkResult, threshold: int, name: str) -> Union[bytes, Shipped]:
    def rewrap() -> Optional[ChunkResult]:
        marked = wrap_flat(result.results, threshold, star=False)
        return None if marked is None else result._replace(results=marked)

    return pack(dumps, result, threshold, rewrap, create_returned(name))


def _function(payload: Any) -> Callable[..., Any]:
    """The function a chunk names: pickled bytes, or a FunctionRef to a shared segment."""
    if not isinstance(payload, bytes):
        return _shared_function(payload)
    with _functions_lock:
        fn = _functions.get(payload)
    if fn is None:
        fn = pickle.loads(payload)  # (outside the lock: unpickling may run user code)
        with _functions_lock:
            if len(_functions) > 32:
                _functions.clear()
            _functions[payload] = fn
    return fn


def _shared_function(ref: Any) -> Callable[..., Any]:
    """The function a FunctionRef names, loaded once (outside the lock: loading it may run
    user code)."""
    name = ref.name
    with _functions_lock:
        fn = _shared_functions.get(name)
    if fn is None:
        if ref.layout:
            fn = load_function(name, ref.size, ref.layout)
        else:
            from .shared_memory import read

            fn = read(name, ref.size, pickle.loads)
        with _functions_lock:
            while len(_shared_functions) >= _KEEP_SHARED:
                del _shared_functions[next(iter(_shared_functions))]  # (the oldest)
            _shared_functions[name] = fn
    return fn


def _unpickling_failed(exc: Exception, payload: Any, start: int, count: int) -> ChunkResult:
    """The chunk's result when its function or items cannot be rebuilt in the worker."""
    # Items travel as one pickle per chunk, so the culprit is known to the chunk only.
    with _functions_lock:
        if isinstance(payload, bytes):
            loaded = payload in _functions
        else:
            loaded = payload.name in _shared_functions
    if not loaded:
        what = "the function"
    elif count == 1:
        what = f"item {start}"
    else:  # a count of 0: the caller did not say how many items the chunk holds
        what = f"an item of {start}..{start + count - 1}" if count else f"an item from {start}"
    failure = Failure(start, not_rebuilt(what, exc, start), traceback.format_exc())
    return ChunkResult([], 0.0, 0.0, failure)


def not_rebuilt(what: str, exc: BaseException, index: int) -> Exception:
    """The error for ``what`` (the function, an item), pickled but not rebuilt here."""
    from ..errors import PicklingFailedError

    return PicklingFailedError(
        f"{what} was pickled but cannot be unpickled in the process worker "
        f"({type(exc).__name__}: {exc}); make it picklable both ways, or use kind='thread'",
        index,
    )


def result_unpicklable(index: int, exc: BaseException) -> Exception:
    """The error for item ``index`` whose result cannot be pickled to go back."""
    from ..errors import PicklingFailedError

    return PicklingFailedError(
        f"the result of item {index} cannot be pickled to return from a process worker: "
        f"{type(exc).__name__}: {exc}",
        index,
    )
