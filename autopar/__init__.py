"""autopar: make an element-wise function run over many items the fastest way, automatically.

    from autopar import parallel

    @parallel
    def work(item): ...

    results = work.map(items)

Importing autopar is light: each public name below loads its module on first use.

Layout. Modules whose names start with an underscore are private; decorator.py, plan.py,
errors.py and _execute/per_worker.py define the public names. Deciding imports running,
never the other way, and there are no import cycles (tests/test_layout.py keeps both so):

    decorator.py      parallel(): validates options, picks the sync or async wrapper
    _wrapper.py       MapMethods (shared by sync and async wrappers), ParallelFunction
    _async.py         AsyncParallelFunction: coroutines on an event loop
    _router.py        route(): nested -> serial, named kind -> its plan, auto -> _auto
    _auto/            DECIDING: which kind finishes this call first
        planner.py        measure or recall, decide, run
        probe.py          runs items on helper threads (and the caller), timing each
        calibration.py    drives the probe; turns its samples into Measurements
        spread.py         the order that measures items from the whole input first
        cost_model.py     pure: Measurements + Overheads + n -> Plan
        replan.py         watches a plan's chunks; re-plans the rest of a call
        pool_costs.py     what each pool costs on this machine (measured once)
        memory.py         learned costs per function; the serial fast path
        queued_time.py    a thread's time queued for a core, and whether it blocked
        stolen_time.py    the share of CPU time a VM's host took while it was busy
    _execute/         RUNNING: a Plan over the items, on a pool
        executor.py       Call; execute(plan, call) -> result chunks
        pool_run.py       PoolRun: chunks in flight on one backend, cleanup on any exit
        chunking.py       Chunker: fixed, adaptive and tail-shrinking chunk sizes
        registry.py       one pool per kind for the program: reuse, replace, shutdown
        worker.py         what runs in a worker: one chunk through the function
        shared_memory.py  private segments: large functions reach workers once
        shared_buffers.py large items and results through segments, not the pipe
        segment_pool.py   the caller's segments, reused across chunks
        item_mappings.py  a worker's mappings of those segments, kept across chunks
        per_worker.py     per_worker(): values built once per worker (public)
        outcomes.py       per-item policy: Guarded (retries, item timeouts), settle()
        supervised.py     process plans under a policy: watched workers, one item lost
        isolate.py        a chunk whose worker died under a policy, run again item by item
        thread_pool.py    daemon threads that can be abandoned; thread start times
        blas_limits.py    BLAS/OpenMP pools capped while threads share them (threadpoolctl)
        main_guard.py     whether workers can start without re-running __main__; its imports
        backends/         one module per kind behind the Backend protocol (base.py)
    _config.py        AUTOPAR_* variables and arguments, validated once; cpu_count()
    _cpus.py          the CPU budget: affinity capped by a cgroup quota, and its source
    plan.py, errors.py    public value types and exceptions
    _progress.py, _info.py, _demo.py, __main__.py    bars, `python -m autopar` commands

``autopar.backends`` is not public: a kind is chosen by name (``kind="thread"``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AsyncParallelFunction",
    "AutoparError",
    "AutoparTimeoutError",
    "BoundAsyncParallelFunction",
    "BoundParallelFunction",
    "ItemFailure",
    "ItemTimeoutError",
    "ParallelFunction",
    "PerWorker",
    "PicklingFailedError",
    "Plan",
    "RemoteError",
    "RemoteTraceback",
    "WorkerCrashedError",
    "__version__",
    "parallel",
    "per_worker",
    "shutdown",
]


if TYPE_CHECKING:
    from ._async import AsyncParallelFunction, BoundAsyncParallelFunction
    from ._execute.per_worker import PerWorker, per_worker
    from ._wrapper import BoundParallelFunction, ParallelFunction
    from .decorator import parallel
    from .errors import (
        AutoparError,
        AutoparTimeoutError,
        ItemFailure,
        ItemTimeoutError,
        PicklingFailedError,
        RemoteError,
        RemoteTraceback,
        WorkerCrashedError,
    )
    from .plan import Plan

# Public name -> the module that defines it, imported on first use. A process worker
# imports autopar._execute.worker, and so this package, before its first task: with
# nothing loaded here, it skips wrapt, logging and the planner, and starts sooner. The
# async wrappers need asyncio, which is slow to import.
_LAZY = {
    "parallel": "decorator",
    "ParallelFunction": "_wrapper",
    "BoundParallelFunction": "_wrapper",
    "AsyncParallelFunction": "_async",
    "BoundAsyncParallelFunction": "_async",
    "Plan": "plan",
    "per_worker": "_execute.per_worker",
    "PerWorker": "_execute.per_worker",
    **dict.fromkeys(
        (
            "AutoparError",
            "AutoparTimeoutError",
            "ItemFailure",
            "ItemTimeoutError",
            "PicklingFailedError",
            "RemoteError",
            "RemoteTraceback",
            "WorkerCrashedError",
        ),
        "errors",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autopar' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def shutdown() -> None:
    """Stop every global pool now, and close a dask Client autopar connected itself (both
    also happen at exit); later calls start new ones."""
    from ._execute import registry

    registry.shutdown()
