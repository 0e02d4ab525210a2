"""Large NumPy arrays as items, side by side in one run (issue 15's "array" row).

    python -m benchmarks.bench_buffers [--items 200] [--repeats 5] [--pages]

200 arrays of 1-8 MiB; the function does about 2 ms of GIL-holding work on each (a pure
Python loop over a few hundred elements, and a NumPy reduction over the whole array), so
threads cannot help and processes can only if shipping the arrays costs less than the
work. Contenders: plain ``map``; autopar's thread and process kinds, the process kind
once more with shared memory off (every array through the pipe), ``kind="auto"`` (its
first call, with calibration, and the median of the later ones); joblib's default
``Parallel(n_jobs=2)`` (it memory-maps arrays over 1 MB); mpire's ``WorkerPool(n_jobs=2)``
when installed. Each runs ``--repeats`` times after one untimed call (pools warm); the
median is printed as a ratio to plain ``map`` measured in the same run. Ratios, not
seconds: the machine is shared.

``--pages`` prints instead what the caller's copies cost: every array written into fresh
segments (through the file, then unlinked) and into reused, mapped ones (a memcpy), beside
serial's time; with the work, they bound what processes can reach on this machine. Then
what a worker pays to read them: summed through a mapping made anew per array (a fault
per page) and through one kept mapped.
"""

from __future__ import annotations

import argparse
import functools
import mmap
import os
import statistics
import time
from typing import Any, Callable, Dict, List

import numpy as np

MIB = 2**20


def work(loops: int, array: Any) -> float:
    """About 2 ms holding the GIL: ``loops`` passes of Python over a few hundred elements,
    then a reduction over the whole array."""
    head = array[:300].tolist()
    total = 0.0
    for _ in range(loops):
        for x in head:
            total += x * 0.5
    return total + float(array.sum())


def _loops_for(seconds: float, arrays: List[Any]) -> int:
    """Loop passes that make work() take ``seconds`` on a middle-sized array, here."""
    array = sorted(arrays, key=lambda a: a.nbytes)[len(arrays) // 2]
    loops = 1
    while True:
        took = min(_took(work, loops, array) for _ in range(5))  # (least: a busy machine)
        if took > seconds / 4:
            return max(1, round(loops * seconds / took))
        loops *= 2


def _took(run: Callable[..., Any], *args: Any) -> float:
    t0 = time.perf_counter()
    run(*args)
    return time.perf_counter() - t0


def _arrays(count: int) -> List[Any]:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1 * MIB, 8 * MIB, size=count, endpoint=True) // 8
    return [rng.random(int(n)) for n in sizes]


def _contenders(fn: Callable[[Any], float]) -> Dict[str, Callable[[List[Any]], List[float]]]:
    import autopar
    from autopar._execute import shared_buffers

    def piped(arrays: List[Any]) -> List[float]:
        measured = shared_buffers.threshold
        shared_buffers.threshold = lambda: 2**62  # type: ignore[assignment]
        try:
            return autopar.parallel(kind="process", workers=2)(fn).map(arrays)
        finally:
            shared_buffers.threshold = measured  # type: ignore[assignment]

    found: Dict[str, Callable[[List[Any]], List[float]]] = {
        "serial (map)": lambda arrays: list(map(fn, arrays)),
        "autopar thread": autopar.parallel(kind="thread", workers=2)(fn).map,
        "autopar process": autopar.parallel(kind="process", workers=2)(fn).map,
        "autopar process, pipe only": piped,
    }
    try:
        import joblib

        found["joblib Parallel(n_jobs=2)"] = lambda arrays: joblib.Parallel(n_jobs=2)(
            joblib.delayed(fn)(a) for a in arrays
        )
    except ImportError:
        pass
    try:
        from mpire import WorkerPool

        def mpire_map(arrays: List[Any]) -> List[float]:
            with WorkerPool(n_jobs=2) as pool:
                return pool.map(fn, [(a,) for a in arrays])  # type: ignore[no-any-return]

        found["mpire WorkerPool(n_jobs=2)"] = mpire_map
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pages", action="store_true")
    parser.add_argument("--write", action="store_true", help="save as a RESULTS.md section")
    options = parser.parse_args()
    if options.pages:
        return _pages(_arrays(options.items), options.repeats)
    import autopar
    from autopar._execute import shared_buffers

    arrays = _arrays(options.items)
    fn = functools.partial(work, _loops_for(0.002, arrays))
    expected = list(map(fn, arrays))
    seconds: Dict[str, List[float]] = {}
    for name, run in _contenders(fn).items():
        assert run(arrays) == expected, name  # untimed: starts pools, checks results
        seconds[name] = [_timed(run, arrays) for _ in range(options.repeats)]
    auto_first, auto_later = [], []
    for _ in range(options.repeats):
        auto = autopar.parallel(kind="auto")(functools.partial(work, fn.args[0]))
        auto_first.append(_timed(auto.map, arrays))
        auto_later.append(statistics.median(_timed(auto.map, arrays) for _ in range(3)))
        plan = auto.last_plan
    seconds["autopar auto, first call"] = auto_first
    seconds["autopar auto, later calls"] = auto_later
    serial = statistics.median(seconds["serial (map)"])
    total = sum(a.nbytes for a in arrays)
    out = [
        f"{len(arrays)} arrays, {total / MIB:.0f} MiB, ~2 ms of work each; "
        f"{os.cpu_count()} cores; threshold {shared_buffers.threshold() // 1024} KiB; "
        f"median of {options.repeats}; speed-up over serial (higher is better)"
    ]
    for name, times in seconds.items():
        out.append(f"  {name:<30} {serial / statistics.median(times):5.2f}x serial")
    out.append(f"  (auto's last plan: {plan})")
    print("\n".join(out))
    if options.write:
        from benchmarks import sections

        sections.write_report(
            "buffers",
            "Large arrays through shared memory (bench_buffers.py)",
            "python -m benchmarks.bench_buffers --write",
            out,
        )


