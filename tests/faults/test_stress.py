"""A property test: random mixes of raising and slow items, on every kind.

Must hold: map and imap give exactly what a serial run gives (the results, or the first
raising item's KeyError with that item's index); imap_unordered gives the same results
in some order, or a KeyError whose index points at an item that raises.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopar import parallel
from tests import helpers

spec = st.tuples(
    st.integers(-1000, 1000),
    st.sampled_from(["ok"] * 9 + ["raise"]),
    st.sampled_from([0.0] * 6 + [0.001, 0.003]),
)
STRESS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(call: Any) -> Any:
    """The result, or (exception type, failing index, text): what a caller can observe."""
    try:
        return call()
    except KeyError as exc:
        return KeyError, getattr(exc, "autopar_index", None), str(exc)


def serial_outcome(specs: list[tuple[int, str, float]]) -> Any:
    for i, s in enumerate(specs):
        if s[1] == "raise":
            return KeyError, i, str(KeyError(s[0]))
    return [helpers.slow_or_raise(s) for s in specs]


@STRESS
@given(
    specs=st.lists(spec, max_size=60),
    kind=st.sampled_from(["serial", "thread", "process"]),
    workers=st.integers(1, 4),
    chunksize=st.one_of(st.none(), st.integers(1, 7)),
)
def test_raising_and_slow_items_behave_like_the_serial_run(specs, kind, workers, chunksize):
    f = parallel(kind=kind, workers=workers)(helpers.slow_or_raise)
    expected = serial_outcome(specs)
    assert outcome(lambda: f.map(specs, chunksize=chunksize)) == expected
    assert outcome(lambda: list(f.imap(iter(specs), chunksize=chunksize))) == expected
    unordered = outcome(lambda: sorted(f.imap_unordered(specs, chunksize=chunksize)))
    if isinstance(expected, list):
        assert unordered == sorted(expected)
    else:  # some failing item is reported, with its own index
        kind_, index, _ = unordered
        assert kind_ is KeyError and specs[index][1] == "raise"
