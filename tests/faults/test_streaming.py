"""imap over large or endless input.

Must hold: the input is read only a bounded distance ahead of the caller's loop (a few
chunks of at most chunking.MAX_ADAPTIVE_CHUNK items), and while a gigabyte or more of
blobs passes through, peak memory stays flat (chunks stop growing at
chunking.MAX_CHUNK_BYTES).
"""

from __future__ import annotations

import pytest

from tests.faults import script

resource = pytest.importorskip("resource")  # POSIX: peak RSS of the script itself

GIGABYTES = """
import resource, sys
from autopar import parallel
from tests import helpers

MiB = 2**20
SCALE = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
read = 0

def blobs(n):
    global read
    for _ in range(n):
        read += 1
        yield b"x" * MiB  # written, so the pages really are resident

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * SCALE

f = parallel(kind="{kind}", workers=2)(helpers.identity)  # blobs go there and back
list(f.imap(blobs(8)))  # the pool is up before the baseline is taken
base, consumed, ahead = peak(), 0, 0
for blob in f.imap(blobs({count})):
    assert len(blob) == MiB
    del blob
    consumed += 1
    ahead = max(ahead, read - consumed)
growth = peak() - base
assert consumed == {count}
# {count} MiB went each way; chunks stop growing at 4 MiB, two in flight, one read ahead.
assert ahead <= 32, ahead
assert growth < 100 * MiB, growth // MiB
print("ok", ahead, growth // MiB)
"""


# Processes copy every byte through pipes several times: fewer, to stay quick on CI.
@pytest.mark.parametrize(("kind", "count"), [("thread", 2000), ("process", 400)])
def test_gigabytes_through_imap_keep_memory_flat(kind, count):
    out = script(GIGABYTES.format(kind=kind, count=count), timeout=60)
    assert out.startswith("ok"), out


@pytest.mark.parametrize("kind", ["serial", "thread", "process"])
def test_imap_over_an_infinite_generator_reads_a_bounded_distance_ahead(kind):
    out = script(
        f"""
        import itertools
        from autopar import parallel
        from autopar._execute import chunking
        from tests import helpers

        read = 0
        def numbers():
            global read
            for i in itertools.count():
                read += 1
                yield i

        it = parallel(kind="{kind}", workers=2)(helpers.square).imap(numbers())
        for i, r in enumerate(it):
            assert r == i * i
            # In flight: at most 2 x workers chunks (process pools keep one more queued per
            # worker), plus the chunk being handed out.
            assert read - i <= (2 * 2 + 1) * chunking.MAX_ADAPTIVE_CHUNK, (i, read)
            if i == 30_000:
                break
        it.close()  # stopping early cancels the rest and hands the pool back
        print("ok")
        """
    )
    assert out.strip() == "ok"
