"""A worker's kept mappings: a segment written again shows its new bytes, an item still
viewed is reported, a segment the caller unlinked is dropped."""

from __future__ import annotations

import pickle

import pytest

from autopar._execute import item_mappings, shared_buffers, shared_memory

np = pytest.importorskip("numpy")


@pytest.fixture(autouse=True)
def _empty():
    yield
    for name in list(item_mappings._kept):
        item_mappings.release(name, [], keep=False)
    for name in shared_memory.owned():
        shared_memory.unlink(name)


def _ship(segment, arrays):
    """Write ``arrays`` into ``segment`` as the caller does; the Shipped a chunk carries."""
    keeper = shared_buffers.Keeper(1)
    marked = shared_buffers.wrap_flat(arrays, 1, star=False) or arrays  # (memoryviews)
    data = pickle.dumps(marked, protocol=5, buffer_callback=keeper)
    sizes = [b.nbytes for b in keeper.kept]
    starts = shared_memory.offsets(sizes, shared_buffers.ALIGN)
    for start, part in zip(starts, keeper.kept):
        segment.mapped[start : start + part.nbytes] = part
    return shared_buffers.Shipped(data, segment.name, tuple(zip(starts, sizes)))


def _segment(size=1 << 16):
    return shared_memory.create_mapped([memoryview(b"\0")], [0], size)


def test_a_kept_mapping_shows_what_the_caller_wrote_since():
    segment = _segment()
    for fill in (1.0, 2.0):
        items, slices = item_mappings.load(_ship(segment, [np.full(1000, fill)]))
        assert items[0].tolist() == [fill] * 1000
        items[0][:] = -1  # a worker may write to its copy
        del items
        assert item_mappings.release(segment.name, slices, keep=True)
        assert segment.name in item_mappings._kept


def test_an_item_still_viewed_is_reported_and_its_mapping_dropped():
    segment = _segment()
    items, slices = item_mappings.load(_ship(segment, [np.zeros(100), memoryview(b"x" * 99)]))
    kept = items[1]
    del items
    assert not item_mappings.release(segment.name, slices, keep=True)
    assert segment.name not in item_mappings._kept
    assert bytes(kept) == b"x" * 99  # (the view stays valid)


def test_a_segment_the_caller_unlinked_is_dropped_at_the_next_chunk():
    first, second = _segment(), _segment()
    items, slices = item_mappings.load(_ship(first, [np.zeros(100)]))
    del items
    assert item_mappings.release(first.name, slices, keep=True)
    shared_memory.unlink(first.name)
    items, slices = item_mappings.load(_ship(second, [np.zeros(100)]))
    del items
    item_mappings.release(second.name, slices, keep=True)
    assert list(item_mappings._kept) == [second.name]
