"""Many threads calling decorated functions at once, with different worker counts, so that
some calls replace the pool that others are still running on.

Must hold, on every kind: each call gets all its results, in order, and none raises (a
replaced pool is retired until its last call ends, not stopped under it).
"""

from __future__ import annotations

import pytest

from tests.faults import script


@pytest.mark.parametrize("kind", ["serial", "thread", "process", "auto"])
def test_many_threads_calling_one_function_all_get_their_results(kind):
    out = script(
        f"""
        import threading
        from autopar import parallel
        from tests import helpers

        f = parallel(kind="{kind}")(helpers.square)
        out, errors = {{}}, []

        def call(i):
            try:
                # Different worker counts, so some calls replace the pool others still use.
                g = parallel(kind="{kind}", workers=1 + i % 3)(helpers.square)
                out[i] = g.map(range(i, i + 50), chunksize=3)
                out[-i - 1] = list(f.imap(range(i, i + 30)))
            except BaseException as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        assert not errors, errors
        for i in range(16):
            assert out[i] == [x * x for x in range(i, i + 50)], i
            assert out[-i - 1] == [x * x for x in range(i, i + 30)], i
        print("ok")
        """
    )
    assert out.strip() == "ok"
