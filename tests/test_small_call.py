"""A first call whose whole work is small runs unplanned (autopar._auto.small_call)."""

import time

import pytest

from autopar import parallel

from .conftest import run_python

pytestmark = pytest.mark.small_calls


def _nap_or_raise(x):
    time.sleep(2e-4)
    if x == 150:
        raise ValueError(f"bad item {x}")
    return -x


def _raise_at_13(x):
    if x == 13:
        raise KeyError(x)
    return x + 1


def test_a_small_first_call_runs_without_loading_the_planner():
    out = run_python(
        """
        import sys
        from autopar import parallel
        f = parallel(abs)
        assert f.map(list(range(-10, 10))) == [abs(x) for x in range(-10, 10)]
        print("planner" if "autopar._auto.planner" in sys.modules else "none")
        print(f.last_plan.kind, f.last_plan.reason)
        """,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    loaded, plan = out.stdout.splitlines()
    assert loaded == "none"
    assert plan.startswith("serial the whole call took"), plan


def test_a_call_past_the_bound_is_planned_for_its_rest_in_order():
    f = parallel(abs)
    naps = parallel(_nap_or_raise)
    items = list(range(100))
    assert naps.map(items) == [-x for x in items]
    assert "items ran before planning" in naps.last_plan.reason, naps.explain()
    assert naps.last_plan.n_items == 100
    assert naps.last_plan.measured, naps.explain()  # (the planner measured the rest)
    assert f.starmap([(-1,), (2,), (-3,)]) == [1, 2, 3]


def test_an_error_in_the_unplanned_part_names_its_input_index():
    with pytest.raises(KeyError) as caught:
        parallel(_raise_at_13).map(range(20))
    assert caught.value.autopar_index == 13
    assert "autopar: raised by item 13 " in "\n".join(caught.value.__notes__)


def test_an_error_in_the_planned_rest_names_its_input_index():
    with pytest.raises(ValueError, match="bad item 150") as caught:
        parallel(_nap_or_raise).map(list(range(200)))
    assert caught.value.autopar_index == 150
    assert "autopar: raised by item 150 " in "\n".join(caught.value.__notes__)
