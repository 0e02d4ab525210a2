"""Every exception autopar raises of its own lives here.

An exception raised by the user's function is re-raised with its own type, not wrapped:
autopar adds the failing item's index as ``exc.autopar_index`` (and as a note on
Python 3.11+), and for process and dask workers the worker-side traceback as
``exc.__cause__`` (a `RemoteTraceback`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
from typing import Any, Dict, List, Optional, Sequence, Tuple


class AutoparError(Exception):
    """Base class of the errors autopar raises itself."""


class WorkerCrashedError(AutoparError):
    """A worker process died (os._exit, a signal, a segfault, out of memory) while running items.

    The pool it belonged to is discarded; the next call starts a fresh one. ``items`` holds
    the indices whose results were lost, in flight when the crash was seen (a ``range``
    when they are contiguous, else a tuple); ``partial_results`` maps index -> result for
    every item that had finished (for ``map``, all of them; for ``imap``, those not yet
    handed to the caller's loop).
    """

    def __init__(self, message: str, items: Sequence[int] = (), reason: str = "") -> None:
        super().__init__(message)
        self.items = _compact(items)
        self.reason = reason  # why the worker died, in a few words, where the backend knows
        self.partial_results: Dict[int, Any] = {}

    @classmethod
    def lost(cls, items: Sequence[int], cause: WorkerCrashedError) -> WorkerCrashedError:
        """The error for a whole call: which items were lost, and why (from ``cause``)."""
        what = f"a worker process died ({cause.reason})" if cause.reason else str(cause)
        return cls(
            f"{what}; items {spans(items)} were in flight and their results are lost, and "
            f"the results that had finished are in .partial_results. The next call starts a "
            f"fresh pool. To find an item that crashes the interpreter, run it alone with "
            f"kind='serial'; if memory ran out, use fewer workers",
            items,
            cause.reason,
        )


def _compact(indices: Sequence[int]) -> Sequence[int]:
    """A range where the indices are contiguous and ascending (the usual case), else a tuple."""
    if isinstance(indices, range):
        return indices
    values = tuple(indices)
    if values and values == tuple(range(values[0], values[-1] + 1)):
        return range(values[0], values[-1] + 1)
    return values


def spans(indices: Sequence[int], most: int = 8) -> str:
    """``[4, 5, 6, 9]`` -> ``"4..6, 9"``; only the first ``most`` runs, then "...".

    >>> spans([4, 5, 6, 9])
    '4..6, 9'
    """
    runs: List[str] = []
    for _, group in itertools.groupby(enumerate(sorted(indices)), lambda p: p[1] - p[0]):
        values = [v for _, v in group]
        runs.append(str(values[0]) if len(values) == 1 else f"{values[0]}..{values[-1]}")
    text = ", ".join(runs[:most])
    return text + (", ..." if len(runs) > most else "") if runs else "(none)"


class PicklingFailedError(AutoparError, TypeError):
    """An item, a result or the function could not be pickled to reach a worker process."""

    def __init__(self, message: str, index: Optional[int] = None) -> None:
        super().__init__(message)
        self.index = index


class RemoteError(AutoparError):
    """Stands in for a worker-side exception that could not be pickled back to the caller."""

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(f"{type_name}: {text}")
        self.type_name = type_name
        self.text = text

    def __reduce__(self) -> Any:
        # It travels from worker to caller itself; the default would call __init__(message).
        return type(self), (self.type_name, self.text), self.__dict__


# Since Python 3.11 concurrent.futures.TimeoutError *is* TimeoutError; before, it is not.
_TIMEOUT_BASES: Tuple[type, ...] = (
    (TimeoutError,)
    if concurrent.futures.TimeoutError is TimeoutError
    else (TimeoutError, concurrent.futures.TimeoutError)
)


class AutoparTimeoutError(AutoparError, *_TIMEOUT_BASES):  # type: ignore[misc]
    """A call ran past its ``timeout``; pending items were cancelled and stuck workers replaced.

    It is both the builtin ``TimeoutError`` and ``concurrent.futures.TimeoutError``, so either
    ``except`` clause catches it on every supported Python.
    """


class RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised in another process."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def annotate(exc: BaseException, index: int, where: str) -> BaseException:
    """Record on a user exception which item raised it, without changing its type."""
    # An exception with __slots__ refuses the attribute; the note below still says it.
    with contextlib.suppress(AttributeError):
        exc.autopar_index = index  # type: ignore[attr-defined]
    note = f"autopar: raised by item {index} ({where})"
    if hasattr(exc, "add_note") and note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    return exc


class ItemTimeoutError(AutoparTimeoutError):
    """One item ran past ``item_timeout``: its worker was abandoned (a thread) or killed
    (a process), and the other items went on. Name it in ``retry_on`` to retry such items.

    ``index`` is the item's index in the call's input.
    """

    def __init__(self, message: str, index: Optional[int] = None) -> None:
        super().__init__(message)
        self.index = index

    def __reduce__(self) -> Any:
        return type(self), (str(self), self.index), self.__dict__


class ItemFailure:
    """What stands in a failed item's slot under ``errors="return"``, and what
    ``f.last_failures`` lists under every policy that goes on past a failure.

    A value, not an exception: a function may return exceptions as results, and
    ``isinstance(r, ItemFailure)`` never mistakes one for a failure. ``exception`` keeps its
    original type (a `WorkerCrashedError` when the item's worker died, an
    `ItemTimeoutError` when it ran past ``item_timeout``); ``index`` is the item's index in
    the input; ``item`` the item itself (None where it could not be sent back from a
    worker); ``traceback`` the worker-side traceback, formatted; ``attempts`` how many
    times it ran. `raise_` re-raises the exception with the traceback attached.
    """

    __slots__ = ("attempts", "exception", "index", "item", "traceback")

    def __init__(
        self, exception: BaseException, index: int, item: Any, traceback: str, attempts: int
    ) -> None:
        self.exception = exception
        self.index = index
        self.item = item
        self.traceback = traceback
        self.attempts = attempts

    def __repr__(self) -> str:
        what = f"{type(self.exception).__name__}: {self.exception}"
        tries = "1 attempt" if self.attempts == 1 else f"{self.attempts} attempts"
        return f"ItemFailure(index={self.index}, {what!r}, {tries})"

    def __reduce__(self) -> Any:
        return type(self), (self.exception, self.index, self.item, self.traceback, self.attempts)

    def raise_(self) -> None:
        """Raise the item's exception, with the worker's traceback as its ``__cause__``."""
        exc = self.exception
        if self.traceback and exc.__cause__ is None:
            exc.__cause__ = RemoteTraceback(self.traceback)
        raise annotate(exc, self.index, "re-raised from an ItemFailure")
