"""The pilot (autopar._auto.pilot): a first call that is short ends there, on one thread,
without the planner; a longer one hands the items the pilot has not started to the
planner; either way every item runs once and the results keep the input's order."""

import re
import sys
import threading
import time

import pytest

from autopar import parallel
from autopar._auto import pilot
from tests import helpers as h
from tests.conftest import run_python

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def patient(monkeypatch):
    """The caller waits for the helper thread however long it takes to start, so that a
    busy machine cannot send a call to the planner before the pilot has begun."""
    monkeypatch.setattr(pilot, "START_PATIENCE", 60.0)


def _ran_first(plan):
    """How many items the pilot ran before the planner took the rest (None: it did not)."""
    found = re.search(
        r"before measuring, the first (\d+ items|item) ran on one thread", plan.reason
    )
    if found is None:
        return None
    return 1 if found.group(1) == "item" else int(found.group(1).split()[0])


def test_a_short_first_call_ends_in_the_pilot_without_the_planner():
    # A fresh program: nothing of the planner is imported, nothing is learned. (The
    # budget is wide here: the subject is what a call within it does, not its size.)
    code = """
        import sys
        from autopar import parallel
        from autopar._auto import pilot
        from tests import helpers as h
        pilot.PILOT_BUDGET = pilot.PATIENCE = pilot.START_PATIENCE = 60.0
        f = parallel(h.square)
        assert f.map(range(300)) == [x * x for x in range(300)]
        print(f.last_plan.kind, f.last_plan.n_items, "autopar._auto.planner" in sys.modules)
        print(f._self_state.learned is None, "ran on one thread in" in f.last_plan.reason)
    """
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["serial", "300", "False", "True", "True"], out.stdout


def test_a_longer_call_hands_its_rest_to_the_planner(patient, tmp_path):
    log = tmp_path / "ran.log"
    n = 60  # 0.3 ms each: far past the pilot's budget
    f = parallel(h.burn_and_log)
    assert f.map([(str(log), i, 0.3) for i in range(n)]) == list(range(n))
    assert sorted(int(line) for line in log.read_text().split()) == list(range(n))
    ran = _ran_first(f.last_plan)
    assert ran is not None and 1 <= ran < n, f.explain()
    assert f.last_plan.n_items == n
    assert f._self_state.learned is not None  # the planner measured the rest


def test_a_waiting_item_on_the_pilot_holds_up_no_other_item(patient):
    # Item 0, on the pilot's thread, returns True only if every other item starts while
    # it runs: the caller must hand them over without waiting for it.
    gate = h.Gate(12)
    f = parallel(gate)
    assert f.map(range(12)) == [True] * 12
    assert _ran_first(f.last_plan) == 1, f.explain()


def test_the_caller_waits_for_a_computing_item_before_it_hands_over(patient, monkeypatch):
    # (Its CPU would bend what the planner's probe reads; the reading itself is a
    # heuristic, so it is fixed here.)
    monkeypatch.setattr(pilot._Pilot, "computing", lambda self: True)
    seen = []

    def note(i):
        if i == 0:
            time.sleep(0.05)
        seen.append(("end" if i == 0 else "start", i))
        return i

    f = parallel(note)
    assert f.map(range(10)) == list(range(10))
    assert seen[0] == ("end", 0), seen


def test_an_item_that_raises_on_the_pilot_is_named():
    f = parallel(h.square)
    items = list(range(200))
    items[7] = "x"  # str * str: TypeError
    with pytest.raises(TypeError) as info:
        f.map(items)
    assert info.value.autopar_index == 7


def test_an_error_in_the_rest_is_named_by_its_index_in_the_input(patient):
    # Item 0 waits 5 ms on the pilot's thread: the rest (items 1..) goes to the planner,
    # and its item 24 is the input's item 25.
    items = [0.005] + [0.0] * 39
    items[25] = "x"  # time.sleep("x"): TypeError
    f = parallel(h.tunable)
    with pytest.raises(TypeError) as info:
        f.map(items)
    assert info.value.autopar_index == 25
    if sys.version_info >= (3, 11):
        assert any("raised by item 25 " in note for note in info.value.__notes__)


