"""One contract, every kind: the same calls must give the same answers."""

import itertools
import json
import os
import sys
import threading

import pytest

import autopar
from autopar import parallel
from tests import helpers

KINDS = ["serial", "thread", "process", "auto"]


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


def test_map_matches_builtin_map(kind):
    f = parallel(kind=kind)(helpers.square)
    assert f.map(range(100)) == [x * x for x in range(100)]
    assert f.map([]) == []
    assert f.map([7]) == [49]


def test_map_accepts_generators_and_iterators(kind):
    f = parallel(kind=kind)(helpers.square)
    assert f.map(x for x in range(20)) == [x * x for x in range(20)]
    assert f.map(iter([3, 4])) == [9, 16]


def test_imap_keeps_order_and_is_lazy(kind, monkeypatch):
    # auto's calibration may read up to max(64, 2 * AUTOPAR_MAX_THREADS) items ahead.
    monkeypatch.setenv("AUTOPAR_MAX_THREADS", "8")
    f = parallel(kind=kind, workers=2)(helpers.identity)
    seen = []

    def source():
        for i in itertools.count():
            seen.append(i)
            yield i

    results = f.imap(source())
    assert [next(results) for _ in range(10)] == list(range(10))
    results.close()
    assert len(seen) < 10 + 200  # read a bounded distance ahead of what was consumed


def test_imap_unordered_returns_every_result(kind):
    f = parallel(kind=kind)(helpers.square)
    assert sorted(f.imap_unordered(range(50))) == sorted(x * x for x in range(50))


def test_starmap(kind):
    f = parallel(kind=kind)(helpers.add)
    assert f.starmap([(1, 2), (3, 4)]) == [3, 7]
    assert f.starmap(zip(range(5), range(5))) == [0, 2, 4, 6, 8]


def test_exception_keeps_its_type_and_names_the_item(kind):
    f = parallel(kind=kind, chunksize=2)(helpers.fail_on_three)
    with pytest.raises(ValueError, match="item 3 is bad") as info:
        f.map(range(10))
    assert info.value.autopar_index == 3


def test_process_kind_runs_in_other_processes():
    f = parallel(kind="process", workers=2)(helpers.pid)
    pids = set(f.map(range(8), chunksize=1))
    assert os.getpid() not in pids


def test_thread_kind_runs_in_other_threads_and_honours_workers():
    f = parallel(kind="thread", workers=3, chunksize=1)(helpers.nap)
    results = f.map([0.05] * 6)
    assert results == [0.05] * 6
    g = parallel(kind="thread", chunksize=1)(helpers.thread_id)
    assert threading.get_ident() not in set(g.map(range(4)))


def test_thread_kind_runs_at_most_workers_chunks_at_once():
    # One chunk per worker is queued ahead; queued chunks must not run concurrently.
    helpers.reset_peak()
    f = parallel(kind="thread", workers=3, chunksize=1)(helpers.nap)
    assert f.map([0.02] * 24) == [0.02] * 24
    assert helpers.peak == 3


def test_serial_kind_runs_in_the_caller_thread():
    f = parallel(kind="serial")(helpers.thread_id)
    assert set(f.map(range(5))) == {threading.get_ident()}


def test_explicit_chunksize_wins_and_default_rule_applies(kind):
    f = parallel(kind=kind)(helpers.square)
    f.map(range(80), chunksize=7)
    assert f.last_plan.chunksize == 7


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_default_chunksize_rule(kind):
    f = parallel(kind=kind, workers=2)(helpers.square)
    f.map(range(80))
    assert f.last_plan.chunksize == 10  # ceil(80 / (4 * 2))


def test_pools_are_reused_across_calls_and_functions():
    from autopar._execute import registry

    parallel(kind="process")(helpers.square).map(range(4))
    first = registry.peek("process")
    parallel(kind="process")(helpers.add).starmap([(1, 2)])
    assert registry.peek("process") is first


