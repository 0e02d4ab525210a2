"""autopar: make an element-wise function run over many items the fastest way, automatically.

    from autopar import parallel

    @parallel
    def work(item): ...

    results = work.map(items)

Importing autopar is light: thread and process machinery load on first use.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

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

# A library logs and lets the application decide where records go: without this, Python's
# last-resort handler would print our WARNINGs to stderr when no logging is configured.
logging.getLogger("autopar").addHandler(logging.NullHandler())

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


def __getattr__(name: str) -> Any:
    # The async wrappers need asyncio (tens of milliseconds to import): load on first use.
    if name in ("AsyncParallelFunction", "BoundAsyncParallelFunction"):
        from . import _async

        return getattr(_async, name)
    raise AttributeError(f"module 'autopar' has no attribute {name!r}")


def shutdown() -> None:
    """Stop every global pool now (they also stop at exit); later calls start new ones."""
    _pools.shutdown()
