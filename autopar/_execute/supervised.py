"""Process plans under a per-item policy: worker processes the caller watches one by one.

    caller                                      worker process (plan.workers of them)
    ------                                      -------------------------------------
    start: Process(serve, pipe, guard) ------>  unpickle the Guarded function; "ready"
    send a chunk of (index, attempts, item) ->  per item: guard.run() -> one report back
    wait(pipes + process sentinels, the next item deadline)
       a report  -> the item's slot; the worker's next item starts its clock now
       a death   -> the item it was running killed it (WorkerCrashedError)
       late      -> kill the worker: its item ran past item_timeout (ItemTimeoutError)
       after a death or a kill: a fresh worker takes its place, the items it had not
       started go back in the queue, and the culprit is retried, reported or raised

Why not the shared ProcessPoolExecutor: one dead worker breaks that whole pool and fails
every chunk in flight, and which item killed it is unknown. Here a worker reports each
item as it finishes, so a death or a kill costs one worker and one item, and the item
is known. The workers live for one call: the call pays one pool start.
"""

from __future__ import annotations

import collections
import os
import pickle
import signal
import time
import traceback
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, Deque, Dict, Iterator, List, NamedTuple, Optional, Tuple

from ..errors import (
    AutoparError,
    AutoparTimeoutError,
    ItemTimeoutError,
    PicklingFailedError,
    RemoteTraceback,
    WorkerCrashedError,
    annotate,
)
from ..plan import Plan
from . import forkserver
from .backends.base import pickle_function
from .main_guard import processes_start_cleanly, unguarded_error
from .outcomes import Guarded, _Failed, backoff
from .worker import _portable, dumps, init_process, not_rebuilt, result_unpicklable

if TYPE_CHECKING:
    from .executor import Call

#: Items per chunk sent to a worker when the call did not name a size: a chunk only
#: batches the sends (each item is reported on its own, and the items a dead worker had
#: not started go back in the queue), so it stays small enough to balance the workers.
MOST_PER_CHUNK = 64


class _Entry(NamedTuple):
    seq: int  # position in the call's input order (how ordered results are handed out)
    index: int  # type: ignore[assignment]  # the item's index (shadows tuple.index)
    item: Any
    used: int  # attempts already spent on it
    not_before: float = 0.0  # a retry waits for its backoff


def serve(conn: Any, payload: bytes, caller: int) -> None:
    """A worker process: run the items of each chunk it is sent, one report per item."""
    init_process(caller)
    try:
        guard: Guarded = pickle.loads(payload)
    except Exception as exc:
        conn.send_bytes(dumps(("broken", f"{type(exc).__name__}: {exc}")))
        return
    conn.send_bytes(dumps(("ready", "")))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not data:
            return
        for index, used, raw in pickle.loads(data):
            conn.send_bytes(_report(guard, index, used, raw))


def _report(guard: Guarded, index: int, used: int, raw: bytes) -> bytes:
    """(index, ok, value or exception, traceback), pickled."""
    try:
        item = pickle.loads(raw)
    except Exception as exc:
        error = not_rebuilt(f"item {index}", exc, index)
        return _as_failure(guard, index, error, used + 1, None)
    try:
        value = guard.run(index, item, used)
    except Exception as exc:  # errors="raise": the guard raised after its retries
        return dumps((index, False, _portable(exc), traceback.format_exc()))
    try:
        return dumps((index, True, value, ""))
    except Exception as exc:
        return _as_failure(guard, index, result_unpicklable(index, exc), used + 1, item)


def _as_failure(guard: Guarded, index: int, exc: Exception, attempts: int, item: Any) -> bytes:
    if guard.policy.errors == "raise":
        return dumps((index, False, exc, ""))
    return dumps((index, True, _Failed(index, exc, "", attempts, item), ""))


