"""`async def` functions: concurrent, bounded, in order, from sync and async code."""

import asyncio
import inspect
import pickle
import threading

import pytest

from autopar import AsyncParallelFunction, AutoparTimeoutError, ParallelFunction, parallel


@parallel
async def slow_double(x):
    # Later items finish first: the results must still come back in input order.
    await asyncio.sleep(0.001 * (10 - x % 10))
    return 2 * x


class Gauge:
    """Counts coroutines running at once."""

    def __init__(self):
        self.now = self.peak = self.started = 0

    async def visit(self, x):
        self.started += 1
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.001)
        finally:
            self.now -= 1
        return x


def test_map_from_sync_code_keeps_input_order():
    assert slow_double.map(range(30)) == [2 * x for x in range(30)]
    assert slow_double.map([]) == []
    assert slow_double.map(x for x in range(3)) == [0, 2, 4]


def test_the_wrapper_is_still_a_coroutine_function():
    assert isinstance(slow_double, AsyncParallelFunction)
    assert isinstance(slow_double, ParallelFunction)
    assert inspect.iscoroutinefunction(slow_double)
    assert asyncio.run(slow_double(4)) == 8  # a plain call returns the coroutine


def test_pickles_by_reference():
    assert pickle.loads(pickle.dumps(slow_double)) is slow_double


@pytest.mark.parametrize(("workers", "peak"), [(3, 3), (None, 100)])
def test_concurrency_is_bounded(workers, peak):
    gauge = Gauge()
    f = parallel(workers=workers)(gauge.visit)
    assert f.map(range(250)) == list(range(250))
    assert gauge.peak == peak
    assert (f.last_plan.kind, f.last_plan.workers) == ("async", peak)


def test_serial_kind_runs_one_at_a_time(monkeypatch):
    monkeypatch.setenv("AUTOPAR_KIND", "serial")
    gauge = Gauge()
    assert parallel(gauge.visit).map(range(5)) == list(range(5))
    assert gauge.peak == 1


def test_plan_says_async():
    slow_double.map(range(4))
    plan = slow_double.last_plan
    assert (plan.kind, plan.workers, plan.n_items) == ("async", 4, 4)
    assert "event loop" in slow_double.explain()


def test_failure_keeps_its_type_gets_the_index_and_cancels_the_rest():
    gauge = Gauge()

    @parallel(workers=2)
    async def fail_on_three(x):
        await gauge.visit(x)
        if x == 3:
            raise KeyError(x)
        await asyncio.sleep(0.01)
        return x

    with pytest.raises(KeyError) as info:
        fail_on_three.map(range(100))
    assert info.value.autopar_index == 3
    assert gauge.started < 100  # the rest were not run after the failure
    assert gauge.now == 0


def test_amap_inside_a_running_loop():
    async def main():
        loop_thread = threading.get_ident()

        @parallel
        async def where(x):
            return threading.get_ident()

        @parallel
        async def add(a, b):
            return a + b

        assert await slow_double.amap(range(5)) == [0, 2, 4, 6, 8]
        assert await add.astarmap([(1, 2), (3, 4)]) == [3, 7]
        assert set(await where.amap(range(3))) == {loop_thread}
        return loop_thread

    assert asyncio.run(main()) == threading.get_ident()


def test_sync_map_inside_a_running_loop_uses_a_helper_thread():
    @parallel
    async def where(x):
        return threading.get_ident()

    async def main():
        return where.map(range(3))

    assert set(where.map(range(3))) == {threading.get_ident()}  # no loop: this thread
    (helper,) = set(asyncio.run(main()))
    assert helper != threading.get_ident()


def test_starmap_imap_and_methods():
    @parallel
    async def add(a, b):
        return a + b

    assert add.starmap([(1, 2), (3, 4)]) == [3, 7]
    assert list(slow_double.imap(range(4))) == [0, 2, 4, 6]
    assert list(slow_double.imap_unordered(range(4))) == [0, 2, 4, 6]

    class Client:
        @parallel(workers=2)
        async def get(self, x):
            return (self, x)

    client = Client()
    assert client.get.map([1, 2]) == [(client, 1), (client, 2)]
    assert client.get.last_plan.kind == "async"


def test_timeout_cancels_and_raises():
    gauge = Gauge()

    @parallel(workers=2, timeout=0.05)
    async def hang(x):
        await gauge.visit(x)
        await asyncio.sleep(60)

    with pytest.raises(AutoparTimeoutError, match="timeout"):
        hang.map(range(4))
    with pytest.raises(TimeoutError):
        hang.map(range(4), timeout=0.01)
    assert gauge.now == 0


def test_cancelling_amap_cancels_its_coroutines():
    gauge = Gauge()

    @parallel(workers=5)
    async def hang(x):
        await gauge.visit(x)
        await asyncio.sleep(60)

    async def main():
        task = asyncio.ensure_future(hang.amap(range(10)))
        while gauge.started < 5:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert (gauge.started, gauge.now) == (5, 0)


def test_kinds_that_do_not_apply_are_refused():
    async def f(x):
        return x

    with pytest.raises(ValueError, match="async function"):
        parallel(kind="process")(f)
    assert parallel(kind="serial")(f).map([1]) == [1]
