"""The ``@parallel`` decorator: a wrapt proxy that adds map/imap/starmap to a function.

The proxy holds no policy: each method settles its config and hands over to
:mod:`autopar._dispatch`. A plain call goes straight to the function, in the caller's
thread. Pickling the proxy sends a reference (module + qualified name) where the worker
can import it, and the function by value otherwise (``__main__``, closures, lambdas).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Coroutine,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Optional,
    Protocol,
    Tuple,
    TypeVar,
    overload,
)

import wrapt

from . import _config, _dispatch, _progress, _runner
from .plan import Plan

if TYPE_CHECKING:
    from ._async import AsyncParallelFunction

if sys.version_info >= (3, 10):
    from typing import Concatenate, ParamSpec
else:  # pragma: no cover
    from typing_extensions import Concatenate, ParamSpec

P = ParamSpec("P")
R = TypeVar("R")
# For typing methods: the instance type, and the parameters left once it is bound.
_T = TypeVar("_T")
_P2 = ParamSpec("_P2")
_R2 = TypeVar("_R2")

_OPTIONS = ("kind", "workers", "chunksize", "timeout", "progress")


def _plain_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _rebuild(fn: Callable[..., Any], options: Dict[str, Any]) -> ParallelFunction[Any, Any]:
    return _make(fn, options)


class _ByReference:
    """Pickles as "import module, get qualname": the worker finds the decorated function."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module, self.qualname = module, qualname

    def __reduce__(self) -> Any:
        return _lookup, (self.module, self.qualname)