class _Worker:
    """One worker process, its pipe, and the items sent to it (the first is running)."""

    def __init__(self, context: Any, payload: bytes) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=serve, args=(child, payload, os.getpid()), daemon=True
        )
        self.process.start()
        child.close()
        self.ready = False
        self.queue: Deque[_Entry] = collections.deque()
        self.started = 0.0  # when queue[0] began, by this process's clock

    def stop(self, *, kill: bool) -> None:
        if kill or self.queue:
            self.process.kill()
        else:
            try:
                self.conn.send_bytes(b"")
            except OSError:
                self.process.kill()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _death(process: Any) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Supervisor:
    def __init__(self, plan: Plan, call: Call) -> None:
        config = call.config
        if not processes_start_cleanly(config.start_method):
            raise AutoparError(unguarded_error(config.start_method))
        assert call.policy is not None and isinstance(call.to_ship, Guarded)
        self.policy = call.policy
        self.payload = b"".join(pickle_function(call.to_ship.without_timing(), "in a process"))
        self.context = forkserver.context(config.start_method)
        self.size = plan.workers
        per_worker = None if plan.n_items is None else -(-plan.n_items // (4 * plan.workers))
        self.chunk = config.chunksize or max(1, min(MOST_PER_CHUNK, per_worker or 16))
        self.ordered = call.ordered
        self.source = iter(call.items)
        self.read = 0
        self.exhausted = False
        self.waiting: Deque[_Entry] = collections.deque()  # sent back, or retrying
        self.workers: List[_Worker] = []
        self.done: Dict[int, Tuple[int, Any]] = {}  # seq -> (index, result) not handed out
        self.next_seq = 0
        self.finished = 0
        self.timeout = config.timeout
        self.deadline = None if config.timeout is None else time.monotonic() + config.timeout

    def run(self) -> Iterator[List[Any]]:
        try:
            self.workers = [_Worker(self.context, self.payload) for _ in range(self.size)]
            while self._assign():
                self._wait()
                out = self._take()
                if out:
                    yield out
            out = self._take()
            if out:
                yield out
        finally:
            for worker in self.workers:
                worker.stop(kill=True)

    def _next(self) -> Optional[_Entry]:
        """The next item to send: a returned or retrying one whose time has come, else
        one read from the input."""
        if self.waiting and self.waiting[0].not_before <= time.monotonic():
            return self.waiting.popleft()
        if self.exhausted:
            return None
        try:
            index, item = next(self.source)
        except StopIteration:
            self.exhausted = True
            return None
        self.read += 1
        return _Entry(self.read - 1, index, item, 0)

    def _assign(self) -> bool:
        """Give each ready, idle worker a chunk; False once nothing is left anywhere."""
        for worker in self.workers:
            if worker.ready and not worker.queue:
                entries: List[_Entry] = []
                while len(entries) < self.chunk and (entry := self._next()) is not None:
                    entries.append(entry)
                if entries:
                    self._send(worker, entries)
        busy = any(w.queue for w in self.workers)
        return busy or bool(self.waiting) or not self.exhausted

    def _send(self, worker: _Worker, entries: List[_Entry]) -> None:
        packed = []
        for entry in entries:
            try:
                packed.append((entry.index, entry.used, dumps(entry.item)))
            except Exception as exc:
                error = PicklingFailedError(
                    f"item {entry.index} cannot be pickled to reach a process worker "
                    f"({type(exc).__name__}: {exc}); use kind='thread' or make it picklable",
                    entry.index,
                )
                self._fail(entry, error, "", entry.used + 1)
                continue
            worker.queue.append(entry)
        if packed:
            worker.conn.send_bytes(dumps(packed))
            worker.started = time.monotonic()

    def _wait(self) -> None:
        handles: List[Any] = [w.conn for w in self.workers]
        handles += [w.process.sentinel for w in self.workers]
        for ready in wait(handles, self._wake()):
            for worker in self.workers:
                if ready is worker.conn:
                    self._read(worker)
        for worker in list(self.workers):
            if not worker.process.is_alive():
                self._read(worker)  # reports it sent before it died come first
                self._replace(worker, None)
            elif worker.queue and self._late(worker):
                self._replace(worker, "late")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise AutoparTimeoutError(
                f"the call did not finish within timeout={self.timeout:g}s ({self.finished} "
                f"items done); its worker processes were killed. Raise timeout= if the work "
                f"is just slow"
            )

    def _wake(self) -> Optional[float]:
        """Seconds until something is due: an item's timeout, a retry, the call's end."""
        due = [self.deadline] if self.deadline is not None else []
        limit = self.policy.item_timeout
        if limit is not None:
            due += [w.started + limit for w in self.workers if w.queue]
        if self.waiting:
            due.append(self.waiting[0].not_before)
        return None if not due else max(0.0, min(due) - time.monotonic()) + 1e-3

    def _late(self, worker: _Worker) -> bool:
        limit = self.policy.item_timeout
        return limit is not None and time.monotonic() - worker.started > limit

    def _read(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                message = pickle.loads(worker.conn.recv_bytes())
                self._handle(worker, message)
        except (EOFError, OSError):
            pass  # it died: the caller sees its sentinel

    def _handle(self, worker: _Worker, message: Tuple[Any, ...]) -> None:
        if message[0] == "ready":
            worker.ready = True
            return
        if message[0] == "broken":
            raise PicklingFailedError(
                f"the function was pickled but cannot be unpickled in the process worker "
                f"({message[1]}); make it importable there, or use kind='thread'"
            )
        index, ok, value, tb = message
        entry = worker.queue.popleft()
        worker.started = time.monotonic()
        if not ok:  # errors="raise"
            if tb:
                value.__cause__ = RemoteTraceback(tb)
            raise annotate(value, index, "process worker")
        self._store(entry, value)

    def _store(self, entry: _Entry, value: Any) -> None:
        self.done[entry.seq] = (entry.index, value)
        self.finished += 1

    def _replace(self, worker: _Worker, why: Optional[str]) -> None:
        """A worker died, or ran late (``why``): stop it, start another, and settle the
        item it was running; the ones it had not started go back in the queue."""
        dead = why is None
        worker.stop(kill=True)
        self.workers.remove(worker)
        culprit = worker.queue.popleft() if worker.queue else None
        self.waiting.extendleft(reversed(worker.queue))
        worker.queue.clear()
        if not worker.ready and dead:
            raise WorkerCrashedError(
                f"a worker process died while starting ({_death(worker.process)})",
                reason=_death(worker.process),
            )
        self.workers.append(_Worker(self.context, self.payload))
        if culprit is None:
            return
        if dead:
            reason = _death(worker.process)
            error: BaseException = WorkerCrashedError(
                f"the worker process running item {culprit.index} died ({reason}); the "
                f"other items went on in other workers",
                [culprit.index],
                reason,
            )
        else:
            error = ItemTimeoutError(
                f"item {culprit.index} ran past item_timeout={self.policy.item_timeout:g}s; "
                f"its worker process was killed and replaced, and the other items went on",
                culprit.index,
            )
        attempts = culprit.used + 1
        if self.policy.retries_left(error, attempts):
            retry = culprit._replace(used=attempts, not_before=time.monotonic() + backoff(attempts))
            self.waiting.append(retry)
            return
        self._fail(culprit, error, "", attempts)

    def _fail(self, entry: _Entry, error: BaseException, tb: str, attempts: int) -> None:
        if self.policy.errors == "raise":
            if isinstance(error, WorkerCrashedError):
                error.partial_results = dict(self.done.values())
            raise annotate(error, entry.index, "process worker")
        self._store(entry, _Failed(entry.index, error, tb, attempts, entry.item))

    def _take(self) -> List[Any]:
        """The results that can be handed out now: in input order, or as they came."""
        if not self.ordered:
            out = [value for _, value in self.done.values()]
            self.done.clear()
            return out
        out = []
        while self.next_seq in self.done:
            out.append(self.done.pop(self.next_seq)[1])
            self.next_seq += 1
        return out


def run_supervised(plan: Plan, call: Call) -> Iterator[List[Any]]:
    """Run ``call`` (items as (index, item) pairs, ``call.to_ship`` a Guarded) on
    ``plan.workers`` supervised processes; chunks of results, settled by the caller.
    (The pairs carry their own indices, so where the input starts does not matter.)"""
    return _Supervisor(plan, call).run()
