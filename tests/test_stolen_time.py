"""The share of runnable time a hypervisor took (steal), read from /proc/stat's counters."""

import pytest

from autopar._auto import stolen_time


@pytest.fixture
def counters(monkeypatch):
    """Feeds refresh() the (busy, stolen) ticks in ``counters.now``, on every call."""

    class Counters:
        now = (1000, 0)

    monkeypatch.setattr(stolen_time, "_ticks", lambda: Counters.now)
    monkeypatch.setattr(stolen_time, "READ_EVERY", 0.0)
    monkeypatch.setattr(stolen_time, "_since", None)
    monkeypatch.setattr(stolen_time, "_share", 0.0)
    return Counters


def test_the_first_reading_is_the_share_since_boot(counters):
    counters.now = (900, 100)
    assert stolen_time.refresh() == pytest.approx(0.1)


def test_the_share_moves_only_once_a_stretch_holds_enough_ticks(counters):
    counters.now = (1000, 0)
    assert stolen_time.refresh() == 0.0
    # 20 ticks, half of them stolen: too few to judge, the share stands ...
    counters.now = (1010, 10)
    assert stolen_time.refresh() == 0.0
    # ... until the stretch since the last update holds MIN_TICKS: 24 of 40 stolen.
    counters.now = (1016, 24)
    assert stolen_time.refresh() == pytest.approx(0.6)
    assert stolen_time.wanted(0.004) == pytest.approx(0.01)


def test_a_host_that_took_nearly_everything_is_not_magnified_without_bound(counters):
    counters.now = (1000, 0)
    stolen_time.refresh()
    counters.now = (1005, 95)
    assert stolen_time.refresh() == stolen_time.MOST
    assert stolen_time.wanted(1.0) == pytest.approx(1 / (1 - stolen_time.MOST))


def test_no_counters_leave_every_reading_as_it_is(monkeypatch):
    monkeypatch.setattr(stolen_time, "_ticks", lambda: None)
    monkeypatch.setattr(stolen_time, "READ_EVERY", 0.0)
    monkeypatch.setattr(stolen_time, "_share", 0.0)
    assert stolen_time.refresh() == 0.0
    assert stolen_time.wanted(0.25) == 0.25


def test_the_share_since_boot_is_read_without_moving_the_estimate(counters):
    counters.now = (750, 250)
    assert stolen_time.since_boot() == pytest.approx(0.25)
    assert stolen_time.share() == 0.0