def test_an_earlier_error_on_the_pilot_comes_before_the_rests(patient):
    # Item 0 fails on the pilot's thread after the rest has been handed over, and the
    # rest fails too: the call raises the earlier item's error, as a serial run would.
    items = [(0, "raise", 0.05)] + [(i, "ok", 0.0) for i in range(1, 30)]
    items[20] = (20, "raise", 0.0)
    f = parallel(h.slow_or_raise)
    with pytest.raises(KeyError) as info:
        f.map(items)
    assert info.value.autopar_index == 0


def test_later_short_calls_run_in_the_calling_thread_until_one_is_dear(patient, monkeypatch):
    # A budget of 50 ms: the near-free calls end in the pilot whatever a busy machine
    # does; the 0.1 s call outlasts it.
    monkeypatch.setattr(pilot, "PILOT_BUDGET", 0.05)
    monkeypatch.setattr(pilot, "PATIENCE", 0.05)
    f = parallel(h.thread_id)
    first = f.map(range(100))
    assert threading.get_ident() not in first  # the pilot's thread ran them
    assert f.map(range(100)) == [threading.get_ident()] * 100
    assert "ran in the calling thread" in f.last_plan.reason
    g = parallel(h.tunable)
    g.map([0.0] * 50)
    g.map([0.002] * 50)  # predicted near-free: run here, and found dear
    assert "ran in the calling thread" in g.last_plan.reason
    g.map([0.002] * 50)  # so this one starts on the pilot again, and is handed over
    assert _ran_first(g.last_plan) is not None, g.explain()


@parallel
def _inner_square(x):
    return x * x


def _calls_inner(n):
    _inner_square.map(range(n))
    return _inner_square.last_plan.reason


def test_a_call_inside_an_item_on_the_pilot_runs_serially(patient, monkeypatch):
    # Every item on the pilot (a wide budget): an item the caller took back would run in
    # the calling thread, where a call inside it is rightly not nested (on a busy machine
    # the first item alone outlasted 1 ms, 1 run in 4 of the suite).
    monkeypatch.setattr(pilot, "PILOT_BUDGET", 60.0)
    monkeypatch.setattr(pilot, "PATIENCE", 60.0)
    f = parallel(_calls_inner)
    reasons = f.map([3, 3])
    assert all("nested call inside an autopar worker" in reason for reason in reasons), reasons


@pytest.mark.parametrize(
    "decorated, called",
    [({}, {"timeout": 30}), ({}, {"chunksize": 7}), ({"workers": 2}, {})],
)
def test_calls_with_settings_the_planner_weighs_skip_the_pilot(decorated, called):
    f = parallel(h.square, **decorated)
    f.map(range(300), **called)
    assert "measuring" in f.last_plan.reason, f.explain()


def test_a_stream_skips_the_pilot():
    f = parallel(h.square)
    assert list(f.imap(iter(range(300)))) == [x * x for x in range(300)]
    assert "measuring" in f.last_plan.reason, f.explain()


def test_a_helper_that_never_starts_leaves_the_whole_call_to_the_planner(monkeypatch):
    # A busy machine may not schedule the helper thread in time: the caller gives up on
    # it, and the planner runs every item; the helper, when it does start, takes none.
    held = []

    class Idle:
        def submit(self, fn):
            held.append(fn)

    monkeypatch.setattr(pilot, "helpers", Idle)
    monkeypatch.setattr(pilot, "START_PATIENCE", 0.01)
    f = parallel(h.square)
    assert f.map(range(300)) == [x * x for x in range(300)]
    assert _ran_first(f.last_plan) is None and "measuring" in f.last_plan.reason
    held[0]()  # its late start
    assert f._self_state.learned is not None
