"""Large buffers (NumPy arrays, bytes, bytearray, memoryview, any protocol-5 out-of-band
buffer) reach process workers, and come back, through shared memory instead of the pipe.

Flow for one chunk (small chunks skip all of it: plain pickle bytes, as before)::

    caller: pickle items, protocol 5; out-of-band buffers from threshold() -> copied into
            one segment lent to the chunk by the backend's SegmentPool (reused pages)
            sends Shipped(pickle, segment, layout) and the name for its results
    worker: maps the segment (kept), unpickles over it, runs; pickles its results
            the same way, large buffers into a segment under the name it was sent;
            keeps its mapping for the segment's next chunk (item_mappings.py), or answers
            SegmentHeld(reply) when a view of an item outlived the chunk or it failed
    caller: collect maps the result segment, unlinks it, unpickles over the mapping
    chunk done: returned, not SegmentHeld -> its segment goes back to the pool; any other
            way (SegmentHeld, error, cancel, dead worker) -> unlinked, never reused;
            a result segment nobody will collect is unlinked by name (Chunks)

Copy semantics: each side sees its own copy. A worker's items lie in a segment that only
its chunk uses (item_mappings.py): it may write to them, and the caller's arrays never
change. Results are private copy-on-write mappings on the caller's side: writable.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import pickle
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import shared_memory
from .segment_pool import SegmentPool

if TYPE_CHECKING:  # (concurrent.futures imports logging, which workers must not load)
    from concurrent.futures import Future

# Buffers from this many bytes go through shared memory, whatever threshold() measured:
# below it the pipe copies one in about the time a segment takes to map (the "fixed" cost
# threshold() measures: tens of microseconds).
MIN_SHARED = 64 * 1024
# ...and at most from this many: the pipe costs two copies and a pickle per byte where a
# reused segment costs one memcpy, so from 1 MiB (a copy of ~100 us at 10 GB/s, against
# a fixed cost of tens of us: ``python -m autopar info``) shared memory gains on any
# machine, and a noisy measurement must not send large arrays back through the pipe.
MAX_SHARED = 1024 * 1024
ALIGN = shared_memory.ALIGN
_FLAT = (bytes, bytearray, memoryview)

Dumps = Callable[[Any, Optional["Keeper"]], bytes]


class Shipped(NamedTuple):
    """A pickle whose out-of-band buffers lie in segment ``name`` at ``layout``."""

    data: bytes
    name: str
    layout: Tuple[Tuple[int, int], ...]  # (offset, size) of each buffer, in pickle order


# ---------------------------------------------------------------------------- threshold
class Measured(NamedTuple):
    """What threshold() rests on, measured once per program (``python -m autopar info``)."""

    threshold: int  # bytes: fixed / saved, clamped to [MIN_SHARED, MAX_SHARED]
    fixed: float  # seconds per chunk: write 1 byte into a reused segment, map, unmap
    shared: float  # seconds per byte of that trip (memcpy in, map, read, unmap)
    saved: float  # seconds per byte the pipe costs more (pickle, pipe, unpickle - shared)


# Measured by the first process call; _measure_lock guards _measured.
_measure_lock = threading.Lock()
_measured: List[Measured] = []
# Runs of each part; the least is kept. Enough that one run on an idle core is among them
# on a loaded machine (each run is under a millisecond: 1 MiB, 40 runs in all).
MEASURE_RUNS = 9


def threshold() -> int:
    """Bytes from which a buffer travels through shared memory on this machine.

    The size at which a segment's fixed cost (map and unmap a reused one) equals what
    shared memory saves per byte over the pipe (pickle copy + pipe + unpickle copy, less a
    trip through a reused segment), each the least of a few runs on 1 MiB; clamped to
    [MIN_SHARED, MAX_SHARED]. ``python -m autopar info`` shows it.
    """
    return measured().threshold


def copy_seconds_per_byte() -> float:
    """Seconds per byte of a buffer's trip through a reused segment: copied in, mapped and
    read on the other side, unmapped (the least of a few runs on 1 MiB)."""
    return measured().shared


def travels_shared(value: Any, size: int) -> bool:
    """Whether ``value``, a buffer of ``size`` bytes, would reach a process worker through
    shared memory: flat builtins and contiguous NumPy-like arrays from threshold()."""
    if size < threshold():
        return False
    if type(value) in _FLAT:
        return True
    return hasattr(value, "__array_interface__") and memoryview(value).contiguous


def known() -> bool:
    """Whether the threshold has been measured (by a process call, or ``info``)."""
    with _measure_lock:
        return bool(_measured)


def measured() -> Measured:
    """The threshold and the costs it was computed from (measured on first use)."""
    with _measure_lock:
        if not _measured:
            _measured.append(_measure())
        return _measured[0]


def _measure() -> Measured:
    size = 1 << 20
    source = memoryview(bytes(range(256)) * (size // 256))
    # Pages already written and mapped, as the segment pool's are when reused.
    segment = shared_memory.create_mapped([source], [0], size)
    try:
        fixed = _least(lambda: _through_segment(segment, source[:1]))
        shared = _least(lambda: _through_segment(segment, source)) / size
    finally:
        shared_memory.unlink(segment.name)
    dump = _least(lambda: pickle.dumps(source.obj, protocol=5)) / size
    data = pickle.dumps(source.obj, protocol=5)
    load = _least(lambda: pickle.loads(data)) / size
    pipe = _least(lambda: _through_pipe(source)) / size
    saved = max(dump + pipe + load - shared, 1e-12)
    even = min(MAX_SHARED, max(MIN_SHARED, int(fixed / saved)))
    return Measured(even, fixed, shared, saved)


def _least(run: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(MEASURE_RUNS):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def _through_segment(segment: shared_memory.Mapped, data: memoryview) -> None:
    assert segment.mapped is not None
    segment.mapped[: data.nbytes] = data
    mapped = _map(segment.name, data.nbytes)
    with memoryview(mapped) as view:
        bytes(view)
    mapped.close()


def _through_pipe(data: memoryview) -> None:
    read_end, write_end = os.pipe()
    try:
        reader = threading.Thread(target=_drain, args=(read_end, len(data)))
        reader.start()
        sent = 0
        while sent < len(data):
            sent += os.write(write_end, data[sent:])
        reader.join()
    finally:
        os.close(read_end)
        os.close(write_end)


def _drain(fd: int, size: int) -> None:
    while size > 0:
        size -= len(os.read(fd, min(size, 1 << 20)))


# ---------------------------------------------------------------------------- pickling
class Keeper:
    """A pickle ``buffer_callback``: keeps out-of-band buffers from ``threshold`` bytes,
    lets smaller ones (and any it cannot view flat) go in-band."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.kept: List[memoryview] = []

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: pickle copies it in-band
            return True
        if raw.nbytes < self.threshold:
            return True
        self.kept.append(raw)
        return False


class _Flat:
    """Pickles a bytes, bytearray or memoryview as an out-of-band buffer (plain pickling
    copies the first two in-band and refuses the third)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: Any) -> Any:
        view = memoryview(self.value)
        raw = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        kind = type(self.value).__name__
        return _rebuild, (kind, pickle.PickleBuffer(raw), view.format, view.shape)


def _rebuild(kind: str, buffer: Any, form: str, shape: Tuple[int, ...]) -> Any:
    if kind == "bytes":
        return bytes(buffer)
    if kind == "bytearray":
        return buffer if type(buffer) is bytearray else bytearray(buffer)
    view = memoryview(buffer)
    if form == "B" and len(shape) == 1:
        return view
    flat: Any = view.cast("B")  # (typeshed knows only literal formats)
    try:
        return flat.cast(form, shape)
    except (TypeError, ValueError):  # a format cast() cannot make: the flat bytes
        return view


class _Dated:
    """Pickles a NumPy datetime64/timedelta64 array as integers (which NumPy sends
    out-of-band; these it copies in-band) and views them back."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array

    def __reduce_ex__(self, protocol: Any) -> Any:
        array = self.array
        return _view_as, (array.view(f"i{array.dtype.itemsize}"), array.dtype)


def _view_as(array: Any, dtype: Any) -> Any:
    return array.view(dtype)


def _dated(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return type(value).__name__ == "ndarray" and getattr(dtype, "kind", "") in ("m", "M")


def wrap_flat(values: Sequence[Any], threshold: int, *, star: bool) -> Optional[List[Any]]:
    """``values`` with large (or any memoryview) flat items and NumPy date arrays, or
    star-arguments, marked to travel out-of-band; None when there is none."""
    changed = False

    def mark(value: Any) -> Any:
        nonlocal changed
        kind = type(value)
        if kind in _FLAT and (kind is memoryview or len(value) >= threshold):
            changed = True
            return _Flat(value)
        if _dated(value) and value.nbytes >= threshold:
            changed = True
            return _Dated(value)
        if star and kind is tuple:
            return tuple(mark(arg) for arg in value)
        return value

    marked = [mark(value) for value in values]
    return marked if changed else None


def pack(
    dumps: Dumps,
    obj: Any,
    threshold: int,
    rewrap: Callable[[], Optional[Any]],
    create: Callable[[List[memoryview]], Optional[str]],
) -> Union[bytes, Shipped]:
    """``obj`` pickled; its large buffers in a segment made by ``create`` when there are
    any. ``rewrap()`` is ``obj`` with its flat items marked (see wrap_flat), asked only
    when the standard pickler fails or makes a large pickle; ``dumps`` then pickles."""
    keeper = Keeper(threshold)
    try:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=keeper)
        if len(data) < threshold and not keeper.kept:
            return data  # the common case: nothing large, nothing more to do
    except Exception:  # a memoryview, or what only cloudpickle can pickle (dumps)
        keeper.kept.clear()
        marked = rewrap()
        obj = obj if marked is None else marked
        data = dumps(obj, keeper)
    else:
        if len(data) >= threshold:
            marked = rewrap()
            if marked is not None:
                keeper.kept.clear()
                data, obj = dumps(marked, keeper), marked
    if not keeper.kept:
        return data
    name = create(keeper.kept)
    if name is None:  # no room in shared memory: everything through the pipe
        return dumps(obj, None)
    return Shipped(data, name, _layout([b.nbytes for b in keeper.kept]))


def _layout(sizes: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
    offsets = shared_memory.offsets(sizes, ALIGN)
    return tuple(zip(offsets, sizes))


def load(shipped: Shipped, *, unlink: bool) -> Any:
    """Unpickle ``shipped`` over a private copy-on-write mapping of its segment; with
    ``unlink``, remove the segment (its mapping lives on with the rebuilt objects)."""
    mapped = _map(shipped.name, _end(shipped.layout))
    if unlink:
        sweep(shipped.name)
    return _unpickle_over(mapped, shipped.data, shipped.layout)


def load_function(name: str, size: int, layout: Tuple[Tuple[int, int], ...]) -> Any:
    """The function pickled in the first ``size`` bytes of segment ``name`` (see
    shared_memory.SharedFunctions), its out-of-band buffers (arrays it carries) viewed in
    place over a private copy-on-write mapping: a worker reads them without copying, the
    workers of a machine share their pages until one writes, and a write stays its own."""
    mapped = _map(name, _end(layout))
    with memoryview(mapped) as view:
        head = view[:size]
    with head:
        return _unpickle_over(mapped, head, layout)


def _end(layout: Tuple[Tuple[int, int], ...]) -> int:
    return layout[-1][0] + layout[-1][1]


def _unpickle_over(mapped: mmap.mmap, data: Any, layout: Tuple[Tuple[int, int], ...]) -> Any:
    # (The mapping lives as long as any view of it: no close here.)
    with memoryview(mapped) as view:
        buffers = [view[offset : offset + n] for offset, n in layout]
    return pickle.loads(data, buffers=buffers)


class SegmentHeld(NamedTuple):
    """A worker's reply whose chunk's segment must be unlinked, not reused: the chunk
    failed, or one of its items is still viewed (see item_mappings.release())."""

    reply: Union[bytes, Shipped]


def _map(name: str, size: int) -> mmap.mmap:
    fd = shared_memory.open_segment(name, os.O_RDONLY)
    try:
        return mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)


def sweep(name: str) -> None:
    """Unlink segment ``name`` made by a worker, if it exists, and tell the resource
    tracker (the worker registered it there, so that a killed caller's is unlinked too)."""
    import _posixshmem  # type: ignore[import-not-found,unused-ignore]
    from multiprocessing import resource_tracker

    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return
    resource_tracker.unregister("/" + name, "shared_memory")


