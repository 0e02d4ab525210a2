"""Per-item policies: errors="return"/"skip", retries, item_timeout, a poison item.

Must hold, on every kind: a failing, hanging or worker-killing item is reported (in its
slot as an ItemFailure, dropped from imap under "skip", or raised) while every other
item's result arrives, correct and in order; retries run an item again only for the
exceptions named in retry_on, and its attempts are counted; f.last_failures and one
WARNING say what failed; and nothing is left running after the call (no helper thread,
no worker process), once the test releases the items it left hanging.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from autopar import ItemFailure, ItemTimeoutError, RemoteError, WorkerCrashedError, parallel
from tests import outcome_helpers as h

N = 12
KINDS = ["serial", "thread", "process", "auto"]


@pytest.fixture
def place(tmp_path):
    """A directory for the items' files; afterwards, hung items are released and nothing
    autopar started for the test may still run."""
    children = set(multiprocessing.active_children())
    yield str(tmp_path)
    (Path(tmp_path) / "release").touch()
    deadline = time.monotonic() + 20
    while True:
        threads = [t for t in threading.enumerate() if t.name.startswith("autopar-item")]
        strays = [p for p in multiprocessing.active_children() if p not in children]
        if not threads and not strays:
            return
        assert time.monotonic() < deadline, f"left running: {threads} {strays}"
        time.sleep(0.05)


def items(place):
    return [(i, place) for i in range(N)]


def assert_rest(results, bad, place):
    """Every slot but ``bad`` holds its item's result; ``bad`` holds an ItemFailure."""
    assert len(results) == N
    for i, value in enumerate(results):
        if i == bad:
            assert isinstance(value, ItemFailure), value
            assert value.index == bad and value.item == (bad, place)
        else:
            assert value == i * i, (i, value)
    return results[bad]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_item_is_returned_and_the_others_go_on(kind, place, caplog):
    f = parallel(kind=kind, workers=2)(h.raises)
    with caplog.at_level(logging.WARNING, logger="autopar"):
        results = f.map(items(place), errors="return")
    failure = assert_rest(results, h.BAD, place)
    assert type(failure.exception) is ValueError and "item 3 is bad" in str(failure.exception)
    assert "in raises" in failure.traceback and failure.attempts == 1
    assert [x.index for x in f.last_failures] == [h.BAD]
    assert "failed: 1 items (1 ValueError) at 3" in f.explain()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "1 items failed" in warned[0].getMessage()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_skip_leaves_failed_items_out_of_imap(kind, place):
    f = parallel(kind=kind, workers=2)(h.raises)
    expected = [i * i for i in range(N) if i != h.BAD]
    assert list(f.imap(items(place), errors="skip")) == expected
    assert [x.index for x in f.last_failures] == [h.BAD]
    assert sorted(f.imap_unordered(items(place), errors="skip")) == expected
    with pytest.raises(ValueError, match="errors='skip'"):
        f.map(items(place), errors="skip")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_raise_after_retries_says_how_many_attempts(kind, place):
    f = parallel(kind=kind, workers=2, retries=2, retry_on=ValueError)(h.raises)
    with pytest.raises(ValueError) as caught:
        f.map(items(place))
    assert caught.value.autopar_index == h.BAD
    assert caught.value.autopar_attempts == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_retried_item_succeeds_at_its_third_attempt_in_its_place(kind, place):
    f = parallel(kind=kind, workers=2)(h.flaky)
    results = f.map(items(place), retries=2, retry_on=(ConnectionError,))
    assert results == [i * i for i in range(N)]
    assert h.attempts(place, h.FLAKY) == 3
    assert f.last_failures == [] and "retried: 1 items" in f.explain()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_only_the_exceptions_named_are_retried(kind, place):
    f = parallel(kind=kind, workers=2)(h.flaky)
    results = f.map(items(place), retries=5, retry_on=KeyError, errors="return")
    failure = assert_rest(results, h.FLAKY, place)
    assert type(failure.exception) is ConnectionError and failure.attempts == 1
    assert h.attempts(place, h.FLAKY) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["serial", "thread", "process"])
def test_a_hung_item_is_given_up_and_the_others_go_on(kind, place):
    f = parallel(kind=kind, workers=2)(h.hangs)
    results = f.map(items(place), item_timeout=1.0, errors="return")
    failure = assert_rest(results, h.HUNG, place)
    assert isinstance(failure.exception, ItemTimeoutError)
    assert isinstance(failure.exception, TimeoutError) and failure.exception.index == h.HUNG
    with pytest.raises(ItemTimeoutError) as caught:
        f.map(items(place), item_timeout=1.0)
    assert caught.value.autopar_index == h.HUNG


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_timed_out_item_is_retried_when_named(kind, place):
    f = parallel(kind=kind, workers=2, item_timeout=1.0)(h.hangs_once)
    results = f.map(items(place), retries=1, retry_on=ItemTimeoutError)
    assert results == [i * i for i in range(N)]
    assert h.attempts(place, h.FLAKY) == 2


