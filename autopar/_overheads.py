"""What each pool costs on this machine, measured once per program and kept here.

Thread costs are measured on first need (about a millisecond). A process pool's cold
start is measured the first time one starts (autopar warms it with no-op tasks and times
that); until then a prior is used, and ``python -m autopar info`` measures it on demand.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, Optional

from . import _pools
from ._config import Config, cpu_count
from ._cost import Overheads

# Used until this program has started a process pool. Measured on a 2-core Linux VM:
# forkserver pool of 2 workers, first task round trip 30-60 ms (benchmarks/RESULTS.md).
PRIOR_PROCESS_START = 0.06
PRIOR_PROCESS_DISPATCH = 3e-4

# _lock guards _measured: name -> seconds.
_lock = threading.Lock()
_measured: Dict[str, float] = {}


def _noop(_: object) -> None:
    return None


def _time_thread_costs() -> Dict[str, float]:
    from ._threadpool import DaemonThreadPool

    starts = 2
    t0 = time.perf_counter()
    for _ in range(starts):
        thread = threading.Thread(target=_noop, args=(None,), daemon=True)
        thread.start()
        thread.join()
    start = (time.perf_counter() - t0) / starts
    pool = DaemonThreadPool(1, name="autopar-calibrate")
    rounds = 10
    t0 = time.perf_counter()
    for _ in range(rounds):
        pool.submit(_noop, None).result()
    dispatch = (time.perf_counter() - t0) / rounds
    pool.shutdown()
    return {"thread_start": start, "thread_dispatch": dispatch}


def _get(name: str) -> Optional[float]:
    with _lock:
        return _measured.get(name)


def record(name: str, seconds: float) -> None:
    with _lock:
        _measured[name] = seconds


def thread_costs() -> Dict[str, float]:
    """Per-thread start and per-chunk dispatch of the thread pool (measured once)."""
    with _lock:
        if "thread_dispatch" in _measured:
            return {k: _measured[k] for k in ("thread_start", "thread_dispatch")}
    costs = _time_thread_costs()
    with _lock:
        _measured.update(costs)
    return costs


def warm_process_pool(config: Config, workers: int) -> float:
    """Start (or reuse) the process pool with every worker up; return the seconds it took.

    The first time, this is the cold start a call pays, and it is recorded, as is the
    per-chunk round trip measured right after on the warm pool.
    """
    t0 = time.perf_counter()
    backend = _pools.get("process", config, workers)
    payload = backend.prepare(_noop)
    futures = [(i, backend.submit(payload, i, [None], False, None)) for i in range(workers)]
    for i, future in futures:
        backend.collect(future, i, 1)
    elapsed = time.perf_counter() - t0
    if _get("process_start") is None:
        record("process_start", elapsed)
        rounds = 10
        t1 = time.perf_counter()
        for i in range(rounds):
            backend.collect(backend.submit(payload, i, [None], False, None), i, 1)
        record("process_dispatch", (time.perf_counter() - t1) / rounds)
    return elapsed


def process_warm(config: Config) -> bool:
    backend = _pools.peek("process")
    return backend is not None and backend.usable(config, 1) is None


def current(config: Config) -> Overheads:
    """The overheads a decision should use now (cold start is 0 when a pool is running)."""
    threads = thread_costs()
    thread_backend = _pools.peek("thread")
    started = getattr(thread_backend, "started_threads", 0)
    start = _get("process_start")
    return Overheads(
        cores=cpu_count(),
        thread_dispatch=threads["thread_dispatch"],
        thread_start=threads["thread_start"],
        threads_started=started,
        process_dispatch=_get("process_dispatch") or PRIOR_PROCESS_DISPATCH,
        process_start=0.0
        if process_warm(config)
        else (start if start is not None else PRIOR_PROCESS_START),
        max_threads=config.max_threads,
    )


def measured() -> Dict[str, float]:
    """A copy of everything measured so far (for ``python -m autopar info``)."""
    with _lock:
        return dict(_measured)
