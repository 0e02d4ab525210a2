"""The ``@parallel`` decorator: picks the wrapper that fits the function.

A plain function becomes a :class:`~autopar._wrapper.ParallelFunction`; an ``async def``
function an :class:`~autopar._async.AsyncParallelFunction` (loaded only then: it needs
asyncio). The wrappers hold the mapping methods; this module only validates the options.
"""

from __future__ import annotations

import inspect
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Coroutine,
    Dict,
    Optional,
    Protocol,
    TypeVar,
    overload,
)

from . import _config
from ._wrapper import BoundParallelFunction, ParallelFunction, RetryOn

if TYPE_CHECKING:
    from ._async import AsyncParallelFunction

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover
    from typing_extensions import ParamSpec

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["BoundParallelFunction", "ParallelFunction", "parallel"]


class _Decorator(Protocol):
    """What ``parallel(kind=...)`` returns: a decorator for a sync or an async function."""

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncParallelFunction[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> ParallelFunction[P, R]: ...


@overload
def parallel(fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncParallelFunction[P, R]: ...


@overload
def parallel(fn: Callable[P, R], /) -> ParallelFunction[P, R]: ...


@overload
def parallel(
    *,
    kind: Optional[str] = None,
    workers: Optional[int] = None,
    chunksize: Optional[int] = None,
    timeout: Optional[float] = None,
    progress: Optional[bool] = None,
    errors: Optional[str] = None,
    retries: Optional[int] = None,
    retry_on: Optional[RetryOn] = None,
    item_timeout: Optional[float] = None,
) -> _Decorator: ...


def parallel(
    fn: Optional[Callable[..., Any]] = None,
    /,
    *,
    kind: Optional[str] = None,
    workers: Optional[int] = None,
    chunksize: Optional[int] = None,
    timeout: Optional[float] = None,
    progress: Optional[bool] = None,
    errors: Optional[str] = None,
    retries: Optional[int] = None,
    retry_on: Optional[RetryOn] = None,
    item_timeout: Optional[float] = None,
) -> Any:
    """Make an element-wise function runnable over many items: ``f.map(items)``.

    ``kind`` is "auto" (measure, then pick serial, threads or processes), "serial",
    "thread", "process" or "dask"; left out, it comes from ``AUTOPAR_KIND`` (default
    "auto"). ``workers``, ``chunksize``, ``timeout`` (seconds for a whole call) and
    ``progress`` (a tqdm bar) likewise override their ``AUTOPAR_*`` variables. Bad values
    raise ValueError or TypeError here, naming the argument.

    Per item: ``errors`` says what a failing item does to the call: "raise" (the default:
    the first failure ends it), "return" (its slot holds an `ItemFailure` and the rest go
    on) or "skip" (imap only: it is left out). ``retries`` runs an item that raised one of
    ``retry_on`` (an exception class or a tuple; none by default) again, up to that many
    times, after a jittered backoff. ``item_timeout`` gives each item that many seconds
    before it is abandoned and fails with `ItemTimeoutError` (``AUTOPAR_ITEM_TIMEOUT``).
    Every map method takes the same arguments for one call. See docs/errors.md.

    An ``async def`` function runs its coroutines concurrently on an event loop, at most
    ``workers`` (default 100) at once; its kind is "auto" or "serial" (one at a time).

    How "auto" measures, decides and re-plans: docs/how-auto-decides.md. Every setting
    and its variable: docs/configuration.md. What a failing call raises: docs/errors.md.
    """
    given = {
        "kind": kind,
        "workers": workers,
        "chunksize": chunksize,
        "timeout": timeout,
        "progress": progress,
        "errors": errors,
        "retries": retries,
        "retry_on": retry_on,
        "item_timeout": item_timeout,
    }
    options = {k: _config.validate_argument(k, v) for k, v in given.items() if v is not None}

    def decorate(function: Callable[..., Any]) -> ParallelFunction[Any, Any]:
        if not callable(function):
            raise TypeError(f"@parallel needs a callable, got {type(function).__name__}")
        return _make(function, options)

    if fn is None:
        return decorate
    return decorate(fn)


def _make(fn: Callable[..., Any], options: Dict[str, Any]) -> ParallelFunction[Any, Any]:
    """The wrapper class that fits ``fn``: coroutine functions get the async one."""
    if not inspect.iscoroutinefunction(fn):
        return ParallelFunction(fn, options)
    from ._async import ASYNC_KINDS, AsyncParallelFunction

    if options.get("kind", "auto") not in ASYNC_KINDS:
        raise ValueError(
            f"argument kind={options['kind']!r} does not apply to an async function, whose "
            f"coroutines run on an event loop: use one of {', '.join(ASYNC_KINDS)}"
        )
    return AsyncParallelFunction(fn, options)
