"""Per-item outcomes: the error policy, retries with backoff, and per-item timeouts.

    items -> (index, item) pairs -> Guarded(fn) in the worker: retry, time out, catch
          -> a value, a _Retried(value) or a _Failed(exception) in the item's slot
          -> settle() in the caller: values, ItemFailures (or nothing, for "skip"),
             the call's CallOutcomes record and one WARNING that counts the failures

The guard runs wherever the kind runs items (the caller, a thread, a process, a dask
worker), so exceptions and their retries need nothing from the backends. A per-item
timeout needs a worker that can be given up: here an item runs on a helper thread that
is abandoned when it runs late; process plans run under :mod:`.supervised` instead,
which kills the worker. With no policy (``errors="raise"``, no retries, no item
timeout) none of this is on the path.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import traceback
from concurrent.futures import wait
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Tuple

from .._config import Config
from ..errors import ItemFailure, ItemTimeoutError, WorkerCrashedError, spans

log = logging.getLogger("autopar")

#: First retry after about this many seconds, doubling per attempt up to BACKOFF_CAP, each
#: delay drawn from half to one and a half times that ("jitter": items that failed
#: together, say on a busy server, do not all come back at the same moment).
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
#: Helper threads one guard may start: one per item running at once, plus one per item
#: abandoned after its timeout and still running.
MAX_HELPERS = 1024


class Policy(NamedTuple):
    """What a call does with an item that fails (see docs/errors.md#per-item-outcomes)."""

    errors: str  # "raise", "return" or "skip"
    retries: int
    retry_on: Tuple[type, ...]
    item_timeout: Optional[float]

    def retries_left(self, exc: BaseException, attempt: int) -> bool:
        """Whether an item whose ``attempt``-th run raised ``exc`` runs again."""
        return attempt <= self.retries and isinstance(exc, self.retry_on)


def policy_of(config: Config) -> Optional[Policy]:
    """The call's policy; None for the default (raise at once, no retries, no item timeout)."""
    if config.errors == "raise" and not config.retries and config.item_timeout is None:
        return None
    return Policy(config.errors, config.retries, config.retry_on, config.item_timeout)


def backoff(attempt: int) -> float:
    """Seconds to wait before the run after the ``attempt``-th (exponential, jittered)."""
    base: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempt - 1))
    return base * random.uniform(0.5, 1.5)


class _Failed:
    """A worker's report that item ``index`` failed for good (the caller makes it an
    ItemFailure)."""

    __slots__ = ("attempts", "exc", "index", "item", "tb")

    def __init__(self, index: int, exc: BaseException, tb: str, attempts: int, item: Any) -> None:
        self.index, self.exc, self.tb, self.attempts, self.item = index, exc, tb, attempts, item

    def __reduce__(self) -> Any:
        # It travels back from process and dask workers: the exception as one that
        # unpickles (else a RemoteError with its text), the item only if it pickles.
        from .worker import _portable, dumps

        try:
            dumps(self.item)
            item = self.item
        except Exception:
            item = None
        return _Failed, (self.index, _portable(self.exc), self.tb, self.attempts, item)


class _Retried(NamedTuple):
    """The result of an item that needed more than one attempt."""

    index: int  # type: ignore[assignment]  # (shadows tuple.index, on purpose)
    value: Any
    attempts: int


def note_attempts(exc: BaseException, attempts: int) -> BaseException:
    """Say on an exception that is raised after retries how many attempts it had."""
    if attempts > 1:
        # An exception with __slots__ refuses the attribute; the note below still says it.
        with contextlib.suppress(AttributeError):
            exc.autopar_attempts = attempts  # type: ignore[attr-defined]
        if hasattr(exc, "add_note"):
            exc.add_note(f"autopar: failed after {attempts} attempts")
    return exc


class Guarded:
    """``fn`` under a policy, called with ``(index, item)`` pairs; picklable when ``fn`` is.

    Equal guards (same function, policy, star and timeout mode) hash alike, so what
    kind="auto" learns about a function under a policy is found again by the next call.
    """

    def __init__(
        self, fn: Callable[..., Any], policy: Policy, *, star: bool, time_here: bool = True
    ) -> None:
        self.fn, self.policy, self.star = fn, policy, star
        # time_here: enforce item_timeout with helper threads (not where a supervisor does).
        self.time_here = time_here and policy.item_timeout is not None
        self._helpers: Any = None
        # _lock guards _helpers (the pool's threads run the items of one call).
        self._lock = threading.Lock()

    def _key(self) -> Tuple[Any, ...]:
        return (self.fn, self.policy, self.star, self.time_here)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Guarded) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> Any:
        return _guarded, (self.fn, self.policy, self.star, self.time_here)

    def without_timing(self) -> Guarded:
        """The same guard for a worker whose supervisor enforces the item timeout."""
        return Guarded(self.fn, self.policy, star=self.star, time_here=False)

    def __call__(self, pair: Tuple[int, Any]) -> Any:
        return self.run(pair[0], pair[1])

    def run(self, index: int, item: Any, used: int = 0) -> Any:
        """The item's result (a _Retried after retries), or a _Failed; under "raise", the
        last exception is raised. ``used``: attempts already spent elsewhere."""
        attempt = used
        while True:
            attempt += 1
            try:
                value = self._timed(index, item) if self.time_here else self._call(item)
            except Exception as exc:
                if self.policy.retries_left(exc, attempt):
                    time.sleep(backoff(attempt))
                    continue
                if self.policy.errors == "raise":
                    raise note_attempts(exc, attempt)  # noqa: B904 (the same exception)
                return _Failed(index, exc, traceback.format_exc(), attempt, item)
            return value if attempt == 1 else _Retried(index, value, attempt)

    def _call(self, item: Any) -> Any:
        return self.fn(*item) if self.star else self.fn(item)

    def _timed(self, index: int, item: Any) -> Any:
        """Run the item on a helper thread; give the thread up when it runs late."""
        from .worker import mark_worker_thread

        def call() -> Any:
            with mark_worker_thread():  # a nested autopar call in it runs serially
                return self._call(item)

        timeout = self.policy.item_timeout
        future = self._pool().submit(call)
        if not wait([future], timeout).done:
            raise ItemTimeoutError(
                f"item {index} ran past item_timeout={timeout:g}s; its thread was "
                f"abandoned (threads cannot be stopped) and the other items went on",
                index,
            )
        return future.result()

    def _pool(self) -> Any:
        with self._lock:
            if self._helpers is None:
                from .thread_pool import DaemonThreadPool

                self._helpers = DaemonThreadPool(MAX_HELPERS, "autopar-item")
            return self._helpers

    def close(self) -> None:
        """Let the helper threads exit (one still running an abandoned item exits after it)."""
        with self._lock:
            helpers, self._helpers = self._helpers, None
        if helpers is not None:
            helpers.shutdown()


def _guarded(fn: Callable[..., Any], policy: Policy, star: bool, time_here: bool) -> Guarded:
    return Guarded(fn, policy, star=star, time_here=time_here)


class CallOutcomes:
    """What one call's items came to beyond their results: ``f.last_failures`` reads it."""

    def __init__(self) -> None:
        self.failures: List[ItemFailure] = []
        self.retried = 0  # items that succeeded after more than one attempt
        self.policy: Optional[Policy] = None

    def summary(self) -> str:
        """Lines for explain(); "" when every item succeeded at the first attempt."""
        lines = []
        if self.failures:
            kinds: dict[str, int] = {}
            for f in self.failures:
                name = type(f.exception).__name__
                kinds[name] = kinds.get(name, 0) + 1
            counts = ", ".join(f"{n} {name}" for name, n in sorted(kinds.items()))
            indices = spans([f.index for f in self.failures])
            errors = self.policy.errors if self.policy else "return"
            lines.append(f"failed: {len(self.failures)} items ({counts}) at {indices} ({errors})")
        if self.retried:
            lines.append(f"retried: {self.retried} items succeeded after more than one attempt")
        return "\n".join(lines)


def settle(
    chunks: Iterator[List[Any]],
    policy: Policy,
    record: CallOutcomes,
    *,
    name: str,
    on_failure: Callable[[int, bool], None],
    close: Callable[[], None],
) -> Iterator[List[Any]]:
    """The chunks with each worker report replaced: a value for a retried item, an
    ItemFailure (or nothing, for "skip") for a failed one. ``on_failure(total, skipped)``
    hears of each failure; ``close()`` runs on any way out, then the WARNING."""
    record.policy = policy
    try:
        for chunk in chunks:
            if any(type(v) is _Failed or type(v) is _Retried for v in chunk):
                chunk = _settled(chunk, policy, record, name, on_failure)
            yield chunk
    except WorkerCrashedError as crash:
        # The results saved on it are worker reports too: the user sees values only.
        crash.partial_results = {i: _plain(v) for i, v in crash.partial_results.items()}
        raise
    finally:
        try:
            closer = getattr(chunks, "close", None)
            if closer is not None:
                closer()
        finally:
            close()
        if record.failures:
            log.warning(
                "autopar: %s: %d items failed (errors=%r): %s; see .last_failures",
                name,
                len(record.failures),
                policy.errors,
                spans([f.index for f in record.failures]),
            )


def _plain(report: Any) -> Any:
    """A worker's report on one item as the user sees it: a value or an ItemFailure."""
    if type(report) is _Retried:
        return report.value
    if type(report) is _Failed:
        return ItemFailure(report.exc, report.index, report.item, report.tb, report.attempts)
    return report


def _settled(
    chunk: List[Any],
    policy: Policy,
    record: CallOutcomes,
    name: str,
    on_failure: Callable[[int, bool], None],
) -> List[Any]:
    out: List[Any] = []
    for value in chunk:
        if type(value) is _Retried:
            record.retried += 1
            log.info(
                "autopar: %s: item %d succeeded at attempt %d", name, value.index, value.attempts
            )
            out.append(value.value)
        elif type(value) is _Failed:
            failure = ItemFailure(value.exc, value.index, value.item, value.tb, value.attempts)
            record.failures.append(failure)
            log.info("autopar: %s: item %d failed for good: %r", name, value.index, failure)
            skip = policy.errors == "skip"
            on_failure(len(record.failures), skip)
            if not skip:
                out.append(failure)
        else:
            out.append(value)
    return out
