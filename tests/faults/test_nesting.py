"""A decorated function called from inside a worker, and numeric libraries' threads
inside process workers.

Must hold: the nested call runs serially in the worker that made it (same process and
thread, no new pool); process workers get one BLAS/OpenMP thread each unless the user set
the variable, whose value they then keep.
"""

from __future__ import annotations

from tests.faults import script


def test_nested_call_in_a_process_worker_runs_serially_in_that_worker():
    out = script(
        """
        import multiprocessing, os
        from tests import helpers

        results = helpers.outer_process.map([3, 4, 5, 6], chunksize=1)
        outer_pids = set()
        for pid, inner, kind in results:
            assert kind == "serial", kind
            assert {p for p, _ in inner} == {pid}  # ran in the outer worker, no new workers
            outer_pids.add(pid)
        assert os.getpid() not in outer_pids
        assert len(multiprocessing.active_children()) <= 2  # the outer pool's, no more
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_nested_call_in_a_thread_worker_runs_serially_in_that_thread():
    out = script(
        """
        import multiprocessing, os, threading
        from tests import helpers

        for pid, tid, inner, kind in helpers.outer_thread.map([3, 4, 5, 6], chunksize=1):
            assert kind == "serial", kind
            assert pid == os.getpid() and tid != threading.get_ident()
            assert set(inner) == {(pid, tid)}  # in the outer worker's own thread
        assert multiprocessing.active_children() == []  # no process pool was started
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_process_workers_get_one_blas_thread_unless_the_user_set_it():
    code = """
        import os
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            if os.environ.get(var) == "unset":
                del os.environ[var]
        from autopar import parallel
        from tests import helpers
        print(parallel(kind="process", workers=2)(helpers.blas_env).map(range(2))[0])
        """
    unset = dict.fromkeys(["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"], "unset")
    out = script(code, env=unset)
    default = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert out.strip() == repr(default)
    out = script(code, env={**unset, "OMP_NUM_THREADS": "3"})
    assert out.strip() == repr({**default, "OMP_NUM_THREADS": "3"})
