"""Shared-memory segments: large payloads reach process workers once, not through the pipe.

A segment is created by the caller with mode 0600 (private to this user: the kernel's
``shm_open`` mode), under a name that starts with :data:`PREFIX` and this process's id,
and is registered with multiprocessing's resource tracker, which unlinks it should this
process be killed outright. The caller unlinks what it created as soon as no call uses it,
and everything at shutdown. Workers attach read-only by name and never unlink: a segment
has one owner.

Flow for a large function (the first user of this module)::

    caller: pickle fn, its large out-of-band buffers (arrays it carries) kept apart
            -> same pickle and buffers as a live segment? reuse its name : write a new one
               (the pickle first, each buffer after it at a multiple of ALIGN)
    chunk:  carries FunctionRef(name, size, layout), a few dozen bytes
    worker: FunctionRef seen for the first time -> map the segment, unpickle (the buffers
            viewed in place, copy-on-write: see shared_buffers.load_function), cache by name
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

PREFIX = "autopar_"
# A segment is made only while /dev/shm would keep this share of it free afterwards
# (a container's /dev/shm is often 64 MiB; a full one kills the writer with SIGBUS).
SHM_HEADROOM = 2
# Distinct large functions kept in segments at once; an older one without users goes first.
KEEP_FUNCTIONS = 4
ALIGN = 64  # offsets of buffers in a segment: a cache line, the most NumPy asks for
# Bytes read at a time when a function's buffers are compared with its segment's (a
# scratch buffer that stays in cache: 17 ms for 50 MiB, 2 cores).
COMPARE_STEP = 256 * 1024

T = TypeVar("T")


def open_segment(name: str, flags: int) -> int:
    """The descriptor of segment ``name`` opened with ``flags``; one it creates gets mode
    0600 (private to this user)."""
    import _posixshmem  # type: ignore[import-not-found,unused-ignore]

    fd: int = _posixshmem.shm_open("/" + name, flags, mode=0o600)
    return fd


def _name() -> str:
    # (os.urandom, which secrets.token_hex reads too: importing secrets loads hmac and
    # hashlib, 5 to 10 ms of every worker server's boot.)
    return f"{PREFIX}{os.getpid()}_{os.urandom(8).hex()}"


# Segments this process created and has not unlinked, by name; _lock guards it. A forked
# child starts with none: its parent's segments are the parent's to unlink.
_lock = threading.Lock()
_owned: Dict[str, Mapped] = {}


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _owned.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def create(*parts: Any, align: int = 1) -> str:
    """A new segment holding the bytes of each of ``parts``, each at an offset that is a
    multiple of ``align`` (see :func:`offsets`); returns its name."""
    views = [memoryview(part).cast("B") for part in parts]
    starts = offsets([view.nbytes for view in views], align)
    size = starts[-1] + views[-1].nbytes if views else 0
    return _new(views, starts, max(1, size), keep_mapped=False).name


class Mapped:
    """A segment this process created, written through its file, then kept mapped
    (shared, writable, its pages populated) so that writing it again is a memcpy."""

    __slots__ = ("fd", "mapped", "name", "size")

    def __init__(self, size: int) -> None:
        from multiprocessing import resource_tracker

        self.name, self.size = _name(), size
        self.mapped: Optional[mmap.mmap] = None
        flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
        self.fd = open_segment(self.name, flags)
        # Registered before anything can fail: the tracker unlinks it if we are killed.
        resource_tracker.register("/" + self.name, "shared_memory")
        try:
            os.ftruncate(self.fd, size)
        except OSError:
            self.close()
            self.unlink()
            raise

    def map(self) -> mmap.mmap:
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # (Linux, 3.10+)
        self.mapped = mapped = mmap.mmap(self.fd, self.size, flags=flags)
        return mapped

    def close(self) -> None:
        if self.mapped is not None:
            self.mapped.close()
            self.mapped = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def unlink(self) -> None:
        import _posixshmem
        from multiprocessing import resource_tracker

        _posixshmem.shm_unlink("/" + self.name)
        resource_tracker.unregister("/" + self.name, "shared_memory")


def create_mapped(parts: Sequence[memoryview], starts: Sequence[int], size: int) -> Mapped:
    """A new segment of ``size`` bytes holding ``parts`` at ``starts``, owned as create()'s
    are (unlink() removes it), its mapping kept open."""
    return _new(parts, starts, size, keep_mapped=True)


def _new(
    parts: Sequence[memoryview], starts: Sequence[int], size: int, *, keep_mapped: bool
) -> Mapped:
    """A segment written through its file and owned by this process; mapped if asked (a
    segment that is only read by workers needs no mapping here, nor its file open)."""
    segment = Mapped(size)
    try:
        for start, view in zip(starts, parts):
            write(segment.fd, view, start)
        if keep_mapped:
            segment.map()
        else:
            segment.close()
    except BaseException:
        segment.close()
        segment.unlink()
        raise
    with _lock:
        _owned[segment.name] = segment
    return segment


def room_for(size: int) -> bool:
    """Whether /dev/shm keeps room for a segment of ``size`` bytes and as much again."""
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:  # no /dev/shm (macOS): the system sizes shared memory itself
        return True
    return stats.f_bavail * stats.f_frsize >= SHM_HEADROOM * size


def write(fd: int, view: memoryview, offset: int) -> None:
    """Write ``view`` at ``offset`` of segment ``fd``. Through the file, not a mapping: the
    kernel then fills fresh pages without a fault per page, four to six times faster for
    a few MiB (benchmarks/bench_buffers.py)."""
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:], offset + done)


def offsets(sizes: Sequence[int], align: int) -> List[int]:
    """Where parts of ``sizes`` bytes start in a segment, each at a multiple of ``align``."""
    starts, at = [], 0
    for size in sizes:
        starts.append(at)
        at += -(-size // align) * align
    return starts


def unlink(name: str) -> None:
    """Remove a segment this process created (workers that mapped it keep their mapping)."""
    # Under the lock, so that once any caller returns the segment is gone (a chunk's
    # segment is unlinked by its future's callback and by collect, whichever is first).
    with _lock:
        segment = _owned.pop(name, None)
        if segment is not None:
            segment.close()
            with contextlib.suppress(FileNotFoundError):  # (removed by hand, or the tracker)
                segment.unlink()


def unlink_all() -> None:
    """Remove every segment this process created; autopar.shutdown() and exit call it."""
    with _lock:
        names = list(_owned)
    for name in names:
        unlink(name)


def owned() -> List[str]:
    """Names of the segments this process holds now (for tests and ``info``)."""
    with _lock:
        return list(_owned)


def read(name: str, size: int, load: Callable[[memoryview], T]) -> T:
    """Map segment ``name`` read-only, pass its first ``size`` bytes to ``load``, unmap.

    ``load`` must not keep the view (pickle.loads copies what it rebuilds). The mapping
    bypasses SharedMemory, which before Python 3.13 registers every attach with the
    resource tracker; a worker is not the segment's owner and must not be counted as one.
    """
    fd = open_segment(name, os.O_RDONLY)
    try:
        mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
    finally:
        os.close(fd)
    if mapped is None:
        return load(memoryview(b""))
    try:
        with memoryview(mapped) as view:
            return load(view)
    finally:
        mapped.close()


class FunctionRef:
    """What a chunk carries instead of a large pickled function: where to read it. The
    pickle fills the segment's first ``size`` bytes; its out-of-band buffers lie at
    ``layout``, an (offset, size) pair each, in pickle order.

    The caller's copy is also a lease: while one is alive its segment stays.
    """

    __slots__ = ("__weakref__", "layout", "name", "size")

    def __init__(self, name: str, size: int, layout: Tuple[Tuple[int, int], ...] = ()) -> None:
        self.name = name
        self.size = size
        self.layout = layout

    def __reduce__(self) -> Any:
        return FunctionRef, (self.name, self.size, self.layout)

    def __repr__(self) -> str:
        return f"FunctionRef({self.name!r}, {self.size}, {self.layout!r})"


class _Shipped:
    __slots__ = ("data", "layout", "name", "users")

    def __init__(self, data: Tuple[bytes, ...], buffers: Sequence[memoryview]) -> None:
        # The pieces are kept to compare (memcmp is faster than hashing the payload); a
        # large bytes value the function carries is the function's own object, not a
        # copy. Buffers may change in place: they are compared with the segment's copy.
        self.data = data
        views = [memoryview(part) for part in data]
        size = sum(view.nbytes for view in views)
        first = -(-size // ALIGN) * ALIGN
        starts = [0, *itertools.accumulate(view.nbytes for view in views[:-1])]
        at = [first + start for start in offsets([b.nbytes for b in buffers], ALIGN)]
        self.layout = tuple(zip(at, (b.nbytes for b in buffers)))
        end = at[-1] + buffers[-1].nbytes if buffers else size
        self.name = _new([*views, *buffers], [*starts, *at], max(1, end), keep_mapped=False).name
        self.users: weakref.WeakSet[FunctionRef] = weakref.WeakSet()

    def holds(self, data: Tuple[bytes, ...], buffers: Sequence[memoryview]) -> bool:
        """Whether this is the segment of the pickle ``data`` with ``buffers``."""
        if self.data != data or [n for _, n in self.layout] != [b.nbytes for b in buffers]:
            return False
        return not buffers or _segment_holds(self.name, self.layout, buffers)


def _segment_holds(
    name: str, layout: Sequence[Tuple[int, int]], buffers: Sequence[memoryview]
) -> bool:
    """Whether segment ``name`` holds the bytes of ``buffers`` at ``layout``: read through
    its file a step at a time, each step compared by memcmp (bytearray's comparison)."""
    with open(open_segment(name, os.O_RDONLY), "rb", buffering=0) as segment:  # (closes fd)
        scratch = bytearray(COMPARE_STEP)
        for (offset, size), buffer in zip(layout, buffers):
            segment.seek(offset)
            for at in range(0, size, COMPARE_STEP):
                n = min(COMPARE_STEP, size - at)
                piece = scratch if n == COMPARE_STEP else bytearray(n)
                if segment.readinto(piece) != n or piece != buffer[at : at + n]:
                    return False
        return True


class SharedFunctions:
    """The large pickled functions one process pool's workers read from shared memory.

    A call pickles its function anew (the function may have changed since: a table
    mutated in place); when the pickle's pieces and buffers equal a live segment's, that
    segment is reused, and workers that loaded it before do not load it again.
    """

    def __init__(self) -> None:
        # _lock guards _shipped (calls on several threads share one pool).
        self._lock = threading.Lock()
        self._shipped: List[_Shipped] = []

    def ref(self, parts: Tuple[bytes, ...], buffers: Sequence[memoryview] = ()) -> FunctionRef:
        """A lease on a segment holding the pickle whose pieces are ``parts`` and its
        out-of-band ``buffers`` (flat views), made or reused."""
        with self._lock:
            entry = next((e for e in self._shipped if e.holds(parts, buffers)), None)
            if entry is None:
                entry = _Shipped(parts, buffers)
                self._shipped.insert(0, entry)
                self._evict()
            lease = FunctionRef(entry.name, sum(len(part) for part in parts), entry.layout)
            entry.users.add(lease)
            return lease

    def _evict(self) -> None:
        idle = [e for e in self._shipped[KEEP_FUNCTIONS:] if not e.users]
        for entry in idle:
            self._shipped.remove(entry)
            unlink(entry.name)

    def close(self) -> None:
        """Unlink every segment (the pool is stopping: no worker will read them)."""
        with self._lock:
            shipped, self._shipped = self._shipped, []
        for entry in shipped:
            unlink(entry.name)

    def names(self) -> Optional[List[str]]:
        with self._lock:
            return [e.name for e in self._shipped]
