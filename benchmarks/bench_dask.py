"""What batching saves on dask: per-item overhead with one item per task versus autopar's chunks.

Run: ``.venv/bin/python -m pytest benchmarks/bench_dask.py`` (a LocalCluster of two worker
processes, one thread each, on 127.0.0.1). The function does nothing, so a call's time per
item *is* the per-item overhead; ``extra_info["per_item_us"]`` holds it for each case.

- ``client_map``: dask's own ``client.map``, one task per item, the reference point.
- ``chunksize_1``: autopar with one item per task: dask's per-task cost on every item.
- ``batched``: autopar's default, about four chunks per worker thread.

One run on a 2-core machine (scheduler, client and both workers sharing the two cores),
mean per item: client_map 2.2 ms, chunksize_1 11.5 ms, batched 0.23 ms; batching cuts the
per-item overhead about 50-fold against one item per task. One item per task costs more
through autopar than through ``client.map``, which sends all its tasks in one graph while
autopar submits chunk by chunk to keep its in-flight window bounded.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import distributed
import pytest

from autopar import parallel, shutdown

N_ITEMS = 400


def inc(x: int) -> int:
    return x + 1


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as c:
        yield c
        shutdown()


def _per_item(benchmark: Any, run: Callable[[], list[int]]) -> None:
    result = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    assert result == [x + 1 for x in range(N_ITEMS)]
    benchmark.extra_info["per_item_us"] = benchmark.stats.stats.mean / N_ITEMS * 1e6


@pytest.mark.benchmark(group="dask per-item overhead")
def test_client_map(benchmark: Any, client: distributed.Client) -> None:
    _per_item(benchmark, lambda: client.gather(client.map(inc, range(N_ITEMS), pure=False)))


@pytest.mark.benchmark(group="dask per-item overhead")
def test_chunksize_1(benchmark: Any, client: distributed.Client) -> None:
    f = parallel(kind="dask", chunksize=1)(inc)
    _per_item(benchmark, lambda: f.map(range(N_ITEMS)))


@pytest.mark.benchmark(group="dask per-item overhead")
def test_batched(benchmark: Any, client: distributed.Client) -> None:
    f = parallel(kind="dask")(inc)
    _per_item(benchmark, lambda: f.map(range(N_ITEMS)))
