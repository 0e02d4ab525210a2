"""Whole programs in a fresh interpreter, each under a hard timeout."""

import pytest

from tests.conftest import run_file, run_python

MAIN_SCRIPT = """
import threading
from autopar import parallel

@parallel(kind="process")
def cube(x):
    return x ** 3

def helper(x):
    return x + 1

if __name__ == "__main__":
    print(cube.map(range(5)))
    print(parallel(kind="process")(lambda x: helper(x) * 2).map([1, 2]))
    print(parallel(helper).map(range(3)))
"""


def test_functions_defined_in_a_main_script_run_in_processes(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(MAIN_SCRIPT)
    proc = run_file(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[0, 1, 8, 27, 64]", "[4, 6]", "[1, 2, 3]"]
    assert proc.stderr == ""


def test_autopar_kind_serial_runs_everything_in_the_caller_thread():
    proc = run_python(
        """
        import threading
        from autopar import parallel
        from tests.helpers import thread_id
        f = parallel(thread_id)
        assert set(f.map(range(50))) == {threading.get_ident()}
        assert set(f.imap_unordered(range(50))) == {threading.get_ident()}
        print(f.last_plan.kind)
        """,
        env={"AUTOPAR_KIND": "serial"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "serial"


def test_exit_with_live_pools_is_quick_and_silent():
    proc = run_python(
        """
        import sys
        from autopar import parallel
        from tests.helpers import square
        parallel(kind="process")(square).map(range(10))
        parallel(kind="thread")(square).map(range(10))
        sys.exit(3)
        """,
        timeout=30,
    )
    assert proc.returncode == 3
    assert proc.stderr == ""


def test_exit_is_silent_where_the_program_loaded_process_pools_of_its_own():
    # The planner loads the serial backend by a plain import; the exit hook must not
    # hook it then (threading takes no hooks at exit), whoever loaded process pools.
    proc = run_python(
        """
        import concurrent.futures.process
        from autopar import parallel
        print(parallel(abs).map(range(-2, 2)))
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[2, 1, 0, 1]"
    assert proc.stderr == ""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="os.fork is POSIX only")
def test_forked_child_gets_fresh_pools():
    proc = run_python(
        """
        import os
        import autopar
        from autopar import parallel
        from autopar._execute import registry
        from tests.helpers import pid
        f = parallel(kind="process", workers=2)(pid)
        parent_workers = set(f.map(range(4), chunksize=1))
        child = os.fork()
        if child == 0:
            ok = registry.peek("process") is None
            child_workers = set(f.map(range(4), chunksize=1))
            ok = ok and not (child_workers & parent_workers) and os.getpid() not in child_workers
            autopar.shutdown()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        print(os.waitstatus_to_exitcode(status))
        """,
        env={"PYTHONWARNINGS": "ignore::DeprecationWarning"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


def test_demo_prints_the_table():
    proc = run_python(
        "import sys; from autopar.__main__ import main; sys.exit(main())",
        args=("demo", "--scale", "0.05", "--repeat", "1"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "serial" in lines[0] and "autopar" in lines[0]
    assert any(line.startswith("sleep") for line in lines)
    assert any(line.startswith("square") for line in lines)


def test_cli_help():
    proc = run_python("import sys; from autopar.__main__ import main; main()", args=("--help",))
    assert proc.returncode == 0 and "demo" in proc.stdout and "info" in proc.stdout


def test_import_is_light():
    proc = run_python(
        """
        import sys, autopar
        heavy = [m for m in ("multiprocessing", "concurrent.futures.process", "cloudpickle")
                 if m in sys.modules]
        print(heavy)
        """
    )
    assert proc.stdout.strip() == "[]", proc.stderr


def test_a_process_worker_loads_only_the_worker_code():
    # Every process worker (and the forkserver) imports autopar._execute.worker before its first
    # task: the package must not drag in the decorator's wrapt, logging or the planner.
    proc = run_python(
        """
        import sys, autopar._execute.worker
        loaded = [m for m in ("wrapt", "logging", "autopar.decorator", "autopar._auto",
                              "autopar._execute.registry") if m in sys.modules]
        print(loaded)
        """
    )
    assert proc.stdout.strip() == "[]", proc.stderr


def test_public_names_load_on_first_use():
    proc = run_python(
        """
        import autopar
        from autopar import *
        print(sorted(name for name in autopar.__all__ if not hasattr(autopar, name)))
        print(autopar.parallel is autopar.decorator.parallel, autopar.Plan.__module__)
        """
    )
    assert proc.stdout.splitlines() == ["[]", "True autopar.plan"], proc.stderr
