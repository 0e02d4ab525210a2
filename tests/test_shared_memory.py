"""Large functions reach process workers through shared memory, once per worker."""

from __future__ import annotations

import functools
import os
import pickle
import time

import pytest

import autopar
from autopar import parallel
from autopar._execute import shared_memory
from autopar._execute.worker import function_name
from tests import helpers
from tests.conftest import run_python, shm_segments

BIG = 256 * 1024  # over SHARED_FUNCTION: such a function travels through shared memory

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_segments_left")]


def test_a_segment_is_private_and_read_back_whole():
    name = shared_memory.create(b"x" * 1000)
    try:
        assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o600
        assert shared_memory.read(name, 1000, bytes) == b"x" * 1000
    finally:
        shared_memory.unlink(name)
    assert name not in shared_memory.owned()


def _ref(shipped, data):
    return shipped.ref((data,))


def test_equal_payloads_share_one_segment_and_idle_ones_are_dropped():
    shipped = shared_memory.SharedFunctions()
    first = _ref(shipped, b"a" * 100)
    assert _ref(shipped, b"a" * 100).name == first.name
    assert _ref(shipped, b"b" * 100).name != first.name
    del first
    for i in range(shared_memory.KEEP_FUNCTIONS + 2):
        _ref(shipped, bytes([i]) * 100)
    assert len(shipped.names()) == shared_memory.KEEP_FUNCTIONS
    shipped.close()
    assert shipped.names() == []


def test_a_segment_in_use_is_kept_past_the_limit():
    shipped = shared_memory.SharedFunctions()
    held = _ref(shipped, b"held" * 100)
    for i in range(shared_memory.KEEP_FUNCTIONS + 2):
        _ref(shipped, bytes([i]) * 100)
    assert held.name in shipped.names()
    shipped.close()


def test_a_pickle_in_pieces_is_written_whole_and_matched_piece_by_piece():
    shipped = shared_memory.SharedFunctions()
    ref = shipped.ref((b"ab", b"cd", b"e"))
    try:
        assert shared_memory.read(ref.name, ref.size, bytes) == b"abcde"
        assert ref.size == 5 and shipped.ref((b"ab", b"cd", b"e")).name == ref.name
        assert shipped.ref((b"ab", b"cx", b"e")).name != ref.name
    finally:
        shipped.close()


def test_a_function_ref_pickles_to_its_name_only():
    ref = shared_memory.FunctionRef("autopar_1_ab", 123)
    back = pickle.loads(pickle.dumps(ref))
    assert (back.name, back.size) == ("autopar_1_ab", 123)
    assert len(pickle.dumps(ref)) < 200


def test_a_large_function_is_unpickled_once_per_worker(tmp_path):
    log = tmp_path / "unpickled"
    table = helpers.Table(str(log), bytes(range(256)) * (BIG // 256))
    f = parallel(functools.partial(helpers.look_up, table), kind="process", workers=2)
    for _ in range(3):
        assert f.map(range(200), chunksize=1) == [i % 256 for i in range(200)]
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)), f"a worker unpickled the function twice: {pids}"
    assert str(os.getpid()) not in pids


def test_a_changed_function_is_shipped_again(tmp_path):
    table = bytearray(BIG)
    f = parallel(functools.partial(helpers.look_up, table), kind="process", workers=2)
    assert f.map(range(10)) == [0] * 10
    table[:10] = bytes(range(1, 11))
    assert f.map(range(10)) == list(range(1, 11))


def test_segments_are_unlinked_when_the_pool_stops():
    f = parallel(functools.partial(helpers.look_up, bytes(BIG)), kind="process", workers=2)
    f.map(range(10))
    assert len(shm_segments()) == 1
    autopar.shutdown()
    assert shm_segments() == []


def test_segments_are_unlinked_after_a_worker_crash():
    big = functools.partial(helpers.die_on, bad=3, how="exit")
    carrier = functools.partial(_call_with_ballast, big, bytes(BIG))
    with pytest.raises(autopar.WorkerCrashedError):
        parallel(carrier, kind="process", workers=2).map(range(10), chunksize=1)
    autopar.shutdown()
    assert shm_segments() == []


def _call_with_ballast(fn, ballast, x):
    return fn(x)


