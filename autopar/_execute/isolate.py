"""A chunk whose worker died under a per-item policy: its items run again one by one.

    PoolRun: the chunk's task died (WorkerCrashedError), the call has a policy, and the
    pool still serves (Backend.rerunnable(): a dask cluster restarts its workers)
      -> each (index, item) pair of the chunk runs again alone, one task at a time
         it comes back  -> its slot (a value, or the guard's _Retried or _Failed)
         it dies again  -> that item kills workers (WorkerCrashedError naming it):
                           retried as retry_on says, else a _Failed in its slot
                           ("return", "skip"), or the call's error ("raise")
      -> the chunk's results in its own order, as if it had run whole

One task at a time, so that a death is blamed on the item that was running: the tasks
a dead worker holds are all charged with its death, whichever killed it. A chunk runs
its items one after another on one worker anyway, so running them alone costs one
hand-off per item, not their parallelism. Process plans under a policy never get here:
:mod:`.supervised` watches each item of theirs.
"""

from __future__ import annotations

import time
from concurrent.futures import wait
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Tuple

from ..errors import WorkerCrashedError, annotate
from .outcomes import Policy, _Failed, _Retried, backoff

if TYPE_CHECKING:
    from .pool_run import PoolRun


def run_alone(run: PoolRun, policy: Policy, pairs: Sequence[Tuple[int, Any]]) -> List[Any]:
    """The results of a chunk of ``pairs`` whose worker died, each pair run again alone."""
    done: Dict[int, Any] = {}  # index -> outcome, in the chunk's order
    for index, item in pairs:
        done[index] = _settled(run, policy, index, item, done)
    return list(done.values())


def _settled(run: PoolRun, policy: Policy, index: int, item: Any, done: Dict[int, Any]) -> Any:
    """One item's outcome, its runs alone retried as the policy says."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return _once(run, index, item)
        except WorkerCrashedError as crash:
            error = _blamed(run, index, crash)
        if not policy.retries_left(error, attempt):
            break
        time.sleep(backoff(attempt))
    if policy.errors == "raise":
        finished = {**done, **run.saved()}
        error.partial_results = {i: _value(v) for i, v in finished.items()}
        raise annotate(error, index, f"{run.backend.kind} worker")
    return _Failed(index, error, "", attempt, item)


def _once(run: PoolRun, index: int, item: Any) -> Any:
    """Run one pair as a task of its own; what the guard made of it."""
    backend = run.backend
    future = backend.submit(
        run.payload, index, [(index, item)], star=run.star, deadline=run.deadline
    )
    run.alone = future  # (the run's cleanup cancels it on any way out)
    if not wait([future], run.remaining()).done:
        raise run.timed_out()
    run.alone = None
    result = backend.collect(future, index, 1)
    if result.failure is not None:  # errors="raise": the guard raised after its retries
        raise run.failed(result.failure)
    return result.results[0]


def _blamed(run: PoolRun, index: int, crash: WorkerCrashedError) -> WorkerCrashedError:
    why = f" ({crash.reason})" if crash.reason else ""
    error = WorkerCrashedError(
        f"item {index} killed the {run.backend.kind} worker running it{why}, also when it ran "
        f"alone; the other items of its chunk ran again one by one and went on",
        [index],
        crash.reason,
    )
    error.__cause__ = crash.__cause__
    return error


def _value(outcome: Any) -> Any:
    return outcome.value if type(outcome) is _Retried else outcome
