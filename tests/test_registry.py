"""The pool registry: one pool per kind, shared, replaced when it cannot serve a call, and
stopped only when no call runs on it any more.

A fake backend stands in for real pools, and each test gets empty registry tables.
"""

import logging
import threading

import pytest

from autopar import _config
from autopar._execute import registry
from autopar._execute.backends.base import Backend, Replacement
from autopar._execute.backends.serial import SerialBackend


class FakeBackend(Backend):
    """A pool that records how it was stopped; ``broken`` makes it ask to be replaced."""

    kind = "fake"

    def __init__(self, config, workers):
        super().__init__(config, workers)
        self.shutdowns = 0
        self.aborts = 0
        self.broken = False

    def replacement(self, config, workers):
        if self.broken:
            return Replacement("a worker died", broken=True)
        return super().replacement(config, workers)

    def shutdown(self):
        self.shutdowns += 1

    def abort(self):
        self.aborts += 1


class AbortableBackend(FakeBackend):
    """A kind whose running work can be stopped (as processes can be killed)."""

    kind = "abortable"
    can_abort = True


@pytest.fixture(autouse=True)
def registry_of_its_own(monkeypatch):
    """Empty tables for the test, and the fake kinds registered (the real pools are
    left where they are, untouched)."""
    monkeypatch.setattr(registry, "_backends", {})
    monkeypatch.setattr(registry, "_users", {})
    monkeypatch.setattr(registry, "_retired", [])
    for cls in (FakeBackend, AbortableBackend):
        monkeypatch.setitem(registry._FACTORIES, cls.kind, f"{__name__}:{cls.__name__}")
        monkeypatch.setitem(registry._classes, cls.kind, cls)


@pytest.fixture
def config():
    return _config.current()


def users(backend):
    return registry._users.get(backend, 0)


def test_the_first_acquire_makes_the_pool_and_later_ones_share_it(config):
    assert registry.peek("fake") is None
    a = registry.acquire("fake", config, 2)
    b = registry.acquire("fake", config, 2)
    assert a is b and isinstance(a, FakeBackend)
    assert a.capacity == 2 and a.config is config
    assert registry.peek("fake") is a
    assert users(a) == 2


def test_releasing_counts_down_and_keeps_the_live_pool(config):
    pool = registry.acquire("fake", config, 2)
    registry.acquire("fake", config, 1)  # a smaller call fits the same pool
    registry.release(pool)
    assert users(pool) == 1
    registry.release(pool)
    assert pool not in registry._users
    assert pool.shutdowns == 0 and registry.peek("fake") is pool  # kept for the next call


def test_get_uses_the_pool_without_becoming_a_user(config):
    pool = registry.get("fake", config, 2)
    assert registry.peek("fake") is pool and users(pool) == 0
    assert registry.get("fake", config, 1) is pool


def test_a_pool_too_small_is_replaced_and_stopped_at_once_when_unused(config):
    small = registry.get("fake", config, 2)
    large = registry.get("fake", config, 4)
    assert large is not small and large.capacity == 4
    assert small.shutdowns == 1
    assert registry.peek("fake") is large


def test_a_pool_replaced_while_in_use_is_retired_until_its_last_user_leaves(config):
    old = registry.acquire("fake", config, 2)
    registry.acquire("fake", config, 2)  # two calls run on it
    new = registry.acquire("fake", config, 4)
    assert new is not old and registry.peek("fake") is new
    assert old in registry._retired and old.shutdowns == 0  # still running two calls
    registry.release(old)
    assert old.shutdowns == 0
    registry.release(old)
    assert old.shutdowns == 1 and old not in registry._retired
    registry.release(new)
    assert new.shutdowns == 0  # the live pool stays


