"""Configuration: every ``AUTOPAR_*`` variable is read and validated here, and nowhere else.

Precedence, highest first: an argument to the call (``f.map(..., timeout=)``), an
argument to the decorator (``@parallel(workers=4)``), the environment, the default.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from typing import Any, Callable, Mapping, Optional, Tuple

from . import _cpus

KINDS = ("auto", "serial", "thread", "process", "dask")
#: What a call does with an item that failed (see docs/errors.md#per-item-outcomes).
ERROR_POLICIES = ("raise", "return", "skip")
START_METHODS = ("fork", "forkserver", "spawn")


def cpu_count() -> int:
    """CPUs this process may keep busy: its affinity, capped by a cgroup CPU quota (every
    worker count and the cost model go through here; see autopar._cpus)."""
    return _cpus.budget().cpus


def default_start_method() -> str:
    """forkserver where it exists (never forks a process that may have threads), else spawn."""
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings for one call, after merging arguments over the environment."""

    kind: str = "auto"
    workers: Optional[int] = None
    chunksize: Optional[int] = None
    start_method: str = dataclasses.field(default_factory=default_start_method)
    timeout: Optional[float] = None
    max_threads: int = 128
    calibration_ms: float = 50.0
    max_tasks_per_child: Optional[int] = None
    progress: bool = False
    dask_address: Optional[str] = None
    errors: str = "raise"
    retries: int = 0
    retry_on: Tuple[type, ...] = ()
    item_timeout: Optional[float] = None

    def merged(self, **overrides: Any) -> Config:
        """Return a copy with each non-None override validated and applied."""
        clean = {k: validate_argument(k, v) for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **clean) if clean else self


def _positive_int(culprit: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{culprit}{value!r} is not a positive integer") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{culprit}{value!r} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{culprit}{value!r} must be at least 1")
    return value


def _positive_float(culprit: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{culprit}{value!r} is not a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{culprit}{value!r} must be a number, not {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{culprit}{value!r} must be greater than 0")
    return float(value)


def _count(culprit: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{culprit}{value!r} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{culprit}{value!r} must be 0 or more")
    return value


def _exception_types(culprit: str, value: Any) -> Tuple[type, ...]:
    types = value if isinstance(value, tuple) else (value,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"{culprit}{value!r} must be an exception class or a tuple of them")
    return types


def _choice(options: Tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(culprit: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{culprit}{value!r} must be a string, one of {', '.join(options)}")
        low = value.strip().lower()
        if low not in options:
            raise ValueError(f"{culprit}{value!r} is not one of {', '.join(options)}")
        return low

    return check


def _flag(culprit: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
    raise ValueError(f"{culprit}{value!r} is not a boolean (use 1/0, true/false)")


def _address(culprit: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{culprit}{value!r} is not a scheduler address such as tcp://host:8786")
    return value.strip()


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "kind": _choice(KINDS),
    "workers": _positive_int,
    "chunksize": _positive_int,
    "start_method": _choice(START_METHODS),
    "timeout": _positive_float,
    "max_threads": _positive_int,
    "calibration_ms": _positive_float,
    "max_tasks_per_child": _positive_int,
    "progress": _flag,
    "dask_address": _address,
    "errors": _choice(ERROR_POLICIES),
    "retries": _count,
    "retry_on": _exception_types,
    "item_timeout": _positive_float,
}

#: Environment variable -> Config field. The README's table lists the same names.
ENV_VARS = {
    "AUTOPAR_KIND": "kind",
    "AUTOPAR_WORKERS": "workers",
    "AUTOPAR_CHUNKSIZE": "chunksize",
    "AUTOPAR_START_METHOD": "start_method",
    "AUTOPAR_TIMEOUT": "timeout",
    "AUTOPAR_MAX_THREADS": "max_threads",
    "AUTOPAR_CALIBRATION_MS": "calibration_ms",
    "AUTOPAR_MAX_TASKS_PER_CHILD": "max_tasks_per_child",
    "AUTOPAR_PROGRESS": "progress",
    "AUTOPAR_DASK_ADDRESS": "dask_address",
    "AUTOPAR_ITEM_TIMEOUT": "item_timeout",
}


def from_environ(environ: Mapping[str, str]) -> Config:
    """Build a Config from ``AUTOPAR_*`` variables; a bad value raises naming the variable."""
    values: dict[str, Any] = {}
    for var, field in ENV_VARS.items():
        raw = environ.get(var)
        if raw is None or (raw.strip() == "" and field != "progress"):
            continue
        values[field] = _VALIDATORS[field](f"environment variable {var}=", raw)
    unknown = sorted(k for k in environ if k.startswith("AUTOPAR_") and k not in ENV_VARS)
    if unknown:
        raise ValueError(
            f"unknown environment variable {unknown[0]}; autopar reads {', '.join(ENV_VARS)}"
        )
    return Config(**values)


# The environment is parsed once per distinct set of AUTOPAR_* values; _lock guards the
# cache. Only the known names are read per call (a full scan of os.environ costs more than
# a cheap map): unknown AUTOPAR_* names are looked for whenever the known values change.
_lock = threading.Lock()
_cache: Tuple[Tuple[Any, ...], Config] | None = None


def current() -> Config:
    """The Config the environment describes now (cached until an AUTOPAR_* variable changes)."""
    global _cache
    now = snapshot()
    with _lock:
        if _cache is not None and _cache[0] == now:
            return _cache[1]
    config = from_environ({k: v for k, v in os.environ.items() if k.startswith("AUTOPAR_")})
    with _lock:
        _cache = (now, config)
    return config


def snapshot_of(config: Config) -> Optional[Tuple[Any, ...]]:
    """The AUTOPAR_* values ``config`` was parsed from, if it is the one :func:`current`
    has cached (compare it with :func:`snapshot` to know nothing changed since), else None."""
    cache = _cache  # (one read of a tuple: a matching pair)
    return cache[0] if cache is not None and cache[1] is config else None


_RAW_ENV: Any = getattr(os.environ, "_data", None)  # CPython: the bytes behind os.environ
if not isinstance(_RAW_ENV, dict):  # pragma: no cover
    _RAW_ENV = None
_RAW_KEYS = frozenset(os.environ.encodekey(var) for var in ENV_VARS) if _RAW_ENV else ()


def snapshot() -> Tuple[Any, ...]:
    """The AUTOPAR_* variables' values now, in a form only meant to be compared."""
    # Every call reads this. os.environ.get encodes and decodes each name and value on
    # every read; the raw mapping it wraps does not, and one set intersection finds which of
    # the names are set (usually none) at half the cost of looking each one up.
    if _RAW_ENV is not None:
        present = _RAW_ENV.keys() & _RAW_KEYS
        return tuple(sorted([(k, _RAW_ENV.get(k)) for k in present])) if present else ()
    return tuple(os.environ.get(var) for var in ENV_VARS)


_TEXT_FIELDS = ("kind", "start_method", "dask_address", "errors")


def validate_argument(name: str, value: Any) -> Any:
    """Validate one decorator or call argument; None means 'not given'.

    Unlike environment variables, arguments are not parsed from text: ``workers="4"``
    is a TypeError, because it is almost always a bug in the caller.
    """
    if value is None:
        return None
    if isinstance(value, str) and name not in _TEXT_FIELDS:
        raise TypeError(f"argument {name}={value!r} must not be a string")
    return _VALIDATORS[name](f"argument {name}=", value)
