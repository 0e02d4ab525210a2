"""What each pool costs on this machine, measured once per program and kept here.

Thread costs are measured on first need (about a millisecond). A process pool's cold
start is measured the first time one starts (autopar warms it with no-op tasks and times
that); until then a prior is used, and ``python -m autopar info`` measures it on demand.

It also starts a process pool in the background for later calls (warm_in_background),
and keeps what calls missed for the want of one (owe), which says when to.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import _cpus
from .._config import Config, cpu_count
from .._execute import forkserver, registry, thread_pool
from .._execute.main_guard import processes_start_cleanly
from .._execute.outcomes import policy_of
from . import cost_model
from .cost_model import Measurements, Overheads

log = logging.getLogger("autopar")

# Used until this program has started a process pool: the cold start of a pool of 2
# workers, up to its first round trip, measured on a 2-core Linux VM. forkserver and spawn
# start a fresh interpreter that imports autopar._execute.worker; fork copies this process.
PRIOR_PROCESS_START = {"fork": 0.03, "forkserver": 0.15, "spawn": 0.15}
PRIOR_PROCESS_DISPATCH = 3e-4
# Each further worker of a cold forkserver pool: 1 to 6 ms apart, 2 to 16 workers on a
# 2-core Linux VM (workers stamping their first task); the caller starts them one by one.
PRIOR_PROCESS_WORKER_START = 0.004
# The caller's own time per chunk, with many no-op chunks in flight on a warm pool: 67 to
# 78 us for 1 to 8 workers on a 2-core Linux VM, where caller and workers share the cores
# (no many-core figure yet: benchmarks/RESULTS.md).
PRIOR_PROCESS_HANDOFF = 7e-5

# _lock guards _measured (name -> seconds) and _clusters (address -> threads, dispatch).
_lock = threading.Lock()
_measured: Dict[str, float] = {}
_clusters: Dict[str, Tuple[int, float]] = {}


def _fresh_lock_after_fork() -> None:
    # The figures stay true in a child (same machine); a lock held mid-fork would not.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock_after_fork)


def _noop(_: object) -> None:
    return None


def _time_thread_costs() -> Tuple[List[float], float]:
    release = threading.Event()
    threads = []

    def start_one() -> None:
        # (Start only, as the pools do: the thread waits, and is let go afterwards.)
        thread = threading.Thread(target=release.wait, daemon=True)
        threads.append(thread)
        thread.start()

    starts = _times(start_one, rounds=5)
    release.set()
    for thread in threads:
        thread.join()
    pool = thread_pool.DaemonThreadPool(1, name="autopar-calibrate")
    dispatch = _median_time(lambda: pool.submit(_noop, None).result())
    pool.shutdown()
    return starts, dispatch


def _thread_start() -> float:
    # The median of the latest starts: five timed on first need, then every thread the
    # thread backend and the probe started (recorded by autopar._execute.thread_pool).
    starts = sorted(thread_pool.start_times())
    return starts[len(starts) // 2]


def _get(name: str) -> Optional[float]:
    with _lock:
        return _measured.get(name)


def record(name: str, seconds: float) -> None:
    with _lock:
        _measured[name] = seconds


def thread_costs() -> Dict[str, float]:
    """Per-thread start (the median of the latest starts) and per-chunk dispatch of the
    thread pool (measured once; a race only measures twice)."""
    if _get("thread_dispatch") is None:
        starts, dispatch = _time_thread_costs()
        for seconds in starts:
            thread_pool.note_start(seconds)
        record("thread_dispatch", dispatch)
    return _thread_costs_or_priors()


# Thread costs used until they are measured, for calls on items too cheap to hand to a
# thread: the round trip and start seen on a 2-core Linux VM, rounded up.
PRIOR_THREAD_DISPATCH = 5e-5
PRIOR_THREAD_START = 1e-4
# Items under this wall time cost less than the quickest thread hand-off CPython makes
# (a queue put, a wake-up, a future's result): no thread count can be in question.
NO_THREAD_HELPS = 1e-5


def threads_in_question(wall: float) -> bool:
    """Whether items of ``wall`` seconds could gain from threads at all."""
    return wall >= NO_THREAD_HELPS


def for_items(config: Config, m: Measurements, n: int) -> Overheads:
    """The overheads to plan ``n`` items of costs ``m`` on.

    Thread costs are timed (about 1.5 ms, once per program) only where threads could win
    with them. A thread's start and hand-off priced at nothing is a lower bound on what
    threads cost: where threads lose even then, their real costs cannot change the plan,
    and priors stand in (``threads_measured`` is False, and no reason cites them).
    """
    found = current(config, time_threads=False)
    if found.threads_measured or not threads_in_question(m.wall):
        return found
    free = found._replace(thread_dispatch=0.0, thread_start=0.0)
    if cost_model.decide(m, free, n).kind != "thread":
        return found
    threads = thread_costs()  # (timed here, once: the rest of ``found`` stands)
    return found._replace(
        thread_dispatch=threads["thread_dispatch"],
        thread_start=threads["thread_start"],
        threads_measured=True,
    )


def _thread_costs_or_priors() -> Dict[str, float]:
    """The thread costs measured so far, or the priors where none are."""
    with _lock:
        dispatch = _measured.get("thread_dispatch")
    if dispatch is None:
        return {"thread_start": PRIOR_THREAD_START, "thread_dispatch": PRIOR_THREAD_DISPATCH}
    return {"thread_start": _thread_start(), "thread_dispatch": dispatch}


def warm_process_pool(
    config: Config,
    workers: int,
    *,
    record_start: bool = True,
    load: Optional[Callable[..., Any]] = None,
) -> float:
    """Start (or reuse) the process pool with every worker up; return the seconds it took.

    The first time, this is the cold start a call pays, and it is recorded with the
    per-chunk round trip measured right after on the warm pool, unless ``record_start``
    is false (a start in the background: see below). With ``load`` (a function in its
    shipping form), each worker's first chunk is an empty one of it, which loads it and
    runs nothing: a large function's segment is written while the server the workers
    fork from boots, and a worker starts and loads it in one round trip.
    """
    t0 = time.perf_counter()
    backend = registry.get("process", config, workers)
    payload = backend.prepare(_noop if load is None else load, workers)
    items: List[Any] = [None] if load is None else []
    futures = []
    submitted = []  # when each submit returned: a cold pool starts a worker in each
    for i in range(workers):
        futures.append((i, backend.submit(payload, i, items, star=False, deadline=None)))
        submitted.append(time.perf_counter())
    for i, future in futures:
        backend.collect(future, i, len(items))
    elapsed = time.perf_counter() - t0
    # Measured in the foreground only: a pool warmed in the background starts beside the
    # program's own work, whose turns on the GIL stretch each round trip (10.8 ms read for
    # 0.24 ms beside GIL-bound items, in benchmarks/bench_heavy.py's table row), and a
    # figure that high would keep processes out of every later call. Priors stand in.
    if record_start and load is None and times_round_trips():
        each = _worker_start(submitted)
        if each is not None:
            record("process_worker_start", each)
        record("process_start", max(0.0, elapsed - (workers - 1) * (each or 0.0)))
        dispatch = _median_time(
            lambda: backend.collect(
                backend.submit(payload, 0, [None], star=False, deadline=None), 0, 1
            )
        )
        record("process_dispatch", dispatch)
        record("process_handoff", _handoff(backend, payload, workers))
    return elapsed


def times_round_trips() -> bool:
    """Whether the next foreground start (warm_process_pool) times the warm pool's round
    trips: the first in a program."""
    return _get("process_dispatch") is None


def _worker_start(submitted: List[float]) -> Optional[float]:
    """Each further worker's start: the median gap between submits that started one (the
    first also starts the forkserver; fork starts every worker in the first)."""
    gaps = sorted(b - a for a, b in zip(submitted, submitted[1:]))
    return gaps[len(gaps) // 2] if gaps else None


def _handoff(backend: Any, payload: Any, workers: int) -> float:
    """The caller's time per chunk with many no-op chunks in flight: how fast one caller
    feeds all the workers."""
    count = max(32, 4 * workers)
    t0 = time.perf_counter()
    futures = [backend.submit(payload, i, [None], star=False, deadline=None) for i in range(count)]
    for i, future in enumerate(futures):
        backend.collect(future, i, 1)
    return (time.perf_counter() - t0) / count


def _median_time(round_trip: Callable[[], object], rounds: int = 11) -> float:
    """The median time of ``round_trip``: one hiccup of a shared machine (a preempted
    worker) is not the pool's cost, and a mean keeps it for the rest of the program."""
    return sorted(_times(round_trip, rounds))[rounds // 2]


def _times(action: Callable[[], object], rounds: int) -> List[float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
    return times


def warm_in_background(
    config: Config,
    workers: int,
    *,
    prime: Optional[Callable[..., Any]],
    after: threading.Event,
    now: bool = False,
) -> Optional[threading.Event]:
    """Start the process pool for later calls, where that is safe; return an event set
    once its workers are up (None: nothing started).

    With ``now``, the process the workers fork from (if any: see
    autopar._execute.forkserver) starts at once and the workers on a daemon thread
    beside the call that asked; otherwise both start on that thread once ``after`` is set
    (the end of that call). The workers load ``prime`` (the function in its shipping
    form). Until they are up the pool is cold to every plan: a call goes on without it,
    and moves its rest to it once it is up (see starting).

    (Not recorded as the cold start: work running in the caller meanwhile stretches it.
    Where a worker would run the program again, auto leaves processes out anyway.)
    """
    global _workers_ready
    if not processes_start_cleanly(config.start_method):
        return None
    if now:
        try:
            forkserver.start(config.start_method)
        except Exception as exc:  # (for later calls: never this call's failure; see _warm)
            log.debug("autopar: starting the forkserver failed: %s", exc)
            return None
    # (Here, in the calling thread: see forkserver.import_start_modules.)
    registry.backend_class("process")
    forkserver.import_start_modules(config.start_method)
    ready = threading.Event()
    go = None if now else after
    if not registry.in_background(lambda: _warm(config, workers, prime, go, ready)):
        return None
    _workers_ready = ready
    with _lock:
        _owed[0] = 0.0
    return ready


# Set once the workers of the pool starting in the background are up (see starting).
_workers_ready = threading.Event()
_workers_ready.set()


def starting() -> Optional[threading.Event]:
    """The event set once the process pool starting in the background is up; None if
    none is starting. Until then that pool is cold to every plan (process_warm)."""
    ready = _workers_ready
    return None if ready.is_set() or not registry.warming() else ready


# What calls so far would have saved on a warm process pool that none started, in
# predicted seconds since the last start (guarded by _lock): see owe().
_owed = [0.0]


def owe(seconds: float) -> float:
    """Add what a call would have saved on a warm process pool; return the sum so far.

    A pool is started for later calls once that sum reaches what starting it costs, as a
    skier buys skis once the rents paid would have bought them: whatever calls follow,
    starting then costs at most twice what the best choice made in hindsight would have
    (the rents, plus one start), where starting at the first such call can cost a start
    that no later call repays.
    """
    with _lock:
        _owed[0] += max(0.0, seconds)
        return _owed[0]


def _warm(
    config: Config,
    workers: int,
    prime: Optional[Callable[..., Any]],
    after: Optional[threading.Event],
    ready: threading.Event,
) -> None:
    # (The interpreter's switch interval is left as it is: lowered to 0.5 ms for the
    # start, it slowed a thread computing in Python beside it by 10 to 35%, against 5% at
    # the default, for a start 30% sooner.)
    try:
        if after is not None:
            if not registry.wait_until(after):
                return
            forkserver.start(config.start_method)
        warm_process_pool(config, workers, record_start=False, load=prime)
    except Exception as exc:  # a call that uses the pool will meet the cause and report it
        log.debug("autopar: warming the process pool failed: %s", exc)
    finally:
        ready.set()


def process_warm(config: Config) -> bool:
    """Whether a process pool fit for ``config`` is running, its workers up (one starting
    in the background is cold to every plan until then: see starting)."""
    if starting() is not None:
        return False
    backend = registry.peek("process")
    return backend is not None and backend.replacement(config, 1) is None


def cluster_costs(config: Config) -> Tuple[int, float]:
    """(worker threads, scheduler cost per task) of the AUTOPAR_DASK_ADDRESS cluster,
    measured once per address; (0, 0) without an address or when it cannot be reached
    (logged: auto then just leaves the cluster out)."""
    address = config.dask_address
    if address is None:
        return 0, 0.0
    with _lock:
        known = _clusters.get(address)
    if known is not None:
        return known
    try:
        from .._execute.backends import dask as dask_backend

        client = dask_backend.find_client(config)
        found = (dask_backend.cluster_threads(client), dask_backend.measure_dispatch(client))
    except Exception as exc:  # no dask installed, no scheduler there: auto stays local
        log.warning("autopar: kind='auto' leaves the cluster at %s out: %s", address, exc)
        found = (0, 0.0)
    with _lock:
        _clusters[address] = found
    return found


def current(config: Config, *, time_threads: bool = True) -> Overheads:
    """The overheads a decision should use now (cold start is 0 when a pool is running).

    ``time_threads=False``: priors stand in for thread costs not yet measured (see
    for_items, which plans with this where threads cannot win).
    """
    threads = thread_costs() if time_threads else _thread_costs_or_priors()
    cluster_threads, cluster_dispatch = cluster_costs(config)
    thread_backend = registry.peek("thread")
    started = getattr(thread_backend, "started_threads", 0)
    start = _get("process_start")
    return Overheads(
        cores=cpu_count(),
        thread_dispatch=threads["thread_dispatch"],
        thread_start=threads["thread_start"],
        threads_started=started,
        process_dispatch=_get("process_dispatch") or PRIOR_PROCESS_DISPATCH,
        # A call under a per-item policy runs on processes of its own (_execute/supervised),
        # started for it: it pays a cold start even while the shared pool is warm.
        process_start=0.0
        if process_warm(config) and policy_of(config) is None
        else (start if start is not None else PRIOR_PROCESS_START[config.start_method]),
        max_threads=config.max_threads,
        cluster_threads=cluster_threads,
        cluster_dispatch=cluster_dispatch,
        processes=processes_start_cleanly(config.start_method),
        gil=_cpus.gil_enabled(),
        process_worker_start=_or(_get("process_worker_start"), PRIOR_PROCESS_WORKER_START),
        process_handoff=_or(_get("process_handoff"), PRIOR_PROCESS_HANDOFF),
        threads_measured=_get("thread_dispatch") is not None,
    )


def _or(found: Optional[float], prior: float) -> float:
    return prior if found is None else found  # (a measured 0 stands: fork starts all at once)


def measured() -> Dict[str, float]:
    """A copy of everything measured so far (for ``python -m autopar info``)."""
    with _lock:
        found = dict(_measured)
    if thread_pool.start_times():
        found["thread_start"] = _thread_start()
    return found