def test_segments_go_when_the_program_is_killed():
    code = f"""
        import functools, os, signal, sys
        from autopar import parallel
        from tests import helpers
        f = parallel(functools.partial(helpers.look_up, bytes({BIG})), kind="process")
        f.map(range(10))
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    done = run_python(code)
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 20
    while shm_segments(pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # the resource tracker unlinks once every holder has gone
    assert shm_segments(pid) == []


def test_function_names_never_use_repr():
    class Loud:
        def __repr__(self):
            raise AssertionError("repr called")

        def __call__(self, x):
            return x

    assert function_name(functools.partial(Loud(), 1)).endswith("Loud object>)")
    assert function_name(helpers.square) == "square"


def test_warming_a_pool_for_later_loads_a_large_function_into_its_workers(tmp_path):
    from autopar._auto import pool_costs
    from autopar._config import Config

    log = tmp_path / "unpickled"
    table = helpers.Table(str(log), bytes(BIG))
    fn = functools.partial(helpers.look_up, table)
    pool_costs.warm_process_pool(Config(), 2, record_start=False, load=fn)
    primed = log.read_text().split()
    assert primed and str(os.getpid()) not in primed
    assert parallel(fn, kind="process", workers=2).map(range(50)) == [0] * 50
    loads = log.read_text().split()
    assert len(loads) == len(set(loads)), f"a primed worker loaded the function again: {loads}"


def test_a_function_s_buffers_lie_apart_in_its_segment_and_are_matched_by_content():
    shipped = shared_memory.SharedFunctions()
    data = bytearray(b"w" * 100_000)
    buffers = [memoryview(data)]
    ref = shipped.ref((b"pickle", b"!"), buffers)
    try:
        ((offset, size),) = ref.layout
        assert ref.size == 7 and offset % shared_memory.ALIGN == 0 and offset >= 7
        assert size == len(data)
        assert shared_memory.read(ref.name, offset + size, bytes)[offset:] == data
        assert shipped.ref((b"pickle", b"!"), buffers).name == ref.name
        data[-1:] = b"x"  # changed in place, same size: a segment of its own
        changed = shipped.ref((b"pickle", b"!"), buffers)
        assert changed.name != ref.name
        assert shared_memory.read(changed.name, offset + size, bytes)[-1:] == b"x"
        assert shipped.ref((b"pickle", b"!"), [memoryview(data)[:-1]]).name not in (
            ref.name,
            changed.name,
        )
    finally:
        shipped.close()


def test_a_function_ref_keeps_its_buffers_layout_through_a_pickle():
    ref = shared_memory.FunctionRef("autopar_1_ab", 123, ((128, 4096),))
    assert pickle.loads(pickle.dumps(ref)).layout == ((128, 4096),)


@pytest.mark.parametrize("dtype", ["float32", "int64", "complex128", "bool", "uint8"])
def test_a_worker_maps_the_arrays_a_function_carries_instead_of_copying_them(dtype):
    np = pytest.importorskip("numpy")
    weights = (np.arange(BIG) % 7).astype(dtype)
    f = parallel(functools.partial(helpers.where_held, weights), kind="process", workers=2)
    held = f.map(range(0, weights.nbytes, weights.nbytes // 8), chunksize=1)
    assert [value for _, _, value in held] == [
        helpers.where_held(weights, i)[2] for i in range(0, weights.nbytes, weights.nbytes // 8)
    ]
    homes = {home for home, _, _ in held}
    assert len(homes) == 1 and homes.pop().startswith(f"/dev/shm/{shared_memory.PREFIX}")
    assert all(writable for _, writable, _ in held)


def test_a_function_s_non_contiguous_array_travels_in_its_pickle():
    np = pytest.importorskip("numpy")
    weights = (np.arange(BIG) % 251).astype("int32").reshape(-1, 4)[:, ::2]
    f = parallel(functools.partial(helpers.where_held, weights), kind="process", workers=2)
    held = f.map(range(0, 64, 4), chunksize=1)
    assert [value for _, _, value in held] == [
        helpers.where_held(weights, i)[2] for i in range(0, 64, 4)
    ]
    assert not any(home.startswith("/dev/shm/") for home, _, _ in held)  # (copied)


def test_a_buffer_that_pickles_out_of_band_is_mapped_without_numpy_too():
    weights = helpers.Weights(bytearray(range(256)) * (BIG // 256))
    f = parallel(functools.partial(helpers.where_held, weights), kind="process", workers=2)
    held = f.map(range(0, BIG, BIG // 4), chunksize=1)
    assert [value for _, _, value in held] == [i % 256 for i in range(0, BIG, BIG // 4)]
    assert all(home.startswith(f"/dev/shm/{shared_memory.PREFIX}") for home, _, _ in held)


def test_a_worker_s_writes_to_a_mapped_array_stay_its_own():
    np = pytest.importorskip("numpy")
    weights = np.zeros(BIG // 8)
    f = parallel(functools.partial(helpers.bump_first, weights), kind="process", workers=2)
    bumped = f.map(range(20), chunksize=1)
    # Each worker counts up its own copy-on-write page from 0 (1, 2, 3, ... in each, however
    # the items were shared out); the caller's stays 0.
    assert min(bumped) == 1 and weights[0] == 0
    assert all(bumped.count(n) <= bumped.count(n - 1) for n in set(bumped) - {1}), bumped
    # A read-only array stays read-only in the workers.
    weights.flags.writeable = False
    f = parallel(functools.partial(helpers.where_held, weights), kind="process", workers=2)
    assert {writable for _, writable, _ in f.map(range(4), chunksize=1)} == {False}


def test_an_array_changed_in_place_reaches_the_workers_on_the_next_call():
    np = pytest.importorskip("numpy")
    weights = np.zeros(BIG, dtype="uint8")
    f = parallel(functools.partial(helpers.look_up, weights), kind="process", workers=2)
    assert f.map(range(4), chunksize=1) == [0] * 4
    weights[:4] = [5, 6, 7, 8]
    assert f.map(range(4), chunksize=1) == [5, 6, 7, 8]
    assert len(shm_segments()) == 2  # (the first is kept for a while: see KEEP_FUNCTIONS)
