"""Functions that process workers run in tests/test_shared_buffers.py (importable by them)."""

from __future__ import annotations

import os
import time
from typing import Any


def same(value: Any) -> Any:
    return value


def pair(a: Any, b: Any) -> tuple[Any, Any]:
    return a, b


def scramble(array: Any) -> float:
    """Write over the worker's copy of ``array``; return what the copy held before."""
    total = float(array.sum())
    array[...] = 0
    return total


def negated_view(array: Any) -> Any:
    """A new array from ``array``, non-contiguous: every other row, transposed."""
    return (-array)[::2].T if array.ndim > 1 else (-array)[::2]


def describe(value: Any) -> tuple[str, bytes]:
    """The type that arrived and its bytes (a memoryview's, in its own format)."""
    return type(value).__name__, bytes(value)


def overwrite(value: Any) -> int:
    """Write into a bytearray or writable memoryview, as a worker may to its own copy."""
    if type(value) is bytes:
        return len(value)
    value[0:1] = b"!"
    return len(value)


def fail_on_second(array: Any) -> float:
    if int(array.flat[0]) == 1:
        raise ValueError("the second array")
    return float(array.sum())


def die_on_second(array: Any) -> float:
    if int(array.flat[0]) == 1:
        os._exit(3)
    return float(array.sum())


def slow(array: Any) -> Any:
    time.sleep(0.5 if int(array.flat[0]) == 0 else 30)
    return array


_kept: list[Any] = []


def keep(array: Any) -> float:
    """Keep ``array`` past the chunk (a cache a function might hold); return its sum."""
    import numpy as np

    _kept.append(array)
    return float(np.asarray(array).sum())


def checksum(array: Any) -> tuple[float, float]:
    """The first element and the sum: which array arrived, and all of its bytes."""
    return float(array.flat[0]), float(array.sum())
