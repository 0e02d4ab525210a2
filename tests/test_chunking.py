"""The Chunker: fixed sizes, adaptive doubling and shrinking, the shrinking tail (no clock)."""

import types

from autopar._execute import chunking
from autopar._execute.chunking import (
    MAX_ADAPTIVE_CHUNK,
    MAX_CHUNK_BYTES,
    TARGET_CHUNK_SECONDS,
    Chunker,
)
from autopar._execute.worker import ChunkResult

FAST = TARGET_CHUNK_SECONDS / 10  # a chunk's wall time well under the target
MiB = 2**20


def chunks(chunker):
    """Every (start, items) the chunker hands out, until it returns None."""
    out = []
    while (chunk := chunker.next()) is not None:
        out.append(chunk)
    return out


def done(results, wall=FAST):
    """A worker's report on a chunk that ran without failure."""
    return ChunkResult(list(results), wall, wall, None)


def test_fixed_size_chunks_cover_the_input_in_order():
    assert chunks(Chunker(iter(range(10)), 3)) == [
        (0, [0, 1, 2]),
        (3, [3, 4, 5]),
        (6, [6, 7, 8]),
        (9, [9]),
    ]


def test_an_input_that_ends_on_a_chunk_boundary_ends_with_no_empty_chunk():
    chunker = Chunker(range(6), 3)
    assert chunks(chunker) == [(0, [0, 1, 2]), (3, [3, 4, 5])]
    assert chunker.exhausted
    assert chunker.next() is None  # asked again: still nothing


def test_indices_count_from_start():
    # The rest of an input whose first 100 items the probe already ran.
    chunker = Chunker(iter("abcde"), 2, start=100)
    assert chunks(chunker) == [(100, ["a", "b"]), (102, ["c", "d"]), (104, ["e"])]
    assert chunker.next_index == 105


def test_the_input_is_read_one_chunk_at_a_time():
    items = iter(range(100))
    chunker = Chunker(items, 4)
    assert chunker.next() == (0, [0, 1, 2, 3])
    assert next(items) == 4  # nothing beyond the chunk was read


def test_a_fixed_size_ignores_what_chunks_cost():
    chunker = Chunker(range(100), 5)
    assert not chunker.adaptive
    chunker.next()
    chunker.observe(done(range(5)), 5)
    assert chunker.size == 5
    chunker.observe(done([bytes(MAX_CHUNK_BYTES)]), 5)  # far over the byte cap
    assert chunker.size == 5


def test_an_open_size_starts_at_one_item_and_doubles_while_chunks_are_fast():
    chunker = Chunker(iter(range(100)), None)
    assert chunker.adaptive and chunker.size == 1
    sizes = []
    while (chunk := chunker.next()) is not None:
        sizes.append(len(chunk[1]))
        chunker.observe(done(chunk[1]), len(chunk[1]))
    assert sizes == [1, 2, 4, 8, 16, 32, 37]  # the last one is what was left


def test_an_open_size_stops_doubling_at_the_target_time():
    chunker = Chunker(iter(range(100)), None)
    chunker.observe(done([0]), 1)
    assert chunker.size == 2
    chunker.observe(done([0, 1], wall=TARGET_CHUNK_SECONDS), 2)  # slow enough
    assert chunker.size == 2


def test_a_short_chunk_does_not_double_the_size():
    # A chunk with fewer items than the size (the end of the input) says little.
    chunker = Chunker(iter(range(100)), None)
    chunker.observe(done([0]), 1)
    chunker.observe(done([0]), 1)
    assert chunker.size == 2


def test_an_open_size_never_passes_the_adaptive_cap():
    chunker = Chunker(iter(range(100)), None)
    for _ in range(20):  # 2**20 items, had nothing capped it
        chunker.observe(done([0]), chunker.size)
    assert chunker.size == MAX_ADAPTIVE_CHUNK


def test_a_chunk_far_past_the_target_shrinks_to_what_fills_it():
    # 64 cheap items, then items 20x the target each: the next chunk holds about one
    # target's work (so a watcher hears of the change soon), not half of 64 items.
    chunker = Chunker(iter(range(1000)), None)
    for _ in range(6):
        chunker.observe(done([0] * chunker.size), chunker.size)
    assert chunker.size == 64
    chunker.observe(done([0] * 64, wall=64 * TARGET_CHUNK_SECONDS / 4), 64)  # 4 a target
    assert chunker.size == 4
    chunker.observe(done([0] * 4, wall=4 * 20 * TARGET_CHUNK_SECONDS), 4)
    assert chunker.size == 1  # never below one item
    # Just past the target is not far past it: the size holds.
    chunker = Chunker(iter(range(1000)), None)
    chunker.observe(done([0]), 1)
    chunker.observe(done([0, 1], wall=2 * TARGET_CHUNK_SECONDS), 2)
    assert chunker.size == 2


def test_results_over_the_byte_cap_halve_the_size():
    chunker = Chunker(iter(range(100)), None)
    for _ in range(3):
        chunker.observe(done([0]), chunker.size)
    assert chunker.size == 8
    chunker.observe(done([bytes(MAX_CHUNK_BYTES)]), 8)
    assert chunker.size == 4
    for _ in range(3):
        chunker.observe(done([bytes(MAX_CHUNK_BYTES)]), 1)
    assert chunker.size == 1  # never below one item


