"""Progress bars: made only when asked, counting every result, silent off a terminal."""

import asyncio
import io
import sys
from typing import ClassVar

import pytest
import tqdm

from autopar import _progress, parallel
from tests import helpers

KINDS = ["serial", "thread", "process", "auto"]


class Recorder(tqdm.tqdm):
    """A real tqdm bar that writes to a string and remembers every bar made."""

    made: ClassVar[list] = []

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("file", io.StringIO())
        super().__init__(*args, **kwargs)
        self.kwargs = kwargs
        Recorder.made.append(self)


@pytest.fixture
def bars(monkeypatch):
    Recorder.made = []
    monkeypatch.setattr(_progress, "_tqdm_class", lambda: Recorder)
    return Recorder.made


@pytest.fixture
def no_delay(monkeypatch):
    # The bar appears only after DELAY seconds; a test must not wait for it.
    monkeypatch.setattr(_progress, "DELAY", 0)


def test_off_by_default(bars):
    assert parallel(kind="thread")(helpers.square).map(range(10)) == [x * x for x in range(10)]
    assert bars == []


@pytest.mark.parametrize("kind", KINDS)
def test_decorator_progress_counts_every_result(bars, kind):
    f = parallel(kind=kind, progress=True)(helpers.square)
    assert f.map(range(37)) == [x * x for x in range(37)]
    (bar,) = bars
    assert (bar.n, bar.total, bar.kwargs["disable"]) == (37, 37, False)  # False: always draw
    assert bar.kwargs["delay"] == _progress.DELAY > 0  # short maps stay silent


@pytest.mark.parametrize("method", ["imap", "imap_unordered", "starmap"])
def test_call_argument_turns_it_on_for_every_method(bars, method):
    f = parallel(kind="thread", workers=2)(helpers.add if method == "starmap" else helpers.square)
    items = [(i, i) for i in range(12)] if method == "starmap" else range(12)
    assert len(list(getattr(f, method)(items, progress=True))) == 12
    assert [b.n for b in bars] == [12]
    list(getattr(f, method)(items))
    assert len(bars) == 1  # only the call that asked


def test_unknown_length_has_no_total_and_still_counts(bars):
    f = parallel(kind="thread", progress=True)(helpers.square)
    assert sum(1 for _ in f.imap(x for x in range(9))) == 9
    assert (bars[0].n, bars[0].total) == (9, None)


def test_bar_updates_as_results_arrive(bars):
    f = parallel(kind="serial", progress=True, chunksize=1)(helpers.square)
    it = f.imap(range(5))
    next(it), next(it)
    assert bars[0].n == 2
    it.close()  # stopping early closes the bar
    assert bars[0].disable  # tqdm marks a closed bar disabled


def test_call_false_beats_decorator_true(bars):
    parallel(kind="serial", progress=True)(helpers.square).map(range(3), progress=False)
    assert bars == []


def test_environment_switch_draws_only_on_a_terminal(bars, monkeypatch):
    monkeypatch.setenv("AUTOPAR_PROGRESS", "1")
    parallel(kind="serial")(helpers.square).map(range(4))
    (bar,) = bars
    assert bar.kwargs["disable"] is None  # tqdm: on when the file is a tty
    # Our StringIO is not a tty: the bar was off from the start (it counted nothing).
    assert bar.n == 0 and bar.kwargs["file"].getvalue() == ""


def test_bar_text_reaches_the_file(no_delay, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    parallel(kind="thread", progress=True)(helpers.square).map(range(10))
    assert "10/10" in err.getvalue() and "square" in err.getvalue()


def test_short_map_prints_nothing(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    parallel(kind="serial", progress=True)(helpers.square).map(range(10))
    assert err.getvalue() == ""


def test_async_functions_count_too(bars):
    @parallel(progress=True, workers=3)
    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    assert double.map(range(8)) == [2 * x for x in range(8)]
    assert [(b.n, b.total) for b in bars] == [(8, 8)]


def test_missing_tqdm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    calls = []
    f = parallel(kind="serial", progress=True)(calls.append)
    with pytest.raises(ImportError, match=r"autopar\[progress\]"):
        f.map(range(3))
    assert calls == []  # nothing ran
    assert f.map(range(2), progress=False) == [None, None]