def test_shutdown_then_next_call_starts_a_new_pool():
    from autopar._execute import registry

    f = parallel(kind="process")(helpers.square)
    f.map(range(4))
    before = registry.peek("process")
    autopar.shutdown()
    assert registry.peek("process") is None
    assert f.map(range(4)) == [0, 1, 4, 9]
    assert registry.peek("process") is not before


def test_many_threads_share_one_pool_and_get_their_own_results():
    from autopar._execute import registry

    autopar.shutdown()
    f = parallel(kind="process", workers=2)(helpers.square)
    out = {}

    def call(i):
        out[i] = f.map(range(i, i + 20))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(out[i] == [x * x for x in range(i, i + 20)] for i in range(8))
    assert registry.peek("process") is not None


def test_nested_call_inside_a_worker_runs_serially():
    assert helpers.outer_calls_inner.map([3, 4]) == [5, 14]
    assert helpers.thread_square.last_plan.kind == "serial"
    assert "nested" in helpers.thread_square.last_plan.reason


def _chunk_sizes(monkeypatch, **options):
    """The chunk sizes a kind="thread" map over 200 items hands to the pool."""
    from autopar._execute.backends import thread

    sizes = helpers.spy_chunk_sizes(monkeypatch, thread.ThreadBackend)
    f = parallel(kind="thread", workers=2, **options)(helpers.square)
    assert f.map(range(200)) == [x * x for x in range(200)]
    return sizes


def test_chunks_shrink_near_the_end_unless_their_size_was_named(monkeypatch):
    # A long last chunk would leave the other workers idle (items that grow dearer along
    # the input put the most work there).
    tapered = _chunk_sizes(monkeypatch)
    assert sum(tapered) == 200
    assert tapered[-1] < tapered[0] and tapered == sorted(tapered, reverse=True)
    assert min(tapered) >= tapered[0] // 8
    assert _chunk_sizes(monkeypatch, chunksize=25) == [25] * 8


def test_named_process_kind_in_a_script_without_a_main_guard_says_what_to_do(tmp_path):
    # Each forkserver/spawn worker would import the script and run its map call again,
    # then die starting a pool of its own: a clear error instead of lost workers.
    from tests.conftest import run_file

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from autopar import parallel\n"
        "from tests import helpers\n"
        "print('ran')\n"
        "print(parallel(kind='process')(helpers.square).map(range(10)))\n"
    )
    proc = run_file(script, env={"AUTOPAR_START_METHOD": "forkserver"})
    assert proc.returncode != 0 and proc.stdout.split() == ["ran"]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("autopar.errors.AutoparError") and "unguarded.py" in last
    assert "if __name__ ==" in last and "AUTOPAR_START_METHOD=fork" in last


@pytest.mark.parametrize(
    ("source", "clean"),
    [
        ("def main(): ...\nif __name__ == '__main__':\n    main()\n", True),
        ('if "__main__" == __name__:\n    pass\n', True),
        ("def cli():\n    if __name__ == '__main__':\n        pass\n", True),
        ("print('work')\n", False),
        ("name = __name__  # not '__main__' guarded\n", False),
    ],
)
def test_main_guard_detection(tmp_path, monkeypatch, source, clean):
    import types

    from autopar._execute import main_guard

    script = tmp_path / "main_script.py"
    script.write_text(source)
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(main_guard, "_scanned", {})
    assert main_guard.processes_start_cleanly("forkserver") is clean
    assert main_guard.processes_start_cleanly("fork") is True
    del main.__file__  # a REPL or notebook: workers import no script
    assert main_guard.processes_start_cleanly("spawn") is True


def test_every_module_the_forkserver_preloads_imports():
    import importlib

    from autopar._execute import forkserver

    for name in (*forkserver.PRELOAD, forkserver.PUBLIC):
        importlib.import_module(name)


