"""``async def`` functions: their coroutines run concurrently on one event loop.

    items -> N worker tasks, each taking the next item from one shared iterator -> results
             (N = workers, default DEFAULT_CONCURRENCY: that is the concurrency bound)

``await f.amap(items)`` runs on the caller's loop. ``f.map(items)`` from sync code starts
a loop of its own in the calling thread; when that thread already runs a loop (which
cannot be re-entered) it runs one on a short-lived helper thread and blocks until done.
The first failure cancels the rest and is re-raised with its own type and item index.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import traceback
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Coroutine,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    overload,
)

from . import _progress
from ._execute.outcomes import (
    CallOutcomes,
    Policy,
    _Failed,
    _Retried,
    backoff,
    note_attempts,
    policy_of,
    settle,
)
from ._wrapper import (
    _P2,
    _R2,
    _T,
    SKIP_IN_MAP,
    BoundParallelFunction,
    MapMethods,
    P,
    ParallelFunction,
    R,
    RetryOn,
    call_options,
)
from .errors import AutoparTimeoutError, ItemTimeoutError, annotate
from .plan import Plan

if TYPE_CHECKING:
    from typing_extensions import Concatenate

log = logging.getLogger("autopar")

#: Coroutines in flight at once when ``workers`` is not given: enough for network-bound
#: work, few enough not to exhaust sockets or file descriptors.
DEFAULT_CONCURRENCY = 100

#: The kinds an async function accepts: "serial" runs one coroutine at a time (debugging).
ASYNC_KINDS = ("auto", "serial")

_MISSING: Any = object()


async def run_bounded(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *,
    limit: int,
    star: bool,
    timeout: Optional[float],
    on_result: Callable[[int], Any],
) -> List[Any]:
    """Await ``fn(item)`` for every item, at most ``limit`` at once; results in input order."""
    results: List[Any] = [_MISSING] * len(items)
    source = iter(enumerate(items))

    async def worker() -> None:
        # One loop thread: taking the next item needs no lock.
        for index, item in source:
            try:
                results[index] = await (fn(*item) if star else fn(item))
            except Exception as exc:
                annotate(exc, index, "async task")
                raise
            on_result(1)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(items)))]
    if not tasks:
        return results
    try:
        done, pending = await asyncio.wait(
            tasks, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION
        )
    finally:
        # On failure, timeout, or the caller being cancelled: stop what still runs.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    _raise_first_failure(done)
    if pending:
        finished = sum(r is not _MISSING for r in results)
        raise AutoparTimeoutError(
            f"the call did not finish within timeout={timeout:g}s ({finished} items done); "
            "pending items were cancelled"
        )
    return results


def _raise_first_failure(done: Iterable[asyncio.Future[Any]]) -> None:
    failures: List[BaseException] = []
    for task in done:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            failures.append(exc)
    if failures:
        # Several may fail before the rest are cancelled: report the earliest item's.
        raise min(failures, key=lambda e: getattr(e, "autopar_index", 0))


def _guarded(
    fn: Callable[..., Any], policy: Policy, *, star: bool
) -> Callable[[Tuple[int, Any]], Coroutine[Any, Any, Any]]:
    """``fn`` under a policy, awaited with ``(index, item)`` pairs: the async twin of
    autopar._execute.outcomes.Guarded (a coroutine past item_timeout is cancelled)."""

    async def once(index: int, item: Any) -> Any:
        coroutine = fn(*item) if star else fn(item)
        if policy.item_timeout is None:
            return await coroutine
        try:
            return await asyncio.wait_for(coroutine, policy.item_timeout)
        except asyncio.TimeoutError:
            raise ItemTimeoutError(
                f"item {index} ran past item_timeout={policy.item_timeout:g}s; its "
                f"coroutine was cancelled and the other items went on",
                index,
            ) from None

    async def run(pair: Tuple[int, Any]) -> Any:
        index, item = pair
        attempt = 0
        while True:
            attempt += 1
            try:
                value = await once(index, item)
            except Exception as exc:
                if policy.retries_left(exc, attempt):
                    await asyncio.sleep(backoff(attempt))
                    continue
                if policy.errors == "raise":
                    raise note_attempts(exc, attempt)  # noqa: B904 (the same exception)
                return _Failed(index, exc, traceback.format_exc(), attempt, item)
            return value if attempt == 1 else _Retried(index, value, attempt)

    return run


def run_sync(make: Callable[[], Coroutine[Any, Any, List[Any]]]) -> List[Any]:
    """Run the coroutine ``make()`` to the end from sync code and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    # This thread's loop is busy running the caller: a loop of our own needs another thread.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="autopar-async") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


