"""The wrapper a decorated function becomes: a wrapt proxy that adds map/imap/starmap.

:class:`MapMethods` is the base that sync and async wrappers share (the async ones, in
:mod:`autopar._async`, override the mapping methods). The proxy holds no policy: each
method settles its config and hands the call to :func:`autopar._router.route`. A plain
call goes straight to the function, in the caller's thread. Pickling the proxy sends a
reference (module + qualified name) where the worker can import it, and the function by
value otherwise (``__main__``, closures, lambdas).
"""

from __future__ import annotations

import importlib
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
    overload,
)

import wrapt

from . import _config, _progress
from ._execute.executor import Call, checked_items, flatten, gather
from ._execute.outcomes import CallOutcomes, Guarded, Policy, policy_of, settle
from ._router import FunctionState, route
from .plan import Plan

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
#: What ``retry_on=`` takes: an exception class or a tuple of them, as ``except`` does.
RetryOn = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


def _plain_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _ByReference:
    """Pickles as "import module, get qualname": the worker finds the decorated function."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module, self.qualname = module, qualname

    def __reduce__(self) -> Any:
        return _lookup, (self.module, self.qualname)


class MapMethods(Generic[P, R]):
    """map and friends, shared by the function wrapper and its bound-method form."""

    if TYPE_CHECKING:
        _self_state: FunctionState
        __wrapped__: Callable[..., Any]

    def _parallel_state(self) -> Tuple[FunctionState, Dict[str, Any]]:
        raise NotImplementedError

    def _settle(self, call: Dict[str, Any]) -> Tuple[FunctionState, _config.Config, bool]:
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

    def _bar(self, config: _config.Config, n_items: Optional[int], *, explicit: bool) -> Any:
        name = getattr(self, "__name__", "autopar")
        return _progress.open_bar(n_items, name, on=config.progress, explicit=explicit)

    def _parallel_run(
        self,
        items: Iterable[Any],
        *,
        ordered: bool,
        star: bool,
        materialize: bool,
        **call: Any,
    ) -> Iterator[List[Any]]:
        state, config, explicit = self._settle(call)
        n_items: Optional[int]
        items = checked_items(items, materialize=materialize)
        try:
            n_items = len(items)  # type: ignore[arg-type]
        except TypeError:
            n_items = None
        fn: Callable[..., Any] = self.__wrapped__
        policy = policy_of(config)
        state.last_outcomes = None
        if policy is not None and policy.errors == "skip" and materialize:
            raise ValueError(SKIP_IN_MAP)
        bar = self._bar(config, n_items, explicit=explicit)  # before any work: no tqdm, no run
        try:
            record = Call(
                fn=fn,
                to_ship=self._to_ship(),
                config=config,
                items=items,
                n_items=n_items,
                ordered=ordered,
                star=star,
                eager=materialize,
            )
            if policy is None:
                results = route(record, state)
            else:
                results = self._guarded_run(record, state, policy, bar)
        except BaseException:
            bar.close()
            raise
        return _progress.counted(results, bar)

    def _guarded_run(
        self, record: Call, state: FunctionState, policy: Policy, bar: Any
    ) -> Iterator[List[Any]]:
        """The call under a per-item policy: items travel as (index, item) pairs to a
        Guarded function, and what comes back is settled into values and ItemFailures."""
        name = record.name
        guard = Guarded(record.fn, policy, star=record.star)
        pairs = enumerate(record.items)
        record = record._replace(
            fn=guard,
            to_ship=Guarded(record.to_ship, policy, star=record.star),
            items=list(pairs) if record.eager else pairs,
            star=False,
            policy=policy,
        )
        outcomes = state.last_outcomes = CallOutcomes()
        try:
            results = route(record, state)
        except BaseException:
            guard.close()
            raise
        return settle(
            results,
            policy,
            outcomes,
            name=name,
            on_failure=lambda failed, skipped: _progress.note_failure(bar, failed, skipped),
            close=guard.close,
        )

    def _to_ship(self) -> Callable[..., Any]:
        return self  # type: ignore[return-value]

    def _all(self, items: Iterable[Any], options: Dict[str, Any], *, star: bool) -> List[Any]:
        """Every result, in input order (map, starmap): the fast path where it serves."""
        fast = self._self_state.fast_path  # (see autopar._auto.memory.SerialFastPath)
        if (
            fast is not None
            and not any(v is not None for v in options.values())
            and not any(k in POLICY_OPTIONS for k in self._parallel_state()[1])
        ):
            done = fast.run(self.__wrapped__, items, star=star)
            if done is not None:
                return done
        chunks = self._parallel_run(items, ordered=True, star=star, materialize=True, **options)
        return gather(chunks)

    def _stream(
        self, items: Iterable[Any], options: Dict[str, Any], *, ordered: bool
    ) -> Iterator[Any]:
        """Results one by one as they come (imap, imap_unordered)."""
        chunks = self._parallel_run(
            items, ordered=ordered, star=False, materialize=False, **options
        )
        return flatten(chunks)

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
        """``[f(x) for x in items]``, in input order, run the way this function's kind says."""
        return self._all(
            items,
            call_options(timeout, chunksize, progress, errors, retries, retry_on, item_timeout),
            star=False,
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
        """``[f(*args) for args in items]``, like ``itertools.starmap``, as a list."""
        return self._all(
            items,
            call_options(timeout, chunksize, progress, errors, retries, retry_on, item_timeout),
            star=True,
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
        """Lazy results in input order; the input is read only a few chunks ahead."""
        return self._stream(
            items,
            call_options(timeout, chunksize, progress, errors, retries, retry_on, item_timeout),
            ordered=True,
        )

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
        """Lazy results in the order they finish (chunk by chunk)."""
        return self._stream(
            items,
            call_options(timeout, chunksize, progress, errors, retries, retry_on, item_timeout),
            ordered=False,
        )

    @property
    def last_plan(self) -> Optional[Plan]:
        """The plan of the most recent map/imap/starmap call (None before the first)."""
        return self._parallel_state()[0].last_plan

    @property
    def last_failures(self) -> List[Any]:
        """The `ItemFailure` of every item that failed for good in the most recent call
        that set a per-item policy (``errors="return"`` or ``"skip"``, ``retries``,
        ``item_timeout``), in the order they were seen; empty after any other call."""
        outcomes = self._parallel_state()[0].last_outcomes
        return [] if outcomes is None else list(outcomes.failures)

    def explain(self) -> str:
        """A readable account of `last_plan`: what ran, why, and the numbers behind it,
        then which items failed or needed retries, if any did."""
        state = self._parallel_state()[0]
        plan = state.last_plan
        if plan is None:
            return "no call yet: explain() describes the last map/imap/starmap call"
        outcomes = state.last_outcomes
        summary = "" if outcomes is None else outcomes.summary()
        return plan.explain() + ("\n" + summary if summary else "")


def call_options(
    timeout: Optional[float],
    chunksize: Optional[int],
    progress: Optional[bool],
    errors: Optional[str] = None,
    retries: Optional[int] = None,
    retry_on: Optional[RetryOn] = None,
    item_timeout: Optional[float] = None,
) -> Dict[str, Any]:
    options: Dict[str, Any] = {"timeout": timeout, "chunksize": chunksize, "progress": progress}
    # The per-item policy only where given: the common call builds a smaller dict.
    if errors is not None or retries is not None or retry_on is not None:
        options.update(errors=errors, retries=retries, retry_on=retry_on)
    if item_timeout is not None:
        options["item_timeout"] = item_timeout
    return options


#: The options that set a per-item policy (docs/errors.md#per-item-outcomes).
POLICY_OPTIONS = ("errors", "retries", "retry_on", "item_timeout")

SKIP_IN_MAP = (
    "errors='skip' drops failed items, which would put map's results out of line with its "
    "input; use errors='return' (a failed item's slot holds an ItemFailure) or imap"
)


class BoundParallelFunction(MapMethods[P, R], wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
    """The form a decorated method takes when read from an instance (``obj.method.map``)."""

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def _parallel_state(self) -> Tuple[FunctionState, Dict[str, Any]]:
        parent = self._self_parent
        return parent._self_state, parent._self_options

    @property
    def _self_state(self) -> FunctionState:  # type: ignore[override]
        # (The methods' state is the decorated function's, shared by all instances.)
        return self._self_parent._self_state  # type: ignore[no-any-return]

    def _to_ship(self) -> Callable[..., Any]:
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


class ParallelFunction(MapMethods[P, R], wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A function decorated with `parallel`. Call it as before, or map it."""

    __bound_function_wrapper__ = BoundParallelFunction

    def __init__(self, fn: Callable[P, R], options: Dict[str, Any]) -> None:
        super().__init__(fn, _plain_call)
        self._self_options = options
        self._self_state = FunctionState()
        self._self_to_ship: Any = None  # see _to_ship()

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

    def _parallel_state(self) -> Tuple[FunctionState, Dict[str, Any]]:
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

    def _to_ship(self) -> Callable[..., Any]:
        # cloudpickle takes this proxy for a plain function and would try to pickle it by
        # value, so ship either a reference or the unwrapped function (by value). Looked
        # up once: finding the module costs more than a cheap call's whole run.
        to_ship = self._self_to_ship
        if to_ship is None:
            to_ship = self._self_to_ship = self._reference() or self.__wrapped__
        return to_ship  # type: ignore[no-any-return]

    def __reduce_ex__(self, protocol: Any) -> Any:
        ref = self._reference()
        # Unfindable by name: rebuilt from the function by value (type(self): an async
        # wrapper comes back async).
        return ref.__reduce__() if ref else (type(self), (self.__wrapped__, self._self_options))

    def _autopar_reduce(self) -> Any:
        return self.__reduce_ex__(2)

    def __copy__(self) -> ParallelFunction[P, R]:
        return type(self)(self.__wrapped__, dict(self._self_options))

    def __deepcopy__(self, memo: Any) -> ParallelFunction[P, R]:
        return self.__copy__()
