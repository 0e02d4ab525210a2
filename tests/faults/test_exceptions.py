"""The function raises, or a value cannot cross the boundary to or from a process worker.

Must hold: the user's exception keeps its type, gains its item index (``autopar_index``,
and a note on Python 3.11+) and keeps the worker-side traceback; items still pending are
cancelled; an exception that cannot be pickled back becomes a RemoteError with its type
name and text; an item or result that cannot be pickled, or an item that cannot be
unpickled in the worker, is a PicklingFailedError naming its index, and the pool still
works after it; lambdas, closures and functions of ``__main__`` run in processes.
"""

from __future__ import annotations

import pytest

from tests.faults import script


@pytest.mark.parametrize("kind", ["serial", "thread", "process"])
def test_exception_keeps_type_index_and_worker_traceback(kind):
    out = script(
        f"""
        import sys, traceback
        from autopar import parallel
        from tests import helpers

        f = parallel(kind="{kind}", workers=2)(helpers.fail_on_three)
        try:
            f.map(range(20), chunksize=2)
        except ValueError as exc:
            err = exc
        assert err.autopar_index == 3
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        assert "in fail_on_three" in text, text  # the function's own frame
        assert "item 3 is bad" in text
        if sys.version_info >= (3, 11):
            assert any("item 3" in note for note in err.__notes__), err.__notes__
        print("ok")
        """
    )
    assert out.strip() == "ok"


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_pending_items_are_cancelled_after_an_exception(kind):
    out = script(
        f"""
        import time
        from autopar import parallel
        from tests import helpers

        f = parallel(kind="{kind}", workers=2)(helpers.slow_or_raise)
        items = [(0, "raise", 0.0)] + [(i, "ok", 0.05) for i in range(1, 200)]
        t0 = time.monotonic()
        try:
            f.map(items, chunksize=1)
        except KeyError as exc:
            assert exc.autopar_index == 0
        else:
            raise SystemExit("no error")
        # 199 items of 50 ms on 2 workers take 5 s; cancelled, only the few in flight run.
        assert time.monotonic() - t0 < 3, time.monotonic() - t0
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_exception_that_cannot_come_back_is_a_remote_error_with_its_text():
    out = script(
        """
        import traceback
        from autopar import RemoteError, parallel
        from tests import helpers

        for fn, name, text in [
            (helpers.raise_unpicklable, "Unpicklable", "cannot ship item 4"),
            (helpers.raise_needs_two, "NeedsTwo", "first and 4"),
        ]:
            try:
                parallel(kind="process")(fn).map([4, 5])
            except RemoteError as exc:
                assert exc.type_name == name and text in str(exc), str(exc)
                assert exc.autopar_index == 0
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                assert f"in {fn.__name__}" in tb, tb
            else:
                raise SystemExit(f"no error from {fn.__name__}")
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_lambdas_closures_and_main_functions_run_in_processes(tmp_path):
    path = tmp_path / "main_funcs.py"
    path.write_text(
        "import os\n"
        "from autopar import parallel\n"
        "def triple(x):\n"
        "    return (3 * x, os.getpid())\n"
        "def make_adder(n):\n"
        "    return lambda x: (x + n, os.getpid())\n"
        "if __name__ == '__main__':\n"
        "    for fn in (triple, make_adder(10), lambda x: (x * x, os.getpid())):\n"
        "        out = parallel(kind='process', workers=2)(fn).map(range(6), chunksize=1)\n"
        "        assert os.getpid() not in {p for _, p in out}\n"
        "        print([v for v, _ in out])\n"
    )
    from tests.conftest import run_file

    proc = run_file(path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == [
        "[0, 3, 6, 9, 12, 15]",
        "[10, 11, 12, 13, 14, 15]",
        "[0, 1, 4, 9, 16, 25]",
    ]


def test_unpicklable_item_or_result_is_a_pickling_error_naming_the_index():
    out = script(
        """
        import threading, time
        from autopar import PicklingFailedError, parallel
        from tests import helpers

        t0 = time.monotonic()
        f = parallel(kind="process", workers=2)(helpers.identity)
        try:
            f.map([1, 2, threading.Lock(), 4], chunksize=1)
        except PicklingFailedError as exc:
            assert exc.index == 2 and "item 2" in str(exc) and "pickle" in str(exc), str(exc)
        else:
            raise SystemExit("no error for the item")
        g = parallel(kind="process", workers=2)(helpers.lock_for)
        try:
            g.map(range(5), chunksize=1)
        except PicklingFailedError as exc:
            assert exc.index == 2 and "item 2" in str(exc) and "pickle" in str(exc), str(exc)
            assert exc.autopar_index == 2
        else:
            raise SystemExit("no error for the result")
        assert isinstance(PicklingFailedError("x"), TypeError)
        assert time.monotonic() - t0 < 20
        assert f.map(range(3)) == [0, 1, 2]  # the pool still works
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_item_that_pickles_but_cannot_be_unpickled_is_a_pickling_error():
    out = script(
        """
        from autopar import PicklingFailedError, parallel
        from tests import helpers

        try:
            parallel(kind="process")(helpers.identity).map([1, helpers.BadReduce(), 3], chunksize=1)
        except PicklingFailedError as exc:
            assert exc.index == 1 and "item 1" in str(exc), str(exc)
        else:
            raise SystemExit("no error")
        print("ok")
        """
    )
    assert out.strip() == "ok"