def test_a_broken_pool_is_replaced_with_a_warning_and_a_choice_at_debug(config, caplog):
    caplog.set_level(logging.DEBUG, logger="autopar")
    pool = registry.get("fake", config, 2)
    pool.broken = True
    fresh = registry.get("fake", config, 2)
    assert fresh is not pool and pool.shutdowns == 1
    registry.get("fake", config, 8)  # too small: a choice, not a recovery
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.WARNING, "autopar: replacing the fake pool: a worker died"),
        (logging.DEBUG, "autopar: replacing the fake pool: 8 workers wanted, the pool has 2"),
    ]


def test_discard_aborts_an_unused_pool_and_forgets_it(config):
    pool = registry.get("fake", config, 2)
    registry.discard(pool)
    assert pool.aborts == 1 and pool.shutdowns == 0
    assert registry.peek("fake") is None
    assert registry.get("fake", config, 2) is not pool


def test_discard_retires_a_pool_in_use_that_cannot_stop_its_work(config):
    # Threads cannot be killed: their pool stops when the calls still on it end.
    pool = registry.acquire("fake", config, 2)
    registry.discard(pool)
    assert registry.peek("fake") is None
    assert pool.aborts == 0 and pool in registry._retired
    registry.release(pool)
    assert pool.shutdowns == 1 and pool.aborts == 0 and pool not in registry._retired


def test_discard_aborts_a_pool_in_use_that_can_stop_its_work(config):
    # Processes can be killed: at once, even with other calls on the pool.
    pool = registry.acquire("abortable", config, 2)
    registry.discard(pool)
    assert pool.aborts == 1 and pool not in registry._retired
    assert registry.peek("abortable") is None
    registry.release(pool)  # the call that was on it ends: nothing is stopped twice
    assert pool.aborts == 1 and pool.shutdowns == 0
    assert pool not in registry._users


def test_discarding_a_pool_already_replaced_leaves_the_new_one(config):
    old = registry.acquire("fake", config, 2)
    new = registry.acquire("fake", config, 4)
    registry.discard(old)
    assert registry.peek("fake") is new
    registry.release(old)
    assert old.shutdowns == 1


def test_shutdown_stops_live_and_retired_pools_and_forgets_them(config, monkeypatch):
    # Only the fake kinds: the real ones' shared resources (a dask Client) stay open, and
    # no real pool warm-up is waited for.
    fakes = {k: v for k, v in registry._FACTORIES.items() if k in ("fake", "abortable")}
    monkeypatch.setattr(registry, "_FACTORIES", fakes)
    monkeypatch.setattr(registry, "_background", None)
    retired = registry.acquire("fake", config, 2)
    live = registry.acquire("fake", config, 4)
    other = registry.get("abortable", config, 1)
    registry.shutdown()
    assert (retired.shutdowns, live.shutdowns, other.shutdowns) == (1, 1, 1)
    assert registry._backends == {} and registry._retired == [] and registry._users == {}
    assert registry.peek("fake") is None
    registry.release(live)  # a call that ends after the shutdown stops nothing twice
    assert live.shutdowns == 1
    assert registry.get("fake", config, 2) is not live  # the next call starts afresh


def test_the_real_serial_backend_is_made_and_reused(config):
    pool = registry.acquire("serial", config, 1)
    assert isinstance(pool, SerialBackend) and registry.peek("serial") is pool
    assert registry.acquire("serial", config, 1) is pool
    registry.release(pool)
    registry.release(pool)
    assert registry.peek("serial") is pool


def test_backend_class_imports_a_kind_on_first_use(monkeypatch):
    monkeypatch.delitem(registry._classes, "serial", raising=False)
    assert registry.backend_class("serial") is SerialBackend
    assert registry._classes["serial"] is SerialBackend


def test_concurrent_acquires_make_one_pool(config):
    got, barrier = [], threading.Barrier(8)

    def acquire():
        barrier.wait(10)
        got.append(registry.acquire("fake", config, 2))

    threads = [threading.Thread(target=acquire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 8 and len(set(map(id, got))) == 1
    assert users(got[0]) == 8
