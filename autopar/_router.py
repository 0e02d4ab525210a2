"""From a call to its plan and its result chunks: the one place that sees both layers.

    wrapper (map, imap, ...) -> route(call, state)
        nested inside a worker -> serial plan  -> _execute.executor.execute
        a kind named           -> its plan     -> _execute.executor.execute
        kind="auto"            -> _auto.pilot.run, for a first call: done if it is short,
                                  else the rest goes to
                                  _auto.planner.start (measures, decides, executes)

Deciding (:mod:`autopar._auto`) imports running (:mod:`autopar._execute`), never the
other way; this module imports both (the planner on first use: it is the heavier half).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple

from ._config import Config
from ._execute import registry
from ._execute.executor import Call, execute
from ._execute.worker import in_worker
from .plan import Plan

if TYPE_CHECKING:
    from ._auto.memory import LearnedCosts, SerialFastPath
    from ._execute.outcomes import CallOutcomes

log = logging.getLogger("autopar")


class FunctionState:
    """What one decorated function remembers between calls (its last plan, learned costs)."""

    def __init__(self) -> None:
        # Plain attribute writes are atomic; readers see one whole Plan or another.
        self.last_plan: Optional[Plan] = None
        # kind="auto" only; written under autopar._auto.memory's lock.
        self.learned: Optional[LearnedCosts] = None
        # (environment config, it merged with the decorator's options): one tuple, so a
        # reader sees a matching pair.
        self.configured: Tuple[Any, Any] = (None, None)
        # kind="auto" only: set once the function is known to be serial at any size;
        # map and starmap try it before anything else.
        self.fast_path: Optional[SerialFastPath] = None
        # kind="auto" only: the per-item cost of the last call the pilot ran whole, while
        # nothing is learned (see autopar._auto.pilot).
        self.short_item: Optional[float] = None
        # The per-item outcomes of the last call that set a policy (None for other calls).
        self.last_outcomes: Optional[CallOutcomes] = None


def plan_named(kind: str, config: Config, n_items: Optional[int], reason: str) -> Plan:
    """The plan for a kind the user named (or that nesting forced)."""
    cls = registry.backend_class(kind)
    workers = config.workers or cls.default_workers(config, n_items)
    if n_items is not None:
        workers = max(1, min(workers, n_items))
    chunksize = config.chunksize or cls.default_chunksize(n_items, workers)
    return Plan(kind, workers, chunksize, reason, n_items)


def route(call: Call, state: FunctionState) -> Iterator[List[Any]]:
    """Plan the call, record the plan on its function, and return the lazy result chunks."""
    config, n_items = call.config, call.n_items
    if in_worker():
        plan = plan_named(
            "serial",
            config,
            n_items,
            "nested call inside an autopar worker: run serially "
            "so workers are not multiplied and the pool cannot deadlock on itself",
        )
    elif config.kind == "auto":
        from ._auto import pilot

        if pilot.applies(call, state):
            return pilot.run(call, state)  # (it hands what is left of the call to start)
        from ._auto.planner import start

        return start(call, state)
    else:
        plan = plan_named(config.kind, config, n_items, f"kind={config.kind!r} was requested")
    state.last_plan = plan
    log.debug("autopar: %s -> %s", call.name, plan)
    return execute(plan, call)
