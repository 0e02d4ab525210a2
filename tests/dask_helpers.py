"""Functions the dask tests send to workers: module level, so worker processes import them."""

from __future__ import annotations

import os
from pathlib import Path

from autopar import parallel


def die_once(marker: str) -> str:
    """Kill the worker process the first time (leaving ``marker``), succeed on the retry."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        os._exit(1)
    return "survived"


def die_always(_: object) -> None:
    os._exit(1)


@parallel(kind="dask")
def inner_square(x: int) -> int:
    return x * x


def outer_sum(n: int) -> tuple[int, str]:
    """Map a dask-decorated function from inside a dask task; report how that ran."""
    total = sum(inner_square.map(range(n)))
    plan = inner_square.last_plan
    return total, plan.kind if plan else "none"
