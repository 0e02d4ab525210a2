"""A first call whose whole work is small runs before anything is planned.

Planning a first call costs milliseconds: loading the planner, a probe beside the
caller, pricing what a pool would ship (about 5 ms on the 2-core VM). No pool can gain
back more than a call's whole work, so a call whose work is under SMALL_CALL runs here,
in the caller, and nothing else is loaded.

Items run in the order the planner's probe would read them (:mod:`.spread`: items spread
over the input first), in batches that double from one item and are timed as a whole.
Once the work done reaches SMALL_CALL, the rest of that order goes to the planner, which
measures and plans it as any first call: the spread items ran here, so a cost that
varies along the input has been met before any long batch runs in order. A batch runs
to its end before the clock is read again, so a jump in cost inside the input's order
costs at most one batch (MOST_BATCH items) run serially.

Nothing is learned from a call that stays small: the next one is timed the same way.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING, Any, Iterator, List

from .._execute.worker import run_chunk
from ..errors import annotate
from ..plan import Plan
from .spread import SpreadOrder, probe_spots

if TYPE_CHECKING:
    from .._execute.executor import Call
    from .._router import FunctionState

SMALL_CALL = 0.002  # seconds of work under which planning costs more than any pool saves
MOST_BATCH = 1024  # items between two reads of the clock, at most


def eligible(call: Call, state: FunctionState) -> bool:
    """A first call whose items may be few or cheap enough: a map or starmap over a
    list, tuple or range, with nothing asked of a pool (no timeout, worker count, chunk
    size, progress bar or per-item policy)."""
    config = call.config
    return (
        SMALL_CALL > 0
        and state.learned is None
        and call.eager
        and call.ordered
        and call.policy is None
        and call.n_items is not None
        and call.n_items > 2
        and isinstance(call.items, (list, tuple, range))
        and config.timeout is None
        and config.workers is None
        and config.chunksize is None
        and not config.progress
    )


def run(call: Call, state: FunctionState) -> Iterator[List[Any]]:
    """The call's results, as one chunk: run here if its work stays under SMALL_CALL,
    else the rest planned (autopar._auto.planner) once that much has run."""
    n, items = call.n_items or 0, call.items
    assert isinstance(items, (list, tuple, range))  # (eligible)
    order = SpreadOrder(n, probe_spots(call.config.max_threads))
    view = order.view(items)
    done: List[Any] = []
    spent, size = 0.0, 1
    while len(done) < n and spent < SMALL_CALL:
        result = run_chunk(call.fn, len(done), itertools.islice(view, size), star=call.star)
        if result.failure is not None:
            exc = annotate(result.failure.exc, result.failure.index, "serial worker")
            order.fix_error(exc, done + result.results)
            raise exc
        done.extend(result.results)
        spent += result.wall
        size = min(2 * size, MOST_BATCH)
    if len(done) == n:
        state.last_plan = Plan(
            "serial",
            1,
            n,
            f"the whole call took {spent * 1e3:.2f} ms of work, under the "
            f"{SMALL_CALL * 1e3:.0f} ms that planning would cost: no pool could gain it back",
            n,
        )
        return iter([order.restore(done)])
    return _planned_rest(call, state, order, view, done)


def _planned_rest(
    call: Call, state: FunctionState, order: SpreadOrder, view: Iterator[Any], done: List[Any]
) -> Iterator[List[Any]]:
    from .planner import start

    offset, n = len(done), call.n_items or 0
    chunks = None
    try:
        chunks = start(call._replace(items=view, n_items=n - offset), state)
        done.extend(itertools.chain.from_iterable(chunks))
    except BaseException as exc:
        order.fix_error(exc, done, offset=offset)
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    plan = state.last_plan
    if plan is not None:
        note = f"the first {offset} items ran before planning ({SMALL_CALL * 1e3:.0f} ms of work)"
        state.last_plan = dataclasses.replace(plan, n_items=n, reason=f"{plan.reason}; {note}")
    yield order.restore(done)
