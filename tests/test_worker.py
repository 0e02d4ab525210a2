"""What runs in a worker: run_chunk, and the process entry point run_chunk_pickled, called
here in the test's own process (no pool)."""

import pickle
import threading
import time
import types

import pytest

from autopar import AutoparTimeoutError, PicklingFailedError, RemoteError
from autopar._execute import worker
from autopar._execute.worker import ChunkResult, run_chunk, run_chunk_pickled
from tests import helpers

FAR = 3600.0  # a deadline no test reaches


def test_a_chunk_returns_its_results_in_order():
    result = run_chunk(helpers.square, 0, [3, 1, 2], star=False)
    assert result.results == [9, 1, 4]
    assert result.failure is None


def test_star_unpacks_each_item_into_arguments():
    result = run_chunk(helpers.add, 0, [(1, 2), (3, 4)], star=True)
    assert result.results == [3, 7]


def test_an_empty_chunk_has_no_results():
    assert run_chunk(helpers.square, 5, [], star=False).results == []


def test_a_failure_carries_the_index_counted_from_start_and_stops_the_chunk():
    ran = []

    def record_then_fail(x):
        ran.append(x)
        return helpers.fail_on_three(x)

    result = run_chunk(record_then_fail, 10, [0, 1, 2, 3, 4, 5], star=False)
    assert result.results == [0, 1, 2]  # the items before the failing one
    assert ran == [0, 1, 2, 3]  # nothing after it ran
    failure = result.failure
    assert failure.index == 13
    assert isinstance(failure.exc, ValueError) and str(failure.exc) == "item 3 is bad"
    assert "in fail_on_three" in failure.tb  # the function's own frame


def test_a_failure_with_a_deadline_carries_its_index_too():
    result = run_chunk(helpers.fail_on_three, 10, range(6), star=False, deadline=_in(FAR))
    assert result.results == [0, 1, 2] and result.failure.index == 13


def test_a_deadline_not_reached_lets_every_item_run():
    result = run_chunk(helpers.square, 0, range(5), star=False, deadline=_in(FAR))
    assert result.results == [0, 1, 4, 9, 16] and result.failure is None


def test_a_passed_deadline_stops_the_chunk_before_its_next_item():
    ran = []
    result = run_chunk(ran.append, 7, [1, 2, 3], star=False, deadline=_in(-1.0))
    assert ran == [] and result.results == []
    assert isinstance(result.failure.exc, AutoparTimeoutError)
    assert result.failure.index == 7
    assert "before item 7" in str(result.failure.exc)


def test_a_deadline_passing_mid_chunk_names_the_next_item(monkeypatch):
    # The chunk's clock is made to jump past the deadline while item 1 runs.
    now = [0.0]
    clock = types.SimpleNamespace(
        monotonic=lambda: now[0], perf_counter=time.perf_counter, thread_time=time.thread_time
    )
    monkeypatch.setattr(worker, "time", clock)

    def jump_at_one(x):
        if x == 1:
            now[0] = 100.0
        return x

    result = run_chunk(jump_at_one, 0, [0, 1, 2, 3], star=False, deadline=50.0)
    assert result.results == [0, 1]  # item 1 finishes; item 2 does not start
    assert result.failure.index == 2 and isinstance(result.failure.exc, AutoparTimeoutError)


def test_mark_thread_makes_the_thread_a_worker_for_the_chunk_only():
    assert not worker.in_worker()
    marked = run_chunk(_in_worker, 0, [0, 1], star=False, mark_thread=True)
    assert marked.results == [True, True]
    assert not worker.in_worker()  # restored after the chunk
    assert run_chunk(_in_worker, 0, [0], star=False).results == [False]


def test_mark_thread_is_restored_after_a_failure():
    result = run_chunk(helpers.fail_on_three, 0, range(5), star=False, mark_thread=True)
    assert result.failure is not None
    assert not worker.in_worker()


def test_a_thread_already_marked_stays_marked():
    with worker.mark_worker_thread():
        assert run_chunk(_in_worker, 0, [0], star=False).results == [True]
        assert worker.in_worker()
    assert not worker.in_worker()


# -- run_chunk_pickled: the process entry point --------------------------------------------


def test_pickled_round_trip():
    out = _pickled(helpers.square, 5, [1, 2, 3])
    assert isinstance(out, ChunkResult)
    assert out.results == [1, 4, 9] and out.failure is None


def test_pickled_star_and_deadline():
    out = _pickled(helpers.add, 0, [(1, 2), (3, 4)], star=True, deadline=_in(FAR))
    assert out.results == [3, 7] and out.failure is None


