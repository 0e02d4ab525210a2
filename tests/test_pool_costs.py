"""What the pools cost on this machine: figures that stay true for the program."""

import collections

import autopar
from autopar import parallel
from autopar._auto import pool_costs
from autopar._execute import thread_pool
from tests import helpers


def test_thread_start_follows_the_starts_seen_in_calls(monkeypatch):
    # Five starts timed at a busy moment must not stay the figure for the whole program:
    # every start in a call counts, and the median of the latest is the figure.
    busy_moment = 0.05  # 50 ms a start: far beyond any real one
    monkeypatch.setattr(pool_costs, "_measured", {})
    monkeypatch.setattr(thread_pool, "_start_times", collections.deque(maxlen=31))
    monkeypatch.setattr(pool_costs, "_time_thread_costs", lambda: ([busy_moment] * 5, 50e-6))
    assert pool_costs.thread_costs()["thread_start"] == busy_moment
    autopar.shutdown()  # so that the call below starts its threads afresh
    f = parallel(kind="thread", workers=8, chunksize=1)(helpers.nap)
    assert f.map([0.02] * 8) == [0.02] * 8
    assert len(thread_pool.start_times()) >= 5 + 6
    assert pool_costs.thread_costs()["thread_start"] < busy_moment
    assert pool_costs.measured()["thread_start"] < busy_moment  # (python -m autopar info)
