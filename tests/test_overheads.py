"""What the pools cost on this machine: figures that stay true for the program."""

import collections

import autopar
from autopar import _overheads, parallel
from tests import helpers


def test_thread_start_follows_the_starts_seen_in_calls(monkeypatch):
    # Five starts timed at a busy moment once stayed the figure for the whole program
    # (and sized 10 ms sleeps at 32 threads where 128 ran them in half the time). Every
    # start in a call now counts, and the median of the latest is the figure.
    busy_moment = 0.05  # 50 ms a start: far beyond any real one
    monkeypatch.setattr(_overheads, "_measured", {})
    monkeypatch.setattr(_overheads, "_thread_starts", collections.deque(maxlen=31))
    monkeypatch.setattr(_overheads, "_time_thread_costs", lambda: ([busy_moment] * 5, 50e-6))
    assert _overheads.thread_costs()["thread_start"] == busy_moment
    autopar.shutdown()  # so that the call below starts its threads afresh
    f = parallel(kind="thread", workers=8, chunksize=1)(helpers.nap)
    assert f.map([0.02] * 8) == [0.02] * 8
    assert len(_overheads._thread_starts) >= 5 + 6
    assert _overheads.thread_costs()["thread_start"] < busy_moment
    assert _overheads.measured()["thread_start"] < busy_moment  # (python -m autopar info)
