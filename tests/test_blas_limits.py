"""BLAS/OpenMP caps while a thread plan runs (autopar/_execute/blas_limits.py).

Most tests inject a fake threadpoolctl controller, so they need no BLAS; the last one
checks a real OpenBLAS through threadpoolctl where numpy and threadpoolctl are installed.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any, Iterator, List

import pytest

from autopar import AutoparTimeoutError, parallel
from autopar._execute import blas_limits
from autopar._execute.backends.process import ProcessBackend
from autopar._execute.backends.serial import SerialBackend
from autopar._execute.backends.thread import ThreadBackend

CPUS = 8  # the CPU budget the fake tests plan for


class FakeLibrary:
    """What blas_limits uses of a threadpoolctl LibController."""

    def __init__(self, num_threads: int) -> None:
        self.num_threads = num_threads
        self.history: List[int] = []

    def set_num_threads(self, n: int) -> None:
        self.num_threads = n
        self.history.append(n)


class FakeController:
    def __init__(self, *libraries: FakeLibrary) -> None:
        self.lib_controllers = list(libraries)


@pytest.fixture
def blas(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLibrary]:
    """One fake BLAS of 8 threads on 8 CPUs, seen as loaded (``sys`` is always imported)."""
    library = FakeLibrary(CPUS)
    made: List[FakeController] = []

    def new_controller() -> FakeController:
        made.append(FakeController(library))
        return made[-1]

    blas_limits._reset()
    monkeypatch.setattr(blas_limits, "BLAS_MODULES", ("sys",))
    monkeypatch.setattr(blas_limits, "cpu_count", lambda: CPUS)
    monkeypatch.setattr(blas_limits, "_new_controller", new_controller)
    yield library
    assert not blas_limits._caps, "a cap outlived its run"
    blas_limits._reset()


def test_cap_shares_the_cpus_out(blas: FakeLibrary) -> None:
    assert [blas_limits.cap_for(k) for k in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def test_cap_applied_inside_and_restored_after(blas: FakeLibrary) -> None:
    with blas_limits.limited(2):
        assert blas.num_threads == 4
    assert blas.num_threads == CPUS
    assert blas.history == [4, CPUS]


def test_a_count_set_lower_by_the_user_is_kept(blas: FakeLibrary) -> None:
    blas.num_threads = 2
    with blas_limits.limited(2):  # a cap of 4
        assert blas.num_threads == 2
    assert blas.num_threads == 2


def test_overlapping_calls_strictest_wins_and_the_last_restores(blas: FakeLibrary) -> None:
    loose, strict = blas_limits.limited(2), blas_limits.limited(4)  # caps 4 and 2
    loose.__enter__()
    assert blas.num_threads == 4
    strict.__enter__()
    assert blas.num_threads == 2
    loose.__exit__(None, None, None)  # the loose one ends first: the strict one holds
    assert blas.num_threads == 2
    strict.__exit__(None, None, None)
    assert blas.num_threads == CPUS


def test_the_strict_call_ending_first_loosens_to_the_other(blas: FakeLibrary) -> None:
    with blas_limits.limited(2):
        with blas_limits.limited(8):
            assert blas.num_threads == 1
        assert blas.num_threads == 4
    assert blas.num_threads == CPUS


def test_calls_from_many_threads_restore_the_own_count(blas: FakeLibrary) -> None:
    seen: List[int] = []

    def call(workers: int) -> None:
        for _ in range(50):
            with blas_limits.limited(workers):
                seen.append(blas.num_threads)
                assert blas.num_threads <= blas_limits.cap_for(workers)

    threads = [threading.Thread(target=call, args=(k,)) for k in (2, 3, 4, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 200
    assert blas.num_threads == CPUS


def _threads_now(_: Any) -> int:
    return blas_limits._originals[0][0].num_threads if blas_limits._originals else -1


def test_a_thread_plan_runs_capped(blas: FakeLibrary) -> None:
    f = parallel(_threads_now, kind="thread", workers=2)
    assert set(f.map(range(8))) == {4}
    assert blas.num_threads == CPUS
    assert "BLAS/OpenMP capped to 4 threads per worker" in f.explain()


def test_imap_holds_the_cap_until_it_is_closed(blas: FakeLibrary) -> None:
    f = parallel(_threads_now, kind="thread", workers=4)
    results = f.imap(range(100))
    assert next(iter(results)) == 2
    assert blas.num_threads == 2
    results.close()  # type: ignore[attr-defined]
    assert blas.num_threads == CPUS


def _fail_on_3(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def _interrupt_on_3(x: int) -> int:
    if x == 3:
        raise KeyboardInterrupt
    return x


def _slow(x: int) -> int:
    time.sleep(0.3)
    return x


@pytest.mark.parametrize(
    ("fn", "error", "options"),
    [
        (_fail_on_3, ValueError, {}),
        (_interrupt_on_3, KeyboardInterrupt, {}),
        (_slow, AutoparTimeoutError, {"timeout": 0.05}),
    ],
)
def test_restored_on_any_way_out(blas: FakeLibrary, fn: Any, error: Any, options: Any) -> None:
    f = parallel(fn, kind="thread", workers=2, **options)
    with pytest.raises(error):
        f.map(range(8))
    assert blas.num_threads == CPUS
    assert blas.history[0] == 4


@pytest.mark.parametrize("options", [{"kind": "serial"}, {"kind": "thread", "workers": 1}])
def test_serial_and_one_thread_plans_leave_blas_alone(blas: FakeLibrary, options: Any) -> None:
    f = parallel(_threads_now, **options)
    assert f.map(range(8)) == [-1] * 8
    assert blas.history == []
    assert "blas:" not in f.explain()


def test_explain_names_no_cap_for_kinds_without_a_backend(blas: FakeLibrary) -> None:
    assert blas_limits.describe("async", 4) is None
    assert blas_limits.describe("thread", 4) is not None


def test_only_threads_share_the_callers_blas() -> None:
    assert ThreadBackend.shares_blas
    assert not ProcessBackend.shares_blas  # (its workers cap BLAS through the environment)
    assert not SerialBackend.shares_blas


def test_nothing_is_looked_up_without_a_blas_module(
    blas: FakeLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blas_limits, "BLAS_MODULES", ("no_such_module_for_autopar",))
    assert blas_limits.limited(4) is blas_limits._NOTHING
    f = parallel(_threads_now, kind="thread", workers=2)
    assert f.map(range(4)) == [-1] * 4
    assert blas_limits._controller is None and blas.history == []


def test_without_threadpoolctl_it_is_asked_once(
    blas: FakeLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: List[int] = []
    monkeypatch.setattr(blas_limits, "_new_controller", lambda: asked.append(1))
    for _ in range(3):
        with blas_limits.limited(2):
            pass
    assert asked == [1]
    assert blas_limits.limited(2) is blas_limits._NOTHING


def test_the_controller_is_made_again_when_another_blas_module_is_imported(
    blas: FakeLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    with blas_limits.limited(2):
        pass
    first = blas_limits._controller
    with blas_limits.limited(2):
        pass
    assert blas_limits._controller is first
    monkeypatch.setattr(blas_limits, "BLAS_MODULES", ("sys", "os"))
    with blas_limits.limited(2):
        pass
    assert blas_limits._controller is not first


def _real_blas_threads(_: Any) -> List[int]:
    import threadpoolctl

    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]


def test_a_real_blas_is_capped_inside_a_thread_plan_and_restored() -> None:
    pytest.importorskip("numpy")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas_limits._reset()
    own = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    if not own:
        pytest.skip("numpy loaded no BLAS or OpenMP library that threadpoolctl knows")
    cap = blas_limits.cap_for(2)
    f = parallel(_real_blas_threads, kind="thread", workers=2)
    for inside in f.map(range(4)):
        assert inside == [min(n, cap) for n in own]
    assert _real_blas_threads(None) == own


class StuckLibrary(FakeLibrary):
    """A BLAS that ignores every count set once it has been capped (as OpenBLAS 0.3.31
    ignored one set back from another thread than the one that capped it)."""

    def set_num_threads(self, n: int) -> None:
        if n <= self.num_threads:
            super().set_num_threads(n)


def test_a_library_that_keeps_the_cap_is_named_once(
    blas: FakeLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = StuckLibrary(CPUS)
    monkeypatch.setattr(blas_limits, "_new_controller", lambda: FakeController(stuck))
    monkeypatch.setattr(blas_limits, "_warned_stuck", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            with blas_limits.limited(2):
                pass
    assert stuck.num_threads == 4
    warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(warned) == 1
    assert "kept 4 thread(s) after autopar set its own count, 8, back" in warned[0]


def test_a_library_that_takes_its_count_back_is_not_named(
    blas: FakeLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blas_limits, "_warned_stuck", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with blas_limits.limited(2):
            pass
    assert blas.num_threads == CPUS