def _pages(arrays: List[Any], repeats: int) -> None:
    from autopar._execute import shared_memory

    parts = [memoryview(a).cast("B") for a in arrays]
    largest = max(p.nbytes for p in parts)
    reused = [shared_memory.create_mapped([parts[0]], [0], largest) for _ in range(4)]

    def fresh() -> None:
        for part in parts:
            shared_memory.unlink(shared_memory.create(part))

    def memcpy() -> None:
        for i, part in enumerate(parts):
            mapped = reused[i % 4].mapped
            assert mapped is not None
            mapped[: part.nbytes] = part

    def read(mapped: Any, part: memoryview) -> None:
        np.frombuffer(mapped, dtype="float64", count=part.nbytes // 8).sum()

    def mapped_anew() -> None:  # a worker that maps each chunk's segment again
        for i, part in enumerate(parts):
            with open(f"/dev/shm/{reused[i % 4].name}", "rb") as file:
                mapped = mmap.mmap(file.fileno(), part.nbytes, access=mmap.ACCESS_COPY)
            read(mapped, part)
            mapped.close()

    def mapping_kept() -> None:  # one that keeps its mappings (item_mappings.py)
        for i, part in enumerate(parts):
            read(reused[i % 4].mapped, part)

    fn = functools.partial(work, _loops_for(0.002, arrays))
    try:
        times = {
            "serial (map)": [_took(lambda: list(map(fn, arrays))) for _ in range(repeats)],
            "fresh segments": [_took(fresh) for _ in range(repeats)],
            "reused segments": [_took(memcpy) for _ in range(repeats)],
            "sum, mapped anew": [_took(mapped_anew) for _ in range(repeats)],
            "sum, mapping kept": [_took(mapping_kept) for _ in range(repeats)],
        }
    finally:
        for segment in reused:
            shared_memory.unlink(segment.name)
    total = sum(p.nbytes for p in parts)
    serial = statistics.median(times["serial (map)"])
    copy = statistics.median(times["reused segments"])
    print(f"{len(arrays)} arrays, {total / MIB:.0f} MiB; median of {repeats}")
    for name, took in times.items():
        median = statistics.median(took)
        print(f"  {name:<18} {median:.3f} s  {total / median / 2**30:6.1f} GiB/s")
    cores = os.cpu_count() or 1
    best = (serial + copy) / cores
    print(
        f"  bound on {cores} cores: (serial + reused copy) / cores = {best:.3f} s, "
        f"{serial / best:.2f}x serial"
    )


def _timed(run: Callable[[List[Any]], Any], arrays: List[Any]) -> float:
    t0 = time.perf_counter()
    run(arrays)
    return time.perf_counter() - t0


if __name__ == "__main__":
    # Under the module's own name, so that process workers import work() by reference.
    from benchmarks import bench_buffers

    bench_buffers.main()