@pytest.mark.timeout(60)
def test_item_timeout_from_the_environment(place, monkeypatch):
    monkeypatch.setenv("AUTOPAR_ITEM_TIMEOUT", "1.0")
    f = parallel(kind="thread", workers=2, errors="return")(h.hangs)
    assert isinstance(assert_rest(f.map(items(place)), h.HUNG, place), ItemFailure)
    monkeypatch.setenv("AUTOPAR_ITEM_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="AUTOPAR_ITEM_TIMEOUT"):
        f.map(items(place))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fn, why", [(h.exits, "exit code 13"), (h.killed, "SIGKILL")])
def test_a_poison_item_loses_only_itself(fn, why, place):
    f = parallel(kind="process", workers=2)(fn)
    failure = assert_rest(f.map(items(place), errors="return"), h.DEAD, place)
    assert isinstance(failure.exception, WorkerCrashedError)
    assert why in str(failure.exception) and list(failure.exception.items) == [h.DEAD]
    assert sorted(f.imap_unordered(items(place), errors="skip")) == [
        i * i for i in range(N) if i != h.DEAD
    ]
    # Under "raise" the error names the item that killed the worker.
    with pytest.raises(WorkerCrashedError) as caught:
        f.map(items(place), item_timeout=30)
    assert list(caught.value.items) == [h.DEAD] and f"item {h.DEAD}" in str(caught.value)
    assert all(caught.value.partial_results[i] == i * i for i in caught.value.partial_results)


@pytest.mark.timeout(60)
def test_a_crash_is_retried_when_named(place):
    f = parallel(kind="process", workers=2)(h.dies_twice)
    results = f.map(items(place), retries=2, retry_on=WorkerCrashedError)
    assert results == [i * i for i in range(N)]
    assert h.attempts(place, h.FLAKY) == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_an_exception_that_cannot_be_pickled_is_returned(kind, place):
    f = parallel(kind=kind, workers=2)(h.unpicklable)
    failure = assert_rest(f.map(items(place), errors="return"), h.BAD, place)
    if kind == "process":
        assert isinstance(failure.exception, RemoteError)
        assert failure.exception.type_name == "Unpicklable"
    else:
        assert type(failure.exception).__name__ == "Unpicklable"
    assert "cannot ship item 3" in str(failure.exception)


@pytest.mark.timeout(60)
def test_async_functions_follow_the_policies(place):
    f = parallel(h.araises)
    failure = assert_rest(f.map(items(place), errors="return"), h.BAD, place)
    assert type(failure.exception) is ValueError
    assert list(f.imap(items(place), errors="skip")) == [i * i for i in range(N) if i != h.BAD]
    with pytest.raises(ValueError, match="errors='skip'"):
        f.map(items(place), errors="skip")
    g = parallel(h.ahangs)
    failure = assert_rest(g.map(items(place), item_timeout=1.0, errors="return"), h.HUNG, place)
    assert isinstance(failure.exception, ItemTimeoutError)
    k = parallel(h.aflaky)
    assert k.map(items(place), retries=2, retry_on=ConnectionError) == [i * i for i in range(N)]
    assert h.attempts(place, h.FLAKY) == 3


def test_the_progress_bar_counts_failures():
    from autopar import _progress

    class Bar:
        def __init__(self):
            self.n, self.postfix = 0, {}

        def update(self, n=1):
            self.n += n

        def set_postfix(self, refresh=True, **values):
            self.postfix = values

    bar = Bar()
    _progress.note_failure(bar, 1, False)
    _progress.note_failure(bar, 2, True)
    assert bar.postfix == {"failed": 2} and bar.n == 1  # a skipped item counts as done


def test_auto_prices_processes_cold_under_a_per_item_policy(monkeypatch):
    # Such a call starts processes of its own, so a warm shared pool does not make them free.
    from autopar._auto import pool_costs
    from autopar._config import Config

    monkeypatch.setattr(pool_costs, "process_warm", lambda config: True)
    assert pool_costs.current(Config(), time_threads=False).process_start == 0.0
    under_policy = Config(item_timeout=1.0)
    assert pool_costs.current(under_policy, time_threads=False).process_start > 0.0