# ---------------------------------------------------------------------------- worker side
def create_returned(name: str) -> Callable[[List[memoryview]], Optional[str]]:
    """A ``create`` for pack() in a worker: the segment takes the name the caller chose."""

    def create(parts: List[memoryview]) -> Optional[str]:
        from multiprocessing.shared_memory import SharedMemory

        offsets = shared_memory.offsets([p.nbytes for p in parts], ALIGN)
        size = offsets[-1] + parts[-1].nbytes
        if not shared_memory.room_for(size):
            return None
        try:  # registers it with the resource tracker, which the caller shares
            segment = SharedMemory(name=name, create=True, size=size)
        except OSError:  # (a name left by a killed program with a reused pid)
            return None
        try:
            for offset, part in zip(offsets, parts):
                shared_memory.write(segment._fd, part, offset)  # type: ignore[attr-defined]
        except OSError:  # (/dev/shm filled up meanwhile): through the pipe
            segment.close()
            segment.unlink()
            return None
        segment.close()
        return name

    return create


# ---------------------------------------------------------------------------- caller side
# Result segments are named for their chunk: the caller's pid (so a sweep by prefix finds
# them), a salt against names left by an earlier program with the same pid, a counter.
_salt = os.urandom(4).hex()
_counter = itertools.count()


def _forget_after_fork() -> None:
    global _salt
    _salt = os.urandom(4).hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def result_name() -> str:
    """A fresh name for the segment a chunk's large results will be written to."""
    return f"{shared_memory.PREFIX}{os.getpid()}_r{_salt}{next(_counter)}"


class _Chunk:
    __slots__ = ("abandoned", "lock", "returned", "segment")

    def __init__(self, segment: Optional[str], returned: str) -> None:
        self.lock = threading.Lock()  # guards segment
        self.segment = segment
        self.returned = returned
        self.abandoned = False


class Chunks:
    """What each chunk in flight holds in shared memory, freed when the chunk ends.

    A chunk's own segment goes back to ``pool`` when its future is done, however: for
    reuse when the chunk returned and its worker let go of it, else to be unlinked. Its
    result segment is unlinked by whoever collects the result (load()), or, when nobody
    will (the future failed or was cancelled, or the run abandoned it), here.
    """

    def __init__(self, pool: SegmentPool) -> None:
        self.pool = pool
        # _lock guards _live (chunks are submitted and collected on several threads).
        self._lock = threading.Lock()
        self._live: Dict[Future[Any], _Chunk] = {}

    def track(self, future: Future[Any], segment: Optional[str], returned: str) -> None:
        chunk = _Chunk(segment, returned)
        with self._lock:
            self._live[future] = chunk
        future.add_done_callback(lambda done: self._ended(done, chunk))

    def collected(self, future: Future[Any], reply: Any) -> None:
        """The caller takes this chunk's ``reply`` (and unlinks its result segment)."""
        with self._lock:
            chunk = self._live.pop(future, None)
        if chunk is not None:
            # Now, not only in the future's callback, which may still be on its way.
            self._give_back(chunk, self.pool, reuse=type(reply) is not SegmentHeld)

    def abandon(self, future: Future[Any]) -> None:
        """Nobody will collect this chunk: free its result segment once it exists."""
        with self._lock:
            chunk = self._live.pop(future, None)
        if chunk is not None:
            chunk.abandoned = True
            if future.done():  # (its callback may have run before the flag was set)
                sweep(chunk.returned)

    def close(self) -> None:
        """Free what every chunk still holds (the pool is stopping)."""
        with self._lock:
            chunks, self._live = list(self._live.values()), {}
        for chunk in chunks:
            self._give_back(chunk, self.pool, reuse=False)
            sweep(chunk.returned)

    @staticmethod
    def _give_back(chunk: _Chunk, pool: SegmentPool, *, reuse: bool) -> None:
        # Once per chunk, by whichever of collect and the callback comes first (a second
        # would end the lease of the segment's next borrower); the other waits until it is
        # done, so that once either returns, an unclean chunk's segment is gone.
        with chunk.lock:
            if chunk.segment is not None:
                pool.give_back(chunk.segment, reuse=reuse)
                chunk.segment = None

    def _ended(self, future: Future[Any], chunk: _Chunk) -> None:
        clean = not future.cancelled() and future.exception() is None
        self._give_back(chunk, self.pool, reuse=clean and type(future.result()) is not SegmentHeld)
        with contextlib.suppress(Exception):
            if chunk.abandoned or not clean:
                sweep(chunk.returned)
