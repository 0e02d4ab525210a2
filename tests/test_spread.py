"""Spread sampling: a first call measures items from the whole input, not a prefix."""

from __future__ import annotations

import sys
import time

import pytest

from autopar import WorkerCrashedError, parallel
from autopar._auto.spread import SpreadOrder, progressive


@pytest.mark.parametrize("count", [0, 1, 2, 5, 8, 100, 256])
def test_progressive_order_is_a_permutation_whose_prefixes_spread(count):
    order = progressive(count)
    assert sorted(order) == list(range(count))
    if count >= 8:
        # The first four reach every quarter of the range.
        assert {x * 4 // count for x in order[:4]} == {0, 1, 2, 3}


@pytest.mark.parametrize("n", [3, 10, 257, 1000])
@pytest.mark.parametrize("spots", [1, 3, 64, 256, 5000])
def test_view_restore_and_original_agree(n, spots):
    order = SpreadOrder(n, spots)
    items = [f"item{i}" for i in range(n)]
    view = list(order.view(items))
    assert sorted(view) == sorted(items)
    assert order.restore_chunks([view]) == items
    assert [items[order.original(j)] for j in range(n)] == view
    assert list(order.view(range(n))) == [int(x[4:]) for x in view]  # ranges, tuples too
    assert list(order.view(tuple(items))) == view


@pytest.mark.parametrize("n", [1, 10, 257, 3000])
@pytest.mark.parametrize("spots", [1, 64, 256])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("container", [list, tuple, range])
def test_the_view_read_by_items_and_by_chunks_keeps_one_order(n, spots, seed, container):
    # The probe reads the view an item at a time, the chunk reader by take(n) or, for a
    # chunk run at once, take_lazily(n); any mix must go on where the others stopped: the
    # first spots, then every other item in input order.
    import random

    order = SpreadOrder(n, spots)
    spread = set(order.first)
    expected = order.first + [i for i in range(n) if i not in spread]
    rng = random.Random(seed)
    items = range(n) if container is range else container(range(n))
    view, got = order.view(items), []
    while len(got) < n:
        draw = rng.random()
        if draw < 0.4:
            got.append(next(view))
        elif draw < 0.7:
            got += view.take(rng.choice([1, 7, 64, 1000]))
        else:
            got += view.take_lazily(rng.choice([1, 7, 64, 1000]))
    assert got == expected
    assert len(view.take(5)) == 0 and list(view.take_lazily(5)) == [] and next(view, None) is None


def test_the_chunk_reader_takes_whole_chunks_from_the_view():
    from autopar._execute.chunking import Chunker

    order = SpreadOrder(1000, 64)
    view = order.view(list(range(1000)))
    taken = []
    take = view.take
    view.take = lambda count: taken.append(count) or take(count)  # type: ignore[method-assign]
    chunker, chunks = Chunker(view, 300), []
    while (chunk := chunker.next()) is not None:
        chunks.append(chunk)
    assert taken[:4] == [300, 300, 300, 300]
    assert [start for start, _ in chunks] == [0, 300, 600, 900]
    assert order.restore_chunks([c for _, c in chunks]) == list(range(1000))


def test_the_view_starts_with_items_from_every_part_of_the_input():
    order = SpreadOrder(1000, 256)
    first = list(order.view(range(1000)))[:16]
    assert min(first) < 100 and max(first) > 900
    assert len({x // 250 for x in first}) == 4  # every quarter of the input


def _tail_waits(x):
    # The last tenth of the input waits 10 ms an item; the rest is near-free.
    if x >= 270:
        time.sleep(0.01)
    return x * x


def test_a_costly_tail_is_measured_on_the_first_call():
    # Read as a prefix, 64 near-free items would end the probe and plan serial for 30
    # waits of 10 ms (0.3 s); spread, the probe meets the waits and overlaps them.
    f = parallel(_tail_waits)
    assert f.map(list(range(300))) == [x * x for x in range(300)]
    plan = f.last_plan
    # (About 1 ms an item in all; unseen, the tail read 4.5 us. How many waits the probe
    # met varies with the machine: a fifth of the mean is a sure sign it met them.)
    if plan.measured["wall"] > 2e-4:
        assert plan.kind == "thread", plan.explain()
    else:
        # Met, but left out of the reading: waits that ran beside a burst of near-free
        # items on the probe's other threads may have waited for the GIL, and a sample
        # is left out when both its own reading and its phase's say the process was busy
        # (calibration.item_costs). Seen once in some 40 suite runs (Python 3.9): the
        # probe had grown threads over the waits and ran every item. Read as a prefix,
        # the probe would have stopped after near-free items and run the waits serially.
        assert "all 300 items ran while measuring" in plan.reason, plan.explain()


def _fails_at_137(x):
    if x == 137:
        raise ValueError("bad item")
    return x


def test_an_error_names_the_item_by_its_index_in_the_input():
    f = parallel(_fails_at_137)
    with pytest.raises(ValueError) as info:
        f.map(list(range(300)))
    assert info.value.autopar_index == 137


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are new in 3.11")
def test_an_error_note_names_the_input_index():
    f = parallel(_fails_at_137)
    with pytest.raises(ValueError) as info:
        f.map(list(range(300)))
    assert any("item 137 " in note for note in info.value.__notes__), info.value.__notes__


def test_a_crash_reports_input_indices():
    order = SpreadOrder(10, 4)  # view: 0, 5, 2, 7, then 1, 3, 4, 6, 8, 9
    error = WorkerCrashedError("a worker process died", items=range(5, 7))
    error.partial_results = {7: "r"}
    order.fix_error(error, ["a", "b", "c"])  # view 0, 1, 2 were handed back
    assert tuple(error.items) == (3, 4)  # view 5 and 6 are input 3 and 4
    assert error.partial_results == {0: "a", 5: "b", 2: "c", 6: "r"}


@pytest.mark.parametrize("n", [3, 10, 257, 3000])
@pytest.mark.parametrize("spots", [1, 64, 256])
@pytest.mark.parametrize("cuts", [[], [1], [2, 5], [64, 65, 300], [100, 2000]])
def test_results_restore_from_chunks_cut_anywhere(n, spots, cuts):
    order = SpreadOrder(n, spots)
    items = [f"item{i}" for i in range(n)]
    view = list(order.view(items))
    edges = [0, *(c for c in cuts if c < n), n]
    chunks = [view[a:b] for a, b in zip(edges, edges[1:])]
    assert order.restore_chunks(chunks) == items
    assert order.restore_chunks([[], *chunks, []]) == items