def test_pickled_functions_by_value_run_too():
    # cloudpickle ships what the standard pickler cannot: a lambda, by value.
    assert _pickled(lambda x: x + 1, 0, [1, 2]).results == [2, 3]


def test_a_pickled_failure_keeps_its_type_and_index():
    out = _pickled(helpers.fail_on_three, 20, [0, 1, 2, 3])
    assert out.results == [0, 1, 2]
    assert out.failure.index == 23 and isinstance(out.failure.exc, ValueError)
    assert "in fail_on_three" in out.failure.tb


def test_an_exception_that_cannot_be_pickled_comes_back_as_a_remote_error():
    out = _pickled(helpers.raise_unpicklable, 4, [9])
    exc = out.failure.exc
    assert isinstance(exc, RemoteError) and out.failure.index == 4
    assert exc.type_name == "Unpicklable" and exc.text == "cannot ship item 9"


def test_an_unpicklable_result_is_named_by_its_index():
    # lock_for(2) returns a lock: results before it come back, then the failure.
    out = _pickled(helpers.lock_for, 7, [0, 1, 2, 3])
    assert out.results == [0, 1]
    exc = out.failure.exc
    assert isinstance(exc, PicklingFailedError) and isinstance(exc, TypeError)
    assert exc.index == 9 and out.failure.index == 9
    assert "the result of item 9 cannot be pickled" in str(exc)


def test_a_function_that_cannot_be_unpickled_is_a_pickling_error():
    payload = worker.dumps(helpers.BadReduce())  # pickles; rebuilding it raises
    raw = run_chunk_pickled(payload, 5, pickle.dumps([1, 2]), False, None, 2)
    out = pickle.loads(raw)
    assert out.results == [] and out.failure.index == 5
    exc = out.failure.exc
    assert isinstance(exc, PicklingFailedError) and exc.index == 5
    assert str(exc).startswith("the function was pickled but cannot be unpickled")
    assert "refusing to be rebuilt" in str(exc)


@pytest.mark.parametrize(
    ("count", "named"),
    [(1, "item 5 was pickled"), (3, "an item of 5..7 was"), (0, "an item from 5 was")],
)
def test_items_that_cannot_be_unpickled_are_a_pickling_error_naming_the_chunk(count, named):
    items = worker.dumps([1, helpers.BadReduce(), 3])
    raw = run_chunk_pickled(worker.dumps(helpers.square), 5, items, False, None, count)
    out = pickle.loads(raw)
    assert out.results == [] and out.failure.index == 5
    assert isinstance(out.failure.exc, PicklingFailedError)
    assert str(out.failure.exc).startswith(named), str(out.failure.exc)


def test_find_unpicklable_names_the_first_culprit():
    index, exc = worker.find_unpicklable([1, "two", threading.Lock(), threading.Lock()])
    assert index == 2 and isinstance(exc, TypeError)
    assert worker.find_unpicklable([1, 2])[0] == -1


# -- helpers --------------------------------------------------------------------------------


def _in(seconds):
    """A deadline ``seconds`` from now, on run_chunk's clock."""
    return time.monotonic() + seconds


def _in_worker(_):
    return worker.in_worker()


def _pickled(fn, start, items, *, star=False, deadline=None):
    """run_chunk_pickled as a process worker runs it, its answer unpickled as the caller does."""
    raw = run_chunk_pickled(
        worker.dumps(fn), start, pickle.dumps(items), star, deadline, len(items)
    )
    assert isinstance(raw, bytes)
    return pickle.loads(raw)


def test_a_function_pickled_in_pieces_keeps_a_large_bytes_value_uncopied():
    import functools

    table = bytes(range(256)) * 4096  # 1 MiB: the pickler writes it apart from its frames
    fn = functools.partial(helpers.add, table)
    parts = worker.dump_parts(fn)
    assert b"".join(parts) == worker.dumps(fn)
    assert any(part is table for part in parts)
    assert worker.dump_parts(fn) == parts


def test_a_mutable_buffer_in_a_pickle_in_pieces_is_copied_as_it_was():
    import functools

    table = bytearray(2**20)
    parts = worker.dump_parts(functools.partial(helpers.add, table))
    table[0] = 1  # a change after pickling reaches neither the pieces nor their match
    assert pickle.loads(b"".join(parts)).args[0][0] == 0
    assert worker.dump_parts(functools.partial(helpers.add, table)) != parts


def test_a_closure_pickles_in_pieces_by_value():
    bias = 3
    parts = worker.dump_parts(lambda x: x + bias)
    assert pickle.loads(b"".join(parts))(1) == 4