class _Methods(Generic[P, R]):
    """map and friends, shared by the function wrapper and its bound-method form."""

    if TYPE_CHECKING:
        _self_state: _dispatch.FunctionState
        __wrapped__: Callable[..., Any]

    def _parallel_state(self) -> Tuple[_dispatch.FunctionState, Dict[str, Any]]:
        raise NotImplementedError

    def _settle(self, call: Dict[str, Any]) -> Tuple[_dispatch.FunctionState, _config.Config, bool]:
        """The state, the merged config, and whether an argument (not just the environment)
        asked for a progress bar."""
        state, options = self._parallel_state()
        config = _config.current()
        if options:
            # The decorator's options over the environment's config, made once per config
            # (current() hands back the same object until an AUTOPAR_* variable changes).
            base, merged = state.configured
            if base is not config:
                merged = config.merged(**options)
                state.configured = (config, merged)
            config = merged
        if any(value is not None for value in call.values()):
            config = config.merged(**call)
        asked = call.get("progress")
        asked = options.get("progress") if asked is None else asked
        return state, config, asked is True

    def _bar(self, config: _config.Config, explicit: bool, n_items: Optional[int]) -> Any:
        name = getattr(self, "__name__", "autopar")
        return _progress.open_bar(config.progress, explicit, n_items, name)

    def _parallel_run(
        self, items: Iterable[Any], ordered: bool, star: bool, materialize: bool, **call: Any
    ) -> Iterator[List[Any]]:
        state, config, explicit = self._settle(call)
        n_items: Optional[int]
        items = _runner.checked_items(items, materialize)
        try:
            n_items = len(items)  # type: ignore[arg-type]
        except TypeError:
            n_items = None
        fn: Callable[..., Any] = self.__wrapped__
        bar = self._bar(config, explicit, n_items)  # before any work: no tqdm, no run
        try:
            run = _dispatch.Call(
                state, fn, self._shippable(), config, items, n_items, ordered, star, materialize
            )
            results = _dispatch.start(run)
        except BaseException:
            bar.close()
            raise
        return _progress.counted(results, bar)

    def _shippable(self) -> Callable[..., Any]:
        return self  # type: ignore[return-value]

    def map(
        self,
        items: Iterable[Any],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> List[R]:
        """``[f(x) for x in items]``, in input order, run the way this function's kind says."""
        lane = self._self_state.express  # (see autopar._auto.Express)
        if lane is not None and timeout is None and chunksize is None and progress is None:
            done = lane.run(self.__wrapped__, items, False)
            if done is not None:
                return done  # type: ignore[no-any-return]
        chunks = self._parallel_run(items, True, False, True, **_call(timeout, chunksize, progress))
        return _runner.gather(chunks)

    def starmap(
        self,
        items: Iterable[Iterable[Any]],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> List[R]:
        """``[f(*args) for args in items]``, like ``itertools.starmap``, as a list."""
        lane = self._self_state.express  # (see autopar._auto.Express)
        if lane is not None and timeout is None and chunksize is None and progress is None:
            done = lane.run(self.__wrapped__, items, True)
            if done is not None:
                return done  # type: ignore[no-any-return]
        chunks = self._parallel_run(items, True, True, True, **_call(timeout, chunksize, progress))
        return _runner.gather(chunks)

    def imap(
        self,
        items: Iterable[Any],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> Iterator[R]:
        """Lazy results in input order; the input is read only a few chunks ahead."""
        chunks = self._parallel_run(
            items, True, False, False, **_call(timeout, chunksize, progress)
        )
        return _dispatch.flatten(chunks)

    def imap_unordered(
        self,
        items: Iterable[Any],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> Iterator[R]:
        """Lazy results in the order they finish (chunk by chunk)."""
        chunks = self._parallel_run(
            items, False, False, False, **_call(timeout, chunksize, progress)
        )
        return _dispatch.flatten(chunks)

    @property
    def last_plan(self) -> Optional[Plan]:
        """The plan of the most recent map/imap/starmap call (None before the first)."""
        return self._parallel_state()[0].last_plan

    def explain(self) -> str:
        """A readable account of :attr:`last_plan`: what ran, why, and the numbers behind it."""
        plan = self.last_plan
        if plan is None:
            return "no call yet: explain() describes the last map/imap/starmap call"
        return plan.explain()


def _call(
    timeout: Optional[float], chunksize: Optional[int], progress: Optional[bool]
) -> Dict[str, Any]:
    return {"timeout": timeout, "chunksize": chunksize, "progress": progress}


class BoundParallelFunction(_Methods[P, R], wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
    """The form a decorated method takes when read from an instance (``obj.method.map``)."""

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def _parallel_state(self) -> Tuple[_dispatch.FunctionState, Dict[str, Any]]:
        parent = self._self_parent
        return parent._self_state, parent._self_options

    @property
    def _self_state(self) -> _dispatch.FunctionState:  # type: ignore[override]
        # (The methods' state is the decorated function's, shared by all instances.)
        return self._self_parent._self_state  # type: ignore[no-any-return]

    def _shippable(self) -> Callable[..., Any]:
        # A bound method pickles as getattr(instance, name), which finds this wrapper again.
        return self.__wrapped__

    def __reduce_ex__(self, protocol: Any) -> Any:
        instance = self._self_instance
        if instance is not None:
            return getattr, (instance, self.__wrapped__.__name__)
        return _identity, (self.__wrapped__,)

    def _autopar_reduce(self) -> Any:
        return self.__reduce_ex__(2)


def _identity(obj: Any) -> Any:
    return obj


class ParallelFunction(_Methods[P, R], wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A function decorated with :func:`parallel`. Call it as before, or map it."""

    __bound_function_wrapper__ = BoundParallelFunction

    def __init__(self, fn: Callable[P, R], options: Dict[str, Any]) -> None:
        super().__init__(fn, _plain_call)
        self._self_options = options
        self._self_state = _dispatch.FunctionState()
        self._self_shippable: Any = None  # see _shippable()

    if TYPE_CHECKING:
        # Typing only: wrapt binds methods at run time; these tell mypy what comes out.

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

        @overload
        def __get__(
            self, instance: None, owner: Optional[type] = None, /
        ) -> BoundParallelFunction[P, R]: ...

        @overload
        def __get__(
            self: ParallelFunction[Concatenate[_T, _P2], _R2],
            instance: _T,
            owner: Optional[type] = None,
            /,
        ) -> BoundParallelFunction[_P2, _R2]: ...

        def __get__(self, instance: Any, owner: Optional[type] = None, /) -> Any: ...

    def _parallel_state(self) -> Tuple[_dispatch.FunctionState, Dict[str, Any]]:
        return self._self_state, self._self_options

    def _reference(self) -> Optional[_ByReference]:
        """A by-name reference if importing the module finds this very wrapper, else None."""
        fn = self.__wrapped__
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
        # __main__ is another module in a spawned worker; "<locals>"/"<lambda>" can't be found.
        if not module or module == "__main__" or "<" in qualname:
            return None
        try:
            return _ByReference(module, qualname) if _lookup(module, qualname) is self else None
        except (ImportError, AttributeError):
            return None

    def _shippable(self) -> Callable[..., Any]:
        # cloudpickle takes this proxy for a plain function and would try to pickle it by
        # value, so ship either a reference or the unwrapped function (by value). Looked
        # up once: finding the module costs more than a cheap call's whole run.
        shippable = self._self_shippable
        if shippable is None:
            shippable = self._self_shippable = self._reference() or self.__wrapped__
        return shippable  # type: ignore[no-any-return]

    def __reduce_ex__(self, protocol: Any) -> Any:
        ref = self._reference()
        return ref.__reduce__() if ref else (_rebuild, (self.__wrapped__, self._self_options))

    def _autopar_reduce(self) -> Any:
        return self.__reduce_ex__(2)

    def __copy__(self) -> ParallelFunction[P, R]:
        return _make(self.__wrapped__, dict(self._self_options))

    def __deepcopy__(self, memo: Any) -> ParallelFunction[P, R]:
        return self.__copy__()


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
) -> Any:
    """Make an element-wise function runnable over many items: ``f.map(items)``.

    ``kind`` is "auto" (measure, then pick serial, threads or processes), "serial",
    "thread", "process" or "dask"; left out, it comes from ``AUTOPAR_KIND`` (default
    "auto"). ``workers``, ``chunksize``, ``timeout`` (seconds for a whole call) and
    ``progress`` (a tqdm bar) likewise override their ``AUTOPAR_*`` variables. Bad values
    raise ValueError or TypeError here, naming the argument.

    An ``async def`` function runs its coroutines concurrently on an event loop, at most
    ``workers`` (default 100) at once; its kind is "auto" or "serial" (one at a time).
    """
    given = {
        "kind": kind,
        "workers": workers,
        "chunksize": chunksize,
        "timeout": timeout,
        "progress": progress,
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