def test_the_imports_a_worker_runs_again_are_the_unindented_ones(tmp_path):
    from autopar._execute import main_guard

    script = tmp_path / "script.py"
    script.write_text(
        "import os, json as j  # a comment\n"
        "from collections import abc\n"
        "from . import sibling\n"
        "from .near import thing\n"
        "import xml.dom; import csv\n"
        "try:\n    import tomllib\nexcept ImportError:\n    import tomli\n"
        "def f():\n    import zlib\n"
        "class C:\n    import bz2\n"
        "if __name__ == '__main__':\n    import autopar\n"
    )
    assert main_guard.imported_again(str(script)) == (
        "os",
        "json",
        "collections",
        "xml.dom",
    )
    assert main_guard.imported_again(str(tmp_path / "gone.py")) == ()


def test_the_forkserver_preloads_autopar_where_a_worker_would_import_it(tmp_path, monkeypatch):
    import types

    from autopar._execute import forkserver

    plain = list(forkserver.PRELOAD)
    with_public = [*forkserver.PRELOAD, forkserver.PUBLIC]

    def preload_for(source: str, name: str) -> list:
        script = tmp_path / f"{name}.py"
        script.write_text(source)
        main = types.ModuleType("__main__")
        main.__file__ = str(script)
        return forkserver.preload(main)

    assert forkserver.preload(None) == plain
    assert forkserver.preload(types.ModuleType("__main__")) == plain  # no script: a REPL
    assert preload_for("import json\n", "a") == plain
    assert preload_for("from autopar import parallel\n", "b") == with_public
    assert preload_for("import autopar.plan\n", "c") == with_public
    assert preload_for("if __name__ == '__main__':\n    import autopar\n", "d") == plain
    assert preload_for('"""Docs."""\nimport sys\nimport autopar as ap\n', "g") == with_public
    # A module of the program's own that the script imports, which imported autopar:
    # found by what it holds (autopar itself, a name, a type, a decorated function).
    for value in (autopar, autopar.parallel, autopar.Plan, autopar.parallel(helpers.square)):
        mine = types.ModuleType("mine_uses_autopar")
        mine.used, mine.other = value, json
        monkeypatch.setitem(sys.modules, "mine_uses_autopar", mine)
        assert preload_for("import mine_uses_autopar\n", "e") == with_public, value
    mine = types.ModuleType("mine_uses_autopar")
    mine.like = types.ModuleType("autoparx")  # a name that only starts alike
    monkeypatch.setitem(sys.modules, "mine_uses_autopar", mine)
    assert preload_for("import mine_uses_autopar\n", "f") == plain


_SEES_PRELOAD = """
import os
import sys

import marker  # the script's own module, imported before anything of autopar's
{autopar_import}

def seen(_):
    names = list(sys.modules)
    public = "autopar.decorator"
    first = public in names and names.index(public) < names.index("marker")
    return os.getpid(), first, "wrapt" in names

if __name__ == "__main__":
    from autopar import parallel

    out = parallel(seen, kind="process", workers=2).map(range(4))
    print(all(pid != os.getpid() for pid, _, _ in out), sorted({{o[1:] for o in out}}))
"""


@pytest.mark.parametrize(
    ("autopar_import", "expected"),
    [
        # Each worker runs the script again: autopar is there before the script's own
        # first import, loaded once in the server the workers fork from.
        ("from autopar import parallel", "True [(True, True)]"),
        # autopar imported under the main guard only: the workers never need it or wrapt.
        ("", "True [(False, False)]"),
    ],
)
def test_workers_of_a_script_find_autopar_preloaded_only_if_its_top_level_imports_it(
    tmp_path, autopar_import, expected
):
    from tests.conftest import run_file

    (tmp_path / "marker.py").write_text("")
    script = tmp_path / "script.py"
    script.write_text(_SEES_PRELOAD.format(autopar_import=autopar_import))
    proc = run_file(script, env={"AUTOPAR_START_METHOD": "forkserver"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected
