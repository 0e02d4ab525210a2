"""Property: for every kind, f.map(xs) == list(map(f, xs)), whatever xs holds."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopar import parallel
from tests import helpers

values = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.binary(max_size=8),
)
items = st.lists(values, max_size=300)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(xs=items, kind=st.sampled_from(["serial", "thread", "process", "auto"]))
def test_map_equals_builtin_map(xs, kind):
    f = parallel(kind=kind)(helpers.identity)
    assert f.map(xs) == list(map(helpers.identity, xs))
    assert f.map(iter(xs)) == xs
    assert list(f.imap(x for x in xs)) == xs


@settings(max_examples=3, deadline=None)
@given(kind=st.sampled_from(["serial", "thread", "process", "auto"]))
def test_large_input(kind):
    xs = list(range(20_000))
    assert parallel(kind=kind)(helpers.square).map(xs) == [x * x for x in xs]
