"""The caller's pool of segments: reused only when given back clean, idle bytes within
the cap, nothing left after close()."""

from __future__ import annotations

import os

import pytest

from autopar._execute import segment_pool, shared_memory
from autopar._execute.segment_pool import SegmentPool

KIB = 1024


def _parts(*sizes: int, fill: int = 1) -> list[memoryview]:
    return [memoryview(bytes([fill]) * n) for n in sizes]


def _read(name: str, size: int) -> bytes:
    return shared_memory.read(name, size, bytes)


@pytest.fixture
def pool():
    made = SegmentPool(64)
    yield made
    made.close()
    assert shared_memory.owned() == []


def test_a_segment_given_back_clean_is_lent_again_with_the_new_bytes(pool):
    first = pool.lend(_parts(100 * KIB, fill=1))
    pool.give_back(first, reuse=True)
    second = pool.lend(_parts(90 * KIB, 3 * KIB, fill=2))
    assert second == first
    data = _read(second, 96 * KIB)
    assert data[: 90 * KIB] == b"\2" * (90 * KIB)
    assert data[90 * KIB : 90 * KIB + 3 * KIB] == b"\2" * (3 * KIB)  # (90 KiB: aligned)


def test_a_segment_given_back_unclean_is_unlinked(pool):
    name = pool.lend(_parts(100 * KIB))
    pool.give_back(name, reuse=False)
    assert not os.path.exists(f"/dev/shm/{name}")
    assert pool.lend(_parts(100 * KIB)) != name


def test_a_lent_segment_is_never_lent_twice(pool):
    names = {pool.lend(_parts(100 * KIB)) for _ in range(3)}
    assert len(names) == 3


def test_idle_segments_stay_within_the_cap(pool):
    pool.cap = 1024 * KIB
    names = [pool.lend(_parts(300 * KIB)) for _ in range(6)]  # 6 x 320 KiB (a size class)
    for name in names:
        pool.give_back(name, reuse=True)
        assert pool.idle_bytes() <= pool.cap
    assert pool.idle_bytes() > 0
    assert len(shared_memory.owned()) == pool.idle_bytes() // segment_pool.size_class(300 * KIB)


def test_size_classes_waste_at_most_an_eighth():
    for size in (1, 64 * KIB + 1, 300 * KIB, 5 * 2**20 + 7, 119 * 2**20):
        made = segment_pool.size_class(size)
        assert size <= made <= size + max(segment_pool._MIN_CLASS, size // 8)


def test_a_closed_pool_lends_nothing_it_keeps(pool):
    name = pool.lend(_parts(100 * KIB))
    pool.close()
    assert not os.path.exists(f"/dev/shm/{name}")
    pool.give_back(name, reuse=True)  # (a chunk that ends after the pool stopped)
    assert pool.lend(_parts(100 * KIB)) is None
    assert shared_memory.owned() == []


def test_segments_are_private(pool):
    name = pool.lend(_parts(100 * KIB))
    assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o600
