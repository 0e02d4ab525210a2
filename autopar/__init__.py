"""autopar: make an element-wise function run over many items the fastest way, automatically.

    from autopar import parallel

    @parallel
    def work(item): ...

    results = work.map(items)

Importing autopar is light: thread and process machinery load on first use.
"""

from __future__ import annotations

from . import _pools
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

__version__ = "0.1.0"

__all__ = [
    "AutoparError",
    "AutoparTimeoutError",
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


def shutdown() -> None:
    """Stop every global pool now (they also stop at exit); later calls start new ones."""
    _pools.shutdown()