class _AsyncMethods(MapMethods[P, R]):
    """map and friends for a coroutine function, plus ``amap``/``astarmap`` to await."""

    def _job(
        self, items: Iterable[Any], call: Dict[str, Any], *, star: bool, stream: bool = False
    ) -> Callable[[], Coroutine[Any, Any, List[Any]]]:
        state, config, explicit = self._settle(call)
        policy = policy_of(config)
        state.last_outcomes = None
        if policy is not None and policy.errors == "skip" and not stream:
            raise ValueError(SKIP_IN_MAP)
        items = items if isinstance(items, (list, tuple, range)) else list(items)
        limit = 1 if config.kind == "serial" else config.workers or DEFAULT_CONCURRENCY
        limit = max(1, min(limit, len(items)))
        why = "async function: its coroutines run concurrently on one event loop"
        plan = Plan("async", limit, 1, f"{why}, at most {limit} at once", len(items))
        state.last_plan = plan
        name = getattr(self, "__qualname__", str(self))
        log.debug("autopar: %s -> %s", name, plan)
        bar = self._bar(config, len(items), explicit=explicit)
        fn: Callable[..., Any] = self.__wrapped__
        if policy is not None:
            fn, items, star = _guarded(fn, policy, star=star), list(enumerate(items)), False
        outcomes = state.last_outcomes = None if policy is None else CallOutcomes()

        async def job() -> List[Any]:
            try:
                results = await run_bounded(
                    fn, items, limit=limit, star=star, timeout=config.timeout, on_result=bar.update
                )
                if policy is None or outcomes is None:
                    return results
                settled = settle(
                    iter([results]),
                    policy,
                    outcomes,
                    name=name,
                    on_failure=lambda failed, _: _progress.note_failure(bar, failed, False),
                    close=lambda: None,
                )
                return [value for chunk in settled for value in chunk]
            finally:
                bar.close()

        return job

    def map(
        self,
        items: Iterable[Any],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        progress: Optional[bool] = None,
        errors: Optional[str] = None,
        retries: Optional[int] = None,
        retry_on: Optional[RetryOn] = None,
        item_timeout: Optional[float] = None,
    ) -> List[R]:
        """``[await f(x) for x in items]``, run concurrently; blocks until all are done.

        Call it from sync code; inside a coroutine, ``await f.amap(items)`` instead (this
        would block the running loop). ``chunksize`` is accepted and ignored.
        """
        return run_sync(
            self._job(
                items,
                call_options(timeout, chunksize, progress, errors, retries, retry_on, item_timeout),
                star=False,
            )
        )

    def starmap(
        self,
        items: Iterable[Iterable[Any]],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        progress: Optional[bool] = None,
        errors: Optional[str] = None,
        retries: Optional[int] = None,
        retry_on: Optional[RetryOn] = None,
        item_timeout: Optional[float] = None,
    ) -> List[R]:
        """``[await f(*args) for args in items]``, run concurrently; blocks until done."""
        return run_sync(
            self._job(
                items,
                call_options(timeout, chunksize, progress, errors, retries, retry_on, item_timeout),
                star=True,
            )
        )

    def imap(
        self,
        items: Iterable[Any],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        progress: Optional[bool] = None,
        errors: Optional[str] = None,
        retries: Optional[int] = None,
        retry_on: Optional[RetryOn] = None,
        item_timeout: Optional[float] = None,
    ) -> Iterator[R]:
        """Results in input order. For coroutines this is not lazy: all run, then yield."""
        options = call_options(
            timeout, chunksize, progress, errors, retries, retry_on, item_timeout
        )
        return iter(run_sync(self._job(items, options, star=False, stream=True)))

    def imap_unordered(
        self,
        items: Iterable[Any],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        progress: Optional[bool] = None,
        errors: Optional[str] = None,
        retries: Optional[int] = None,
        retry_on: Optional[RetryOn] = None,
        item_timeout: Optional[float] = None,
    ) -> Iterator[R]:
        """As `imap` (input order): for coroutines, all run first."""
        return self.imap(
            items,
            timeout=timeout,
            chunksize=chunksize,
            progress=progress,
            errors=errors,
            retries=retries,
            retry_on=retry_on,
            item_timeout=item_timeout,
        )

    async def amap(
        self,
        items: Iterable[Any],
        *,
        timeout: Optional[float] = None,
        progress: Optional[bool] = None,
        errors: Optional[str] = None,
        retries: Optional[int] = None,
        retry_on: Optional[RetryOn] = None,
        item_timeout: Optional[float] = None,
    ) -> List[R]:
        """``[await f(x) for x in items]``, run concurrently on the running event loop."""
        return await self._job(
            items,
            call_options(timeout, None, progress, errors, retries, retry_on, item_timeout),
            star=False,
        )()

    async def astarmap(
        self,
        items: Iterable[Iterable[Any]],
        *,
        timeout: Optional[float] = None,
        progress: Optional[bool] = None,
        errors: Optional[str] = None,
        retries: Optional[int] = None,
        retry_on: Optional[RetryOn] = None,
        item_timeout: Optional[float] = None,
    ) -> List[R]:
        """``[await f(*args) for args in items]``, run concurrently on the running loop."""
        return await self._job(
            items,
            call_options(timeout, None, progress, errors, retries, retry_on, item_timeout),
            star=True,
        )()


class BoundAsyncParallelFunction(_AsyncMethods[P, R], BoundParallelFunction[P, Any]):
    """A decorated ``async def`` method read from an instance (``obj.method.map``)."""

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...


class AsyncParallelFunction(_AsyncMethods[P, R], ParallelFunction[P, Any]):
    """An ``async def`` function decorated with `parallel`.

    Calling it returns the coroutine, as before; ``map`` runs many concurrently from sync
    code, ``await amap`` from async code. ``last_plan.kind`` is ``"async"``.
    """

    __bound_function_wrapper__ = BoundAsyncParallelFunction

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

        @overload
        def __get__(
            self, instance: None, owner: Optional[type] = None, /
        ) -> BoundAsyncParallelFunction[P, R]: ...

        @overload
        def __get__(
            self: AsyncParallelFunction[Concatenate[_T, _P2], _R2],
            instance: _T,
            owner: Optional[type] = None,
            /,
        ) -> BoundAsyncParallelFunction[_P2, _R2]: ...

        def __get__(self, instance: Any, owner: Optional[type] = None, /) -> Any: ...
