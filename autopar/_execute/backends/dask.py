# distributed ships type hints, but most of its Client methods are unannotated.
# mypy: disallow-untyped-calls=False
"""dask.distributed: chunks run as tasks on a cluster, one task per chunk.

Data flow for one chunk::

    caller                                         dask worker (any machine)
    ------                                         -------------------------
    prepare(fn) -> payload bytes (once per call); from LARGE_FUNCTION size, a scattered
                   future of them: each dask worker fetches the function once
    submit: pickle items, client.submit(run_task)  ---->  run_task -> worker.run_chunk_pickled
            returns a _Bridge (concurrent Future)          (the process backend's own code: a
    dask callback thread copies the outcome  <--------     pickled ChunkResult, user errors as data)
    collect: unpickle ChunkResult; KilledWorker -> WorkerCrashedError

The cluster is the Client active in this process (``distributed.Client.current()``), else
one that autopar connects to ``AUTOPAR_DASK_ADDRESS`` itself and closes at shutdown; a
user's Client is never closed here. Workers need autopar installed, and must be able to
import the function's module unless it travels by value (``__main__``, lambdas, closures).
A worker that dies is retried by the scheduler (``distributed.scheduler.allowed-failures``
times), then reported as :class:`~autopar.errors.WorkerCrashedError`; under a per-item
policy the run then tries the chunk's items one by one (:mod:`autopar._execute.isolate`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import time
import uuid
import weakref
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any, Callable, List, Optional, Sequence, Tuple

try:
    import distributed
except ImportError as exc:
    raise ImportError(
        "kind='dask' needs dask.distributed, an optional extra: pip install 'autopar[dask]'",
        name="distributed",
    ) from exc

from ..._config import Config
from ...errors import AutoparError, PicklingFailedError, WorkerCrashedError
from .. import worker
from ..shared_memory import KEEP_FUNCTIONS
from ..worker import ChunkResult, dumps, find_unpicklable, run_chunk_pickled
from .base import Backend, Replacement, pickle_function, small_pickle

NO_CLUSTER = (
    "kind='dask' found no dask cluster: create a distributed.Client in this process before "
    "the call, or set AUTOPAR_DASK_ADDRESS to a running scheduler such as tcp://host:8786 "
    "(start one with `dask scheduler`, and workers with `dask worker tcp://host:8786`)"
)

# _lock guards _owned: the one Client autopar connected itself, and the address it used.
_lock = threading.Lock()
_owned: Optional[Tuple[str, distributed.Client]] = None


def find_client(config: Config) -> distributed.Client:
    """The Client a dask call runs on: the one active in this process, else autopar's own."""
    try:
        client: Optional[distributed.Client] = distributed.Client.current()
    except ValueError:  # dask's way of saying "no client"
        client = None
    if client is not None and client.status in ("closing", "closed"):
        client = None
    if client is None:
        if config.dask_address is None:
            raise AutoparError(NO_CLUSTER)
        client = _connect(config.dask_address)
    if client.asynchronous:
        raise AutoparError(
            "kind='dask' needs a synchronous distributed.Client; the current one is "
            "asynchronous (asynchronous=True)"
        )
    return client


def _connect(address: str) -> distributed.Client:
    global _owned
    with _lock:
        if _owned is not None and _owned[0] == address and _owned[1].status == "running":
            return _owned[1]
        stale, _owned = _owned, None
        if stale is not None:
            stale[1].close()
        try:
            # Not the default client: the user's code must not start using ours unasked.
            client = distributed.Client(address, set_as_default=False)
        except Exception as exc:  # dask raises OSError, TimeoutError or ValueError here
            raise AutoparError(
                f"could not connect to the dask scheduler at AUTOPAR_DASK_ADDRESS={address}: "
                f"{type(exc).__name__}: {exc}; is `dask scheduler` running there?"
            ) from exc
        _owned = (address, client)
        return client


def release(client: Optional[distributed.Client] = None) -> None:
    """Close ``client`` if autopar connected it itself (None: whichever it connected); a
    user's Client is left alone."""
    global _owned
    with _lock:
        if _owned is None or (client is not None and client is not _owned[1]):
            return
        owned, _owned = _owned[1], None
    owned.close()


def _forget_after_fork() -> None:
    # The parent's connection and its event-loop thread do not exist in the child.
    global _lock, _owned
    _lock = threading.Lock()
    _owned = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def cluster_threads(client: distributed.Client) -> int:
    """Worker threads in the cluster now: how many tasks it runs at once."""
    threads: dict[str, int] = client.nthreads()
    return max(1, sum(threads.values()))


def _noop(x: Any) -> Any:
    return x


def measure_dispatch(client: distributed.Client, tasks: int = 20) -> float:
    """Seconds the cluster adds per task, for deciding whether a call is worth sending there.

    Times a burst of ``tasks`` no-op tasks end to end (after one warm-up task) and divides:
    scheduler, network and serialisation cost per task, amortised as a map would see it.
    """
    client.submit(_noop, -1, pure=False).result()
    began = time.perf_counter()
    client.gather(client.map(_noop, range(tasks), pure=False))
    return (time.perf_counter() - began) / tasks


def run_task(
    payload: bytes, start: int, items: bytes, star: bool, seconds_left: Optional[float]
) -> bytes:
    """Worker-side entry point: the process backend's chunk runner, on this machine's clock."""
    deadline = None if seconds_left is None else time.monotonic() + seconds_left
    # Mark the thread as a worker, so a nested autopar call in the function runs serially
    # rather than trying to reach a cluster (or start processes) from inside a task.
    with worker.mark_worker_thread():
        raw = run_chunk_pickled(payload, start, items, star, deadline)
    assert isinstance(raw, bytes)  # (no ``returns``: results come back as one pickle)
    return raw


