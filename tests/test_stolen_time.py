"""The share of CPU time a VM's host took while the guest was busy (/proc/stat steal)."""

import pytest

from autopar._auto import stolen_time


@pytest.fixture
def machine(monkeypatch):
    """refresh() reads ``machine.ticks`` (busy, stolen) at ``machine.now`` seconds, on a
    guest of 2 cores (200 ticks a second of capacity)."""

    class Machine:
        now = 100.0
        ticks = (1000, 0)

    monkeypatch.setattr(stolen_time, "_ticks", lambda: Machine.ticks)
    monkeypatch.setattr(stolen_time, "_clock", lambda: Machine.now)
    monkeypatch.setattr(stolen_time, "_CORES", 2)
    monkeypatch.setattr(stolen_time, "_since", None)
    monkeypatch.setattr(stolen_time, "_read_at", -1.0)
    monkeypatch.setattr(stolen_time, "_share", 0.0)
    return Machine


def _at(machine, now, ticks):
    machine.now, machine.ticks = now, ticks
    return stolen_time.refresh()


def test_a_busy_stretch_sets_the_share(machine):
    assert _at(machine, 100.0, (1000, 0)) == 0.0  # (the stretch starts)
    # 0.3 s on 2 cores = 60 ticks: 36 busy, 24 stolen.
    assert _at(machine, 100.3, (1036, 24)) == pytest.approx(0.4)
    assert stolen_time.wanted(0.006) == pytest.approx(0.01)


def test_an_idle_guests_wake_ups_say_nothing(machine):
    # Over 5 s of 2 cores (1000 ticks), 31 busy and 40 stolen: the host was slow to wake
    # an idle guest, which is not how computing fares. The share stands.
    _at(machine, 100.0, (1000, 0))
    for second in range(1, 5):
        assert _at(machine, 100.0 + second, (1000 + 8 * second, 10 * second)) == 0.0


def test_a_stretch_needs_enough_busy_time(machine):
    _at(machine, 100.0, (1000, 0))
    assert _at(machine, 100.1, (1010, 10)) == 0.0  # all 20 ticks busy, but only 10 busy
    assert _at(machine, 100.2, (1030, 10)) == pytest.approx(0.25)  # 30 busy, 10 stolen


def test_a_host_that_took_nearly_everything_is_not_magnified_without_bound(machine):
    _at(machine, 100.0, (1000, 0))
    assert _at(machine, 101.0, (1040, 160)) == stolen_time.MOST
    assert stolen_time.wanted(1.0) == pytest.approx(1 / (1 - stolen_time.MOST))


def test_no_counters_leave_every_reading_as_it_is(monkeypatch):
    monkeypatch.setattr(stolen_time, "_ticks", lambda: None)
    monkeypatch.setattr(stolen_time, "_read_at", -1.0)
    monkeypatch.setattr(stolen_time, "_share", 0.0)
    assert stolen_time.refresh() == 0.0
    assert stolen_time.wanted(0.25) == 0.25
