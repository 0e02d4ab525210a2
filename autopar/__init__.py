"""autopar: make an element-wise function run over many items the fastest way, automatically.

    from autopar import parallel

    @parallel
    def work(item): ...

    results = work.map(items)

Importing autopar is light: thread and process machinery load on first use.
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
    "ParallelFunction",
    "PicklingFailedError",
    "Plan",
    "RemoteError",
    "RemoteTraceback",
    "WorkerCrashedError",
    "__version__",
    "parallel",
    "shutdown",
]


if TYPE_CHECKING:
    from ._async import AsyncParallelFunction, BoundAsyncParallelFunction
    from .decorator import BoundParallelFunction, ParallelFunction, parallel
    from .errors import (
        AutoparError,
        AutoparTimeoutError,
        PicklingFailedError,
        RemoteError,
        RemoteTraceback,
        WorkerCrashedError,
    )
    from .plan import Plan

# Public name -> the module that defines it, imported on first use. A process worker
# imports autopar._worker, and so this package, before its first task: with nothing loaded
# here, it skips wrapt, logging and the rest (a cold pool started in 0.14 s, not 0.2 s).
# The async wrappers need asyncio, tens of milliseconds more.
_LAZY = {
    "parallel": "decorator",
    "ParallelFunction": "decorator",
    "BoundParallelFunction": "decorator",
    "AsyncParallelFunction": "_async",
    "BoundAsyncParallelFunction": "_async",
    "Plan": "plan",
    **dict.fromkeys(
        (
            "AutoparError",
            "AutoparTimeoutError",
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


def shutdown() -> None:
    """Stop every global pool now, and close a dask Client autopar connected itself (both
    also happen at exit); later calls start new ones."""
    from . import _pools

    _pools.shutdown()