class _Bridge(Future[Any]):
    """A concurrent.futures.Future that follows one dask future, so the runner can wait()."""

    def __init__(self, task: distributed.Future[Any]) -> None:
        super().__init__()
        self.task: Optional[distributed.Future[Any]] = task
        task.add_done_callback(self._copy)

    def _copy(self, task: distributed.Future[Any]) -> None:
        # Runs in dask's callback thread once the task finished, failed or was cancelled.
        try:
            self._settle(self.set_result, task.result())
        except BaseException as exc:
            # (Without its traceback: its frames hold the dask future, and with it the task
            # on the scheduler, for as long as the error is kept, say in an ItemFailure.)
            self._settle(self.set_exception, exc.with_traceback(None))
        self.task = None  # dropping the last reference lets the cluster free the result

    @staticmethod
    def _settle(setter: Callable[[Any], None], value: Any) -> None:
        # InvalidStateError: the caller cancelled it meanwhile, and nobody is waiting.
        with contextlib.suppress(InvalidStateError):
            setter(value)

    def cancel(self) -> bool:
        # This future first: cancelling the task fires _copy, which would settle it as failed.
        if not super().cancel():
            return False
        # Dask drops the task if it has not started; a running one finishes on its worker
        # (threads cannot be stopped) and its result is discarded.
        task = self.task
        if task is not None:
            task.cancel()
        return True


class DaskBackend(Backend):
    kind = "dask"
    ships_by_pickle = True
    can_abort = False  # dask cancels queued tasks, but a running task runs to its end
    shrinks_tail = False  # each task costs the scheduler milliseconds: keep chunks whole

    @classmethod
    def default_workers(cls, config: Config, n_items: Optional[int]) -> int:
        return cluster_threads(find_client(config))

    def __init__(self, config: Config, workers: int) -> None:
        super().__init__(config, workers)
        self.client = find_client(config)
        # _live_lock guards _live: several caller threads may submit through this backend.
        self._live_lock = threading.Lock()
        self._live: weakref.WeakSet[_Bridge] = weakref.WeakSet()
        # Large pickled functions scattered to the cluster, newest first, as (the pickle's
        # pieces, dask future); guarded by _live_lock. Equal pieces reuse the future: the
        # workers that hold it already keep their unpickled copy (worker._functions).
        self._scattered: List[Tuple[Tuple[bytes, ...], Any]] = []

    def replacement(self, config: Config, workers: int) -> Optional[Replacement]:
        if self.client.status != "running":
            return Replacement("its dask Client is closed")
        if find_client(config) is not self.client:
            return Replacement("another dask Client is current now")
        return None  # any worker count: the cluster, not this object, bounds concurrency

    def prepare(self, fn: Callable[..., Any], workers: int = 1) -> Any:
        parts = pickle_function(fn, "on a dask worker")
        small = small_pickle(parts)
        if small is not None:
            return small
        with self._live_lock:
            for data, future in self._scattered:
                if data == parts:
                    return future
        future = self.client.scatter(b"".join(parts), hash=False)
        with self._live_lock:
            self._scattered.insert(0, (parts, future))
            del self._scattered[KEEP_FUNCTIONS:]  # (a call still using one holds its future)
        return future

    def submit(
        self,
        payload: Any,
        start: int,
        items: Sequence[Any],
        *,
        star: bool,
        deadline: Optional[float],
    ) -> Future[Any]:
        data = _pickle_items(items, start)
        # A monotonic deadline means nothing on another machine: send the seconds left.
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        key = f"autopar-chunk-{uuid.uuid4().hex}"  # the dashboard groups tasks by this prefix
        task = self.client.submit(run_task, payload, start, data, star, left, key=key)
        bridge = _Bridge(task)
        with self._live_lock:
            self._live.add(bridge)
        return bridge

    def collect(self, future: Future[Any], start: int, count: int) -> ChunkResult:
        items = range(start, start + count)
        where = f"items {start}..{start + count - 1}"
        try:
            raw = future.result()
        except distributed.KilledWorker as exc:
            raise WorkerCrashedError(
                f"dask gave up on {where}: workers running them died (killed, crashed or out "
                f"of memory) more often than distributed.scheduler.allowed-failures allows",
                items,
            ) from exc
        except CancelledError as exc:
            raise WorkerCrashedError(
                f"dask cancelled {where}: the Client was closed or lost its scheduler, or the "
                f"cluster was restarted",
                items,
            ) from exc
        return pickle.loads(raw)  # type: ignore[no-any-return]

    def rerunnable(self) -> bool:
        return self.client.status == "running"  # (a closed Client cancelled the task)

    def abort(self) -> None:
        """Cancel every task this pool has in flight (queued ones never start)."""
        with self._live_lock:
            live = list(self._live)
        for bridge in live:
            bridge.cancel()
        self.shutdown()

    def shutdown(self) -> None:
        with self._live_lock:
            self._scattered.clear()  # (the cluster frees what no future refers to)
        release(self.client)

    @classmethod
    def close_shared(cls) -> None:
        # kind="auto" with an address connects to measure the cluster (see
        # autopar._auto.pool_costs.cluster_costs), and may never make a pool on it: left open,
        # that Client keeps retrying its scheduler long after the cluster has gone.
        release()


def _pickle_items(items: Sequence[Any], start: int) -> bytes:
    try:
        return dumps(list(items))
    except Exception:
        index, exc = find_unpicklable(items)
        raise PicklingFailedError(
            f"item {start + index} cannot be pickled to reach a dask worker "
            f"({type(exc).__name__}: {exc}); make the item picklable",
            start + index,
        ) from exc
