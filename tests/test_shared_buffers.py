"""Large buffers reach process workers, and come back, through shared memory: results equal
serial ones, the caller's arrays never change, no segment outlives its call."""

from __future__ import annotations

import os
import pickle
import signal
import time

import pytest

import autopar
from autopar import parallel
from autopar._execute import segment_pool, shared_buffers, shared_memory
from tests import buffer_helpers
from tests.conftest import python_in_own_group, run_python, shm_segments

np = pytest.importorskip("numpy")

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("no_segments_left")]

BIG = shared_buffers.MAX_SHARED  # bytes: over any threshold a machine can measure


@pytest.fixture
def created(monkeypatch):
    """The sizes of the parts of every segment a chunk borrows (new or reused)."""
    sizes: list[list[int]] = []
    real = segment_pool.SegmentPool.lend

    def spy(self, parts):
        sizes.append([memoryview(p).nbytes for p in parts])
        return real(self, parts)

    shared_buffers.threshold()  # (measured first: the measurement makes segments of its own)
    monkeypatch.setattr(segment_pool.SegmentPool, "lend", spy)
    return sizes


def _big(dtype: str, n: int = BIG) -> object:
    count = max(4, -(-n // np.dtype(dtype).itemsize))  # (at least n bytes, whatever the itemsize)
    return (np.arange(count) % 251).astype(dtype)


DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "datetime64[ns]",
    "timedelta64[s]",
    [("a", "i4"), ("b", "f8"), ("c", "S3")],
]


def _equal(a, b) -> bool:
    return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and (a == b).all()


def _process(fn):
    return parallel(kind="process", workers=2)(fn)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_arrays_of_every_dtype_come_back_equal(dtype, created):
    arrays = [_big(dtype) for _ in range(4)]
    out = _process(buffer_helpers.same).map(arrays, chunksize=2)
    assert all(_equal(a, b) for a, b in zip(arrays, out))
    assert created, "large arrays were sent through the pipe"


@pytest.mark.parametrize(
    "shape",
    [
        lambda a: a[::3],  # a step
        lambda a: a.reshape(512, -1).T,  # a transpose
        lambda a: np.asfortranarray(a.reshape(512, -1)),  # Fortran order
        lambda a: a.reshape(512, -1)[::2, 1::3],  # steps in two dimensions
    ],
    ids=["step", "transpose", "fortran", "2d-steps"],
)
def test_non_contiguous_arrays_as_items_and_results(shape):
    arrays = [shape(np.arange(BIG // 8, dtype="float64") + i) for i in range(4)]
    for fn in (buffer_helpers.same, buffer_helpers.negated_view):
        serial = [fn(a) for a in arrays]
        out = _process(fn).map(arrays, chunksize=2)
        assert all(_equal(a, b) for a, b in zip(serial, out))


def test_flat_items_keep_their_type_and_bytes(created):
    items = [
        b"a" * BIG,
        bytearray(b"b" * BIG),
        memoryview(b"c" * BIG),
        memoryview(np.arange(BIG // 8, dtype="int64")),  # a format and a shape of its own
        b"small",
        memoryview(b"tiny"),
    ]
    out = _process(buffer_helpers.describe).map(items, chunksize=6)
    assert out == [buffer_helpers.describe(x) for x in items]
    assert [len(parts) for parts in created] == [4]


def test_flat_star_arguments_and_results(created):
    pairs = [(b"x" * BIG, np.full(BIG // 8, i)) for i in range(4)]
    out = parallel(kind="process", workers=2)(buffer_helpers.pair).starmap(pairs, chunksize=2)
    assert [(a, b.tolist()) for a, b in out] == [(a, b.tolist()) for a, b in pairs]
    assert [len(parts) for parts in created] == [4, 4]
    out = _process(buffer_helpers.same).map([bytearray(b"r" * BIG)] * 3)
    assert out == [bytearray(b"r" * BIG)] * 3 and type(out[0]) is bytearray


def test_a_worker_cannot_change_the_callers_array():
    arrays = [np.arange(BIG // 8, dtype="float64") + i for i in range(4)]
    before = [a.copy() for a in arrays]
    sums = _process(buffer_helpers.scramble).map(arrays, chunksize=2)
    assert sums == [float(a.sum()) for a in before]
    assert all((a == b).all() for a, b in zip(arrays, before))


def test_a_worker_may_write_to_its_flat_copies():
    items = [bytearray(b"a" * BIG), memoryview(bytearray(b"b" * BIG))]
    assert _process(buffer_helpers.overwrite).map(items) == [BIG, BIG]
    assert items[0][:1] == b"a" and items[1][:1] == b"b"


def test_results_are_writable_and_their_segments_go_at_once():
    out = _process(buffer_helpers.same).map([np.zeros(BIG // 8)] * 4, chunksize=1)
    out[0][0] = 1.0  # a private copy, not a read-only view of a segment
    # Before shutdown: collected results' segments are gone; what is left is the caller's
    # own, idle in the backend's pool for the next chunks.
    assert not [n for n in shm_segments() if "_r" in n]
    assert set(shm_segments()) == set(shared_memory.owned())


def test_small_buffers_never_make_a_segment(created):
    threshold = shared_buffers.threshold()
    small = [np.zeros(threshold // 8 - 16), b"x" * (threshold - 100), bytearray(10)]
    out = _process(buffer_helpers.same).map(small * 3, chunksize=3)
    assert len(out) == 9 and created == []


def test_the_threshold_lies_in_its_range():
    assert shared_buffers.MIN_SHARED <= shared_buffers.threshold() <= shared_buffers.MAX_SHARED
    assert shared_buffers.copy_seconds_per_byte() > 0


def test_segments_are_private(monkeypatch):
    modes = []
    real = shared_memory.create_mapped

    def spy(*args):
        made = real(*args)
        modes.append(os.stat(f"/dev/shm/{made.name}").st_mode & 0o777)
        return made

    shared_buffers.threshold()
    monkeypatch.setattr(shared_memory, "create_mapped", spy)
    _process(buffer_helpers.same).map([np.zeros(BIG // 8)] * 2)
    assert modes and set(modes) == {0o600}


def test_a_result_segment_is_private():
    name = shared_buffers.result_name()
    create = shared_buffers.create_returned(name)
    assert create([memoryview(b"x" * 100)]) == name
    try:
        assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o600
        shipped = shared_buffers.Shipped(pickle.dumps(None), name, ((0, 100),))
        assert shared_buffers.load(shipped, unlink=True) is None
    finally:
        shared_buffers.sweep(name)
    assert not os.path.exists(f"/dev/shm/{name}")


@pytest.fixture
def given_back(monkeypatch):
    """(name, reuse) of every segment a chunk gives back to its backend's pool."""
    calls: list[tuple[str, bool]] = []
    real = segment_pool.SegmentPool.give_back

    def spy(self, name, *, reuse):
        calls.append((name, reuse))
        return real(self, name, reuse=reuse)

    monkeypatch.setattr(segment_pool.SegmentPool, "give_back", spy)
    return calls


def test_reused_segments_never_mix_one_chunks_bytes_into_another(created, monkeypatch):
    made = []
    real = shared_memory.create_mapped
    monkeypatch.setattr(shared_memory, "create_mapped", lambda *a: made.append(1) or real(*a))
    # Sizes that differ, so that a segment is lent to chunks larger and smaller than the
    # one before; each array's first element says which it is.
    arrays = [np.full(BIG // 8 + 4096 * (i % 5), i, dtype="float64") for i in range(24)]
    expected = [buffer_helpers.checksum(a) for a in arrays]
    f = _process(buffer_helpers.checksum)
    for _ in range(2):  # the second call borrows segments the first gave back
        assert f.map(arrays, chunksize=1) == expected
        assert f.map(arrays[::-1], chunksize=2) == expected[::-1]
    assert len(created) == 72 and len(made) < len(created) / 4, "segments were not reused"


def test_a_workers_writes_never_reach_the_next_chunk_in_its_segment():
    arrays = [np.full(BIG // 8, i + 1, dtype="float64") for i in range(8)]
    f = _process(buffer_helpers.scramble)  # zeroes each array it gets
    for _ in range(2):
        assert f.map(arrays, chunksize=2) == [float(a.sum()) for a in arrays]


@pytest.mark.parametrize("kind", ["ndarray", "memoryview"])
def test_a_segment_a_worker_still_views_is_unlinked_not_reused(given_back, kind):
    items = _arrays(4) if kind == "ndarray" else [memoryview(a) for a in _arrays(4)]
    assert _process(buffer_helpers.keep).map(items, chunksize=1) == [
        float(np.asarray(a).sum()) for a in items
    ]
    assert len(given_back) == 4 and not any(reuse for _, reuse in given_back)
    assert shm_segments() == []  # before shutdown: none went back to the pool


def test_a_failed_chunks_segment_is_unlinked_not_reused(given_back):
    with pytest.raises(ValueError, match="second array"):
        _process(buffer_helpers.fail_on_second).map(_arrays(2), chunksize=1)
    unclean = [name for name, reuse in given_back if not reuse]
    assert unclean and not any(os.path.exists(f"/dev/shm/{n}") for n in unclean)


def _arrays(n: int = 6) -> list:
    return [np.full(BIG // 8, i, dtype="float64") for i in range(n)]


def test_no_segment_is_left_after_an_item_raises():
    with pytest.raises(ValueError, match="second array"):
        _process(buffer_helpers.fail_on_second).map(_arrays(), chunksize=1)
    autopar.shutdown()
    assert shm_segments() == []


def test_no_segment_is_left_after_a_timeout():
    with pytest.raises(autopar.AutoparTimeoutError):
        _process(buffer_helpers.slow).map(_arrays(4), chunksize=1, timeout=2)
    assert shm_segments() == []


def test_no_segment_is_left_after_a_worker_dies():
    with pytest.raises(autopar.WorkerCrashedError):
        _process(buffer_helpers.die_on_second).map(_arrays(), chunksize=1)
    autopar.shutdown()
    assert shm_segments() == []


def test_chunks_left_behind_free_their_results():
    results = _process(buffer_helpers.same).imap(_arrays(8), chunksize=1)
    assert (next(results) == 0).all()
    results.close()  # the caller stops early: chunks in flight are never collected
    autopar.shutdown()
    assert shm_segments() == []


INTERRUPTED = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import numpy as np
from autopar import parallel
from tests import buffer_helpers
f = parallel(kind="process", workers=2)(buffer_helpers.slow)
print(os.getpid(), flush=True)
try:
    f.map([np.full(1 << 19, i, dtype="float64") for i in range(4)], chunksize=1)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_no_segment_is_left_after_ctrl_c():
    with python_in_own_group(INTERRUPTED) as proc:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        deadline = time.monotonic() + 30
        while not shm_segments(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # the chunks are on their way
        assert shm_segments(pid), "no chunk went through shared memory"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert "interrupted" in out, err
    assert proc.returncode == 0, err
    assert shm_segments(pid) == []


def test_no_segment_is_left_when_the_program_is_killed():
    code = """
        import os, signal
        import numpy as np
        from autopar import parallel
        from tests import buffer_helpers
        f = parallel(kind="process", workers=2)(buffer_helpers.same)
        f.map([np.zeros(1 << 19)] * 4)
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    pid = int(run_python(code).stdout.split()[0])
    deadline = time.monotonic() + 20
    while shm_segments(pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # the resource tracker unlinks once every holder has gone
    assert shm_segments(pid) == []


def test_shared_buffers_are_priced_at_the_copy_rate_without_the_pipe():
    from autopar._auto import calibration

    array = np.zeros(4 << 20, dtype="uint8")
    dump, load, pipe_bytes = calibration._pickle_cost(array)
    copy = array.nbytes * shared_buffers.copy_seconds_per_byte()
    assert (dump, load, pipe_bytes) == (copy, copy, 0)
    piped = calibration._pickle_cost(array[::2])  # not contiguous: pickled, piped
    assert piped[2] == array.nbytes // 2
    _, caller, worker = calibration._item_costs((array, 7))
    dump_rate, _ = calibration._buffer_rates()
    by_pipe = array.nbytes * (dump_rate + 1 / calibration.PIPE_BYTES_PER_SECOND)
    assert caller < by_pipe and worker < by_pipe


def test_the_threshold_is_measured_only_once_a_large_buffer_travels():
    # Measuring it holds the caller's GIL for tens of milliseconds: a pool's first chunks
    # of small items must not pay that (nor the call beside a pool starting).
    result = run_python(
        """
        from autopar import parallel
        from autopar._execute import shared_buffers

        if __name__ == "__main__":
            f = parallel(len, kind="process", workers=2)
            assert f.map([b"x" * i for i in range(100)]) == list(range(100))
            print("small", shared_buffers.known())
            assert f.map([bytes(1 << 20)] * 2) == [1 << 20] * 2
            print("large", shared_buffers.known())
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["small", "False", "large", "True"]
