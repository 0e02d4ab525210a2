"""The cost model: predict each kind's time for a call and pick the least. Pure: no clock.

Inputs are what calibration measured about the function (:class:`Measurements`) and
what the pools cost on this machine (:class:`Overheads`); the output is a
:class:`~autopar.plan.Plan`. Every term below is a time the call will really spend:

    serial   n * wall
    thread   max(n * wall / k, n * cpu / c) + chunks * dispatch / k
             (c, the threads computing at once: 1 while the function holds the GIL,
             else min(k, cores));
             for computing items, n * wall / (the measured thread speed-up);
             + the new threads' starts, about half of them where threads overlap
    process  cold start (overlapped with work done meanwhile on a thread, unless GIL-bound)
             + max(n * ship_caller, n * (wall + ship_worker) / p) + chunks * dispatch' / p
             (p: the count with the least time, no more than the call can feed;
             a cold pool's workers join one after another, worker_start apart;
             dispatch' = max(dispatch, p * handoff): one caller hands chunks to all p)
             + ship_function (the caller pickles the function each call)
             + ship_function + load_function + setup_process when the pool is cold (its
               new workers load the function and build per-worker values, side by side)
    thread   ... + setup_thread per new thread (built one after another: under the GIL,
             a build in Python takes turns)
    dask     max(n * ship_caller, n * (wall + ship_worker) / cluster threads,
                 chunks * scheduler cost per task)   (only with AUTOPAR_DASK_ADDRESS)
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, NamedTuple, Optional, Tuple

from .._execute.backends.serial import SERIAL_CHUNK
from ..plan import Plan

# A chunk should run this many times longer than its hand-off, so dispatch stays ~5%.
CHUNK_OVER_DISPATCH = 20
# A faster kind must beat a simpler one (serial < thread < process) by this factor to be
# chosen: predictions carry noise, and simpler kinds fail in fewer ways.
SIMPLER_BIAS = 1.05
# Above this measured speed-up of two probe threads over one, the function runs in
# parallel on threads: it releases the GIL (hashlib, numpy, I/O). On 2 cores sha256 of
# large buffers reads about 2 and pure Python about 1 (the "sha256_1mib" and "cpu_2ms"
# workloads in benchmarks/workloads.py).
GIL_FREE_RATE = 1.5


class Measurements(NamedTuple):
    """What one item of the function costs, from calibration (seconds unless noted)."""

    wall: float  # mean wall time per item, one worker, no contention
    cpu: float  # mean CPU time per item, same conditions
    samples: int  # items measured
    # Throughput of `speedup_threads` threads over one thread's, from the items' own CPU
    # clocks: about 1 when the GIL serialises them; None when not measured.
    thread_speedup: Optional[float] = None
    speedup_threads: int = 0
    ship_caller: float = 0.0  # caller side: pickle an item, unpickle its result
    ship_worker: float = 0.0  # worker side: the reverse
    picklable: bool = True  # function, a sample item and its result all pickle
    ship_function: float = 0.0  # seconds to pickle the function itself (each call does)
    function_bytes: int = 0  # its pickled size
    # Seconds for a new worker to load a large function: writing it into memory the
    # worker never touched (page faults included), far slower than a copy in the cache.
    load_function: float = 0.0
    # False until the function's pickle is measured (calibration.priced): only once
    # processes are in question. Till then the three fields above hold what the items
    # alone say, the function priced free and picklable: a lower bound on what processes
    # cost, so a verdict against them stands whatever the function turns out to cost.
    function_priced: bool = True
    # Seconds to build the per-worker values (autopar.per_worker) the items use: what a
    # new process worker spends once, and what a new thread spends on those that are
    # built once per thread.
    setup_process: float = 0.0
    setup_thread: float = 0.0

    @property
    def cpu_fraction(self) -> float:
        return min(1.0, self.cpu / self.wall) if self.wall > 0 else 1.0

    @property
    def gil_free(self) -> bool:
        return self.thread_speedup is not None and self.thread_speedup >= GIL_FREE_RATE

    def as_table(self) -> Dict[str, float]:
        table = {
            "wall": self.wall,
            "cpu": self.cpu,
            "cpu_fraction": self.cpu_fraction,
            "ship_to_process": self.ship_caller + self.ship_worker,
            "items_sampled": float(self.samples),
        }
        if self.thread_speedup is not None:
            table["thread_speedup"] = self.thread_speedup
        if not self.function_priced:
            table["function_bytes"] = math.nan  # not measured: processes not in question
        elif self.function_bytes:
            table["ship_function"] = self.ship_function
            table["function_bytes"] = float(self.function_bytes)
            if self.load_function:
                table["load_function"] = self.load_function
        if self.setup_process:
            table["setup_per_process"] = self.setup_process
            table["setup_per_thread"] = self.setup_thread
        return table


class Overheads(NamedTuple):
    """What the pools cost on this machine (see ``python -m autopar info``)."""

    cores: int
    thread_dispatch: float  # per chunk, submit to result
    thread_start: float  # per new thread
    threads_started: int  # threads already running in the pool (free to use)
    process_dispatch: float  # per chunk round trip, warm pool
    process_start: float  # cold pool start, to its first worker; 0 when a pool is running
    max_threads: int = 128
    cluster_threads: int = 0  # dask cluster's worker threads; 0: no cluster to consider
    cluster_dispatch: float = 0.0  # per task, as a burst of tasks costs the scheduler
    # False where a new process worker would run the main script's unguarded code again
    processes: bool = True
    # False on a free-threaded CPython with the GIL disabled (sys._is_gil_enabled())
    gil: bool = True
    process_worker_start: float = 0.0  # each further worker of a cold pool, one at a time
    process_handoff: float = 0.0  # the caller's own time per chunk: p workers share it
    # False while priors stand in for the thread costs (see pool_costs.for_items)
    threads_measured: bool = True


Choice = Tuple[float, int, int]  # predicted seconds, workers, chunksize


def chunk_for(wall: float, dispatch: float, n: int, workers: int) -> int:
    """Items per chunk: long enough to hide the hand-off, short enough to balance.

    At least n / (8 * workers): each hand-off also costs the caller CPU that the
    workers may need, so a few items a chunk beat one, and 8 chunks a worker still
    balance costs that grow along the input, which a floor of 4 a worker balances worse
    (the "cpu_2ms", "growing" and "medium" rows of benchmarks/RESULTS.md;
    tests/test_cost_model.py::test_process_chunks_hide_dispatch_but_keep_balance). At most
    n / (4 * workers), multiprocessing.Pool's rule, so a slow chunk near the end leaves
    little to wait for.
    """
    wanted = math.ceil(CHUNK_OVER_DISPATCH * dispatch / max(wall, 1e-9))
    balanced = max(1, math.ceil(n / (4 * workers)))
    fine = max(1, math.ceil(n / (8 * workers)))
    return max(1, min(max(wanted, fine), balanced))


def serial_time(m: Measurements, n: int) -> Choice:
    return n * m.wall, 1, max(1, min(n, SERIAL_CHUNK))


def thread_time(m: Measurements, o: Overheads, n: int, workers: int) -> Choice:
    chunk = chunk_for(m.wall, o.thread_dispatch, n, workers)
    chunks = math.ceil(n / chunk)
    k = min(workers, chunks)
    # Threads contending for the GIL lose a little to switching; waiting threads do not.
    contention = 1.0 if _parallel_on_threads(m, o) or k == 1 else 1.05
    if m.thread_speedup is not None and m.cpu_fraction >= 0.5:
        # Computing, and measured: trust the speed-up seen, never more than the cores.
        computing = min(k, o.cores) if m.gil_free else min(k, max(1.0, m.thread_speedup))
        run = n * m.wall * contention / computing
    else:
        computing = min(k, o.cores) if _parallel_on_threads(m, o) else 1
        # A wait shorter than a thread hand-off is timer noise, not something to overlap.
        cpu = m.cpu if m.wall - m.cpu >= o.thread_dispatch else m.wall
        run = max(n * m.wall / k, n * cpu * contention / computing)
    new = max(0, k - o.threads_started)
    if computing > 1 or m.cpu_fraction < 0.5:
        # The caller starts new threads one after another while those started work: the
        # j-th starts j starts late, a loss of (new + 1) / 2 starts a thread on average;
        # and the call cannot end before the caller has started them all.
        run = max(run + new * (new + 1) / 2 * o.thread_start / k, new * o.thread_start)
    else:  # (threads taking turns on the GIL: each start holds up the work)
        run += new * o.thread_start
    elapsed = run + chunks * o.thread_dispatch / k + new * m.setup_thread
    return elapsed, k, chunk


def _parallel_on_threads(m: Measurements, o: Overheads) -> bool:
    """Whether items compute on threads in parallel: measured so, or (the thread test not
    run) on an interpreter with no GIL. A measured speed-up wins over the flag: items may
    hold a lock of their own."""
    return m.gil_free or (m.thread_speedup is None and not o.gil)


def best_threads(m: Measurements, o: Overheads, n: int) -> Choice:
    """The thread count with the least predicted time (the smallest one within 2% of it).

    More threads than cores only help items that wait (thread_time's own rule for what
    counts as a wait), so only those try counts up to max_threads.
    """
    waits = m.wall - m.cpu >= o.thread_dispatch
    limit = max(1, min(o.max_threads if waits else min(o.max_threads, o.cores), n))
    candidates = sorted({limit, o.cores, *(2**i for i in range(int(math.log2(limit)) + 1))})
    options = [thread_time(m, o, n, k) for k in candidates if k <= limit]
    fastest = min(t for t, _, _ in options)
    return next(c for c in options if c[0] <= fastest * 1.02)


def process_time(m: Measurements, o: Overheads, n: int) -> Choice:
    """The process worker count with the least predicted time (the smallest within 2%)."""
    limit = max(1, min(o.cores, n, feedable_workers(m, o, n)))
    candidates = sorted({limit, *(2**i for i in range(1, int(math.log2(limit)) + 1))})
    options = [process_time_with(m, o, n, p) for p in candidates]
    fastest = min(t for t, _, _ in options)
    return next(c for c in options if c[0] <= fastest * 1.02)


def feedable_workers(m: Measurements, o: Overheads, n: int) -> int:
    """Workers the call can feed: a worker whose share of the work is shorter than one
    hand-off costs its start and its hand-offs, and takes no time off the call."""
    work = n * (m.wall + m.ship_worker)
    return max(1, int(work / max(o.process_dispatch, 1e-9)))


def process_time_with(m: Measurements, o: Overheads, n: int, workers: int) -> Choice:
    # One caller hands out every chunk: past dispatch / handoff workers, a chunk waits
    # for the caller, and each worker sees a longer hand-off.
    dispatch = max(o.process_dispatch, workers * o.process_handoff)
    chunk = chunk_for(m.wall + m.ship_worker, dispatch, n, workers)
    # While a cold pool starts, a thread keeps running items at serial speed, unless the
    # items hold the GIL: then they would slow the start itself, and autopar waits.
    overlaps = m.cpu_fraction < 0.5 or _parallel_on_threads(m, o)
    done_meanwhile = min(n, int(o.process_start / m.wall)) if overlaps else 0
    rest = n - done_meanwhile
    chunks = math.ceil(rest / chunk) if rest else 0
    run = max(rest * m.ship_caller, rest * (m.wall + m.ship_worker) / workers)
    if o.process_start > 0 and rest:
        # A cold pool's workers start one after another while those up work: the j-th
        # joins j starts late, (workers - 1) / 2 starts a worker on average.
        late = workers - 1
        run = max(run + late / 2 * o.process_worker_start, late * o.process_worker_start)
    elapsed = (o.process_start if rest else n * m.wall) + run + chunks * dispatch / workers
    # Each call pickles the function; a worker unpickles it once and keeps it while it is
    # unchanged. New workers load it, and build per-worker values, side by side; a warm
    # pool's workers are taken to hold both (a pool warmed for later calls loads the
    # function as it starts; the re-plan watch catches a pool that was warmed by another).
    cold = o.process_start > 0
    load = m.ship_function + m.load_function + m.setup_process if cold else 0.0
    return elapsed + m.ship_function + load, workers, chunk


def cluster_time(m: Measurements, o: Overheads, n: int) -> Choice:
    """A dask cluster: no start-up, its own threads, a scheduler cost per task."""
    workers = max(1, min(o.cluster_threads, n))
    chunk = chunk_for(m.wall + m.ship_worker, o.cluster_dispatch, n, workers)
    chunks = math.ceil(n / chunk)
    run = max(n * m.ship_caller, n * (m.wall + m.ship_worker) / workers)
    # The scheduler hands out tasks one after another: its cost per task adds up.
    return max(run, chunks * o.cluster_dispatch) + o.cluster_dispatch, workers, chunk


def decide(
    m: Measurements,
    o: Overheads,
    n: int,
    allowed: Iterable[str] = ("serial", "thread", "process", "dask"),
) -> Plan:
    """Predict every allowed kind for ``n`` more items and choose the fastest."""
    allowed = tuple(allowed)
    options: Dict[str, Choice] = {"serial": serial_time(m, n)}
    if "thread" in allowed and n > 1:
        options["thread"] = best_threads(m, o, n)
    if "process" in allowed and n > 1 and m.picklable and o.cores > 1 and o.processes:
        options["process"] = process_time(m, o, n)
    if "dask" in allowed and n > 1 and m.picklable and o.cluster_threads > 0:
        options["dask"] = cluster_time(m, o, n)
    kind = "serial"
    for candidate in ("thread", "process", "dask"):
        if candidate in options and options[candidate][0] * SIMPLER_BIAS < options[kind][0]:
            kind = candidate
    _, workers, chunk = options[kind]
    return Plan(
        kind=kind,
        workers=workers,
        chunksize=chunk,
        reason=_reason(kind, m, o, options, n),
        n_items=n,
        predicted={k: v[0] for k, v in options.items()},
        measured=m.as_table(),
    )


def _reason(kind: str, m: Measurements, o: Overheads, options: Dict[str, Choice], n: int) -> str:
    waiting = 1 - m.cpu_fraction
    if kind == "serial":
        return _serial_reason(m, o, options, n)
    if kind == "thread":
        if m.gil_free:  # (measured: not to be said of items merely assumed to hold it)
            return "items compute without holding the GIL, so threads run them in parallel"
        if _parallel_on_threads(m, o) and m.cpu_fraction >= 0.5:
            return "the GIL is disabled (free-threaded Python), so threads run items in parallel"
        if m.cpu_fraction >= 0.5 and m.thread_speedup is not None:
            return (
                f"two threads ran items {m.thread_speedup:.2f}x as fast as one, which is "
                f"predicted to beat the other kinds"
            )
        return f"items spend {waiting:.0%} of their time waiting: threads overlap the waits"
    if kind == "dask":
        ratio = min(v[0] for k, v in options.items() if k != "dask") / max(
            options["dask"][0], 1e-12
        )
        return (
            f"the cluster's {options['dask'][1]} worker threads beat this machine by the "
            f"predicted ratio {ratio:.1f}x, its per-task cost included"
        )
    # Only what was measured: the thread test may not have run (too few or too long items).
    if m.thread_speedup is not None and not m.gil_free:
        why = f"a second thread adds little ({_turns(m)})"
    elif m.thread_speedup is None and m.cpu_fraction >= 0.5:
        why = "items compute (whether they release the GIL was not measured)"
    else:
        why = "processes are predicted fastest"
    return f"{why}: {options['process'][1]} processes beat serial by the predicted ratio " + (
        f"{options['serial'][0] / max(options['process'][0], 1e-12):.1f}x"
    )


def _turns(m: Measurements) -> str:
    # What the thread test measured, and what it cannot tell apart: 200 x 200 products,
    # which release the GIL, read 1.15x where OpenBLAS's own threads kept both cores busy
    # (and 2.00x with it capped to one thread).
    return (
        f"two threads ran {m.thread_speedup:.2f}x as fast as one: the GIL, a lock, or "
        "threads of the items' own keep a second from helping"
    )


def _serial_reason(m: Measurements, o: Overheads, options: Dict[str, Choice], n: int) -> str:
    """Why each other kind lost, one clause per kind: a single blanket reason ("too
    cheap") would mislead where a kind lost for its own reason, as processes left out of
    a script with no main guard
    (tests/test_cost_model.py::test_serial_reasons_name_what_each_other_kind_lost_to)."""
    if len(options) == 1:
        # (A first call's plan covers what its probe left: at times a single item.)
        return "one item: nothing to run beside it" if n <= 1 else "no other kind allowed"
    warm_wins = (
        "process" in options
        and process_time(m, o._replace(process_start=0.0), n)[0] * SIMPLER_BIAS
        < options["serial"][0]
    )
    # (Many items to a chunk can make a running pool pay where no single hand-off does.)
    cheap = m.wall < o.thread_dispatch and m.wall + m.ship_worker < o.process_dispatch
    if cheap and not warm_wins:
        return "items are too cheap for any pool's hand-off to pay off"
    on = f" on {n} items"
    why = []
    if "thread" in options:
        if o.threads_measured and m.wall < o.thread_dispatch:
            why.append("an item costs less than handing it to a thread")
        elif m.cpu_fraction < 0.5 or _parallel_on_threads(m, o):
            why.append(
                f"threads' start and hand-offs cost more than they save{on}"
                if o.threads_measured
                else f"threads would not be faster{on} even if their start and hand-offs "
                "cost nothing (so those were not measured)"
            )
        elif m.thread_speedup is not None:
            why.append(f"threads would add little ({_turns(m)})")
        else:  # (items too brief for calibration's thread test)
            why.append("items compute, and threads only help code that releases the GIL")
    if "process" in options:
        if warm_wins:
            why.append(
                f"a running process pool would win, but starting one "
                f"({o.process_start * 1e3:.0f} ms) costs more than it saves{on}"
            )
        elif _function_too_dear(m, o, n):
            why.append(
                f"shipping the function ({m.function_bytes / 2**20:.1f} MiB pickled) to the "
                f"processes costs more than they would save{on}"
            )
        elif m.ship_caller + m.ship_worker > m.wall:
            why.append("shipping an item to a process costs more than running it")
        else:
            why.append("processes' hand-offs cost more than they save")
    elif not m.picklable:
        why.append("the function or its items do not pickle, so processes are out")
    elif o.cores < 2:
        why.append("one core, so processes cannot help")
    return "; ".join(why) or "no other kind is predicted to be faster"


def _function_too_dear(m: Measurements, o: Overheads, n: int) -> bool:
    """Whether processes lose only because of what shipping the function costs."""
    if not m.ship_function:
        return False
    light = process_time(m._replace(ship_function=0.0), o, n)[0]
    return light * SIMPLER_BIAS < n * m.wall