def test_results_near_the_byte_cap_hold_the_size():
    # Doubling them would pass the cap.
    chunker = Chunker(iter(range(100)), None)
    chunker.observe(done([0]), 1)
    chunker.observe(done([bytes(MAX_CHUNK_BYTES // 2)]), 2)
    assert chunker.size == 2


def test_items_over_the_byte_cap_halve_the_size_as_they_are_read():
    blob = bytes(MiB)
    items = iter([0] * 7 + [blob] * 8 + [0] * 100)
    chunker = Chunker(items, None)
    for _ in range(3):  # tiny items: 1, 2, 4
        _, chunk = chunker.next()
        chunker.observe(done(chunk), len(chunk))
    assert chunker.size == 8
    assert chunker.next() == (7, [blob] * 8)  # 8 MiB read: over the cap
    assert chunker.size == 4


def test_items_near_the_byte_cap_keep_the_size_from_doubling():
    blob = bytes(MiB)
    items = iter([0] * 3 + [blob] * 2 + [0] * 100)
    chunker = Chunker(items, None)
    for _ in range(2):  # tiny items: 1, 2
        _, chunk = chunker.next()
        chunker.observe(done(chunk), len(chunk))
    assert chunker.size == 4
    assert chunker.next() == (3, [blob, blob, 0, 0])  # 2 MiB: half the cap
    chunker.observe(done([0] * 4), 4)  # small, fast results
    assert chunker.size == 4  # ... but items twice as large would pass the cap
    _, chunk = chunker.next()  # tiny items again
    chunker.observe(done(chunk), len(chunk))
    assert chunker.size == 8


def test_chunks_shrink_near_the_end_of_a_known_length():
    # 100 items, 2 workers, chunks of 16: once fewer than 2 x 2 x 16 items are left,
    # chunks hold a quarter of what is left (rounded up), never less than 16 // 8 = 2.
    chunker = Chunker(range(100), 16, shrink_tail=(100, 2))
    got = chunks(chunker)
    # (items left before each chunk: 100, 84, 68, 52, 39, 29, 21, 15, 11, 8, 6, 4, 2)
    assert [len(c) for _, c in got] == [16, 16, 16, 13, 10, 8, 6, 4, 3, 2, 2, 2, 2]
    assert [x for _, c in got for x in c] == list(range(100))
    assert [s for s, _ in got] == [sum(len(c) for _, c in got[:i]) for i in range(len(got))]


def test_the_shrinking_tail_counts_from_the_start_index():
    # 40 items left of 100 (the probe ran the first 60): a quarter of 40 at once.
    chunker = Chunker(range(60, 100), 16, start=60, shrink_tail=(100, 2))
    assert chunker.next() == (60, list(range(60, 70)))


def test_chunks_far_from_the_end_keep_their_size():
    chunker = Chunker(range(10_000), 16, shrink_tail=(10_000, 2))
    assert [len(chunker.next()[1]) for _ in range(10)] == [16] * 10


def test_footprint_scales_a_sample_to_the_whole_chunk(monkeypatch):
    assert chunking._footprint([]) == 0
    # Every item is sized the same here: the sample's mean times the count.
    monkeypatch.setattr(chunking, "sys", types.SimpleNamespace(getsizeof=lambda value: 10))
    assert chunking._footprint(list(range(1000))) == 10_000


def test_an_input_with_a_take_method_of_its_own_is_read_item_by_item():
    # Only autopar's own chunk sources are read by take(): a user's stream may have a
    # method of that name that means something else.
    class Stream:
        def __init__(self):
            self._items = iter(range(10))

        def __iter__(self):
            return self

        def __next__(self):
            return next(self._items)

        def take(self, count):
            return ["not an item"] * count

    chunker, chunks = Chunker(Stream(), 4), []
    while (chunk := chunker.next()) is not None:
        chunks.append(chunk[1])
    assert chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def _lags(f, count):
    """How far the input was read ahead of each item as it ran, for ``f.imap``."""
    yielded, lags = [], []

    def source():
        for i in range(count):
            yielded.append(i)
            yield i

    def work(x):
        lags.append(len(yielded) - x)
        return x

    assert list(f(work).imap(source())) == list(range(count))
    return lags


def test_serial_chunks_read_each_item_only_as_it_runs():
    # A serial plan runs its chunks in the caller's thread at once: they are read from the
    # input as they run, never gathered into a list first (a stream of large items would
    # be held a chunk at a time, and cheap items cost a copy each).
    from autopar import parallel

    assert max(_lags(lambda fn: parallel(fn, kind="serial"), 20_000)) == 1
    # Under auto, past the items the probe read ahead: near-free items run serially.
    assert max(_lags(parallel, 20_000)[1_000:]) == 1


def _fails_at_5000(x):
    if x == 5000:
        raise ValueError(x)
    return x


def test_serial_chunks_that_share_one_list_keep_each_chunks_index_and_results():
    # An eager serial run appends every chunk's results to one list (no copy per chunk):
    # the results come back once, in order, and a failure names its item's own index.
    import pytest

    from autopar._config import Config
    from autopar._execute.executor import Call, run_inline_chunks

    def call(fn, n):
        return Call(fn, fn, Config(), iter(range(n)), n, ordered=True, star=False, eager=True)

    seen = []
    ok = call(abs, 5_000)
    out = list(
        run_inline_chunks(
            ok, Chunker(ok.items, None), on_chunk=lambda r, n: seen.append(n), stop_after=None
        )
    )
    assert out == [list(range(5_000))]  # one list, handed out once
    assert len(seen) > 5 and sum(seen) == 5_000  # ... though watched chunk by chunk
    bad = call(_fails_at_5000, 10_000)
    with pytest.raises(ValueError) as raised:
        list(run_inline_chunks(bad, Chunker(bad.items, None), on_chunk=None, stop_after=None))
    assert raised.value.autopar_index == 5000
