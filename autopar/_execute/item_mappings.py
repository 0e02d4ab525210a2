"""A process worker's mappings of the caller's item segments, kept across chunks.

The caller reuses its segments (segment_pool.py), so a worker meets the same few names
again and again. Mapping a segment anew costs a page fault per 4 KiB as the items are
read: reading them takes three times as long as through a kept mapping, whose pages stay
mapped (the "sum, mapped anew" and "sum, mapping kept" rows of
``python -m benchmarks.bench_buffers --pages``).

    load(shipped): the segment's kept mapping (or a new one: shared, the whole file),
                   items unpickled over a slice per buffer
    release(...):  every slice let go -> True, the mapping stays kept; a slice still
                   viewed (an item kept past the chunk) -> False, the mapping is dropped,
                   and the caller unlinks the segment instead of reusing it

Why a kept mapping never shows stale bytes: it is MAP_SHARED, so it shows the file as the
caller last wrote it, and the caller rewrites a segment only after the chunk that used it
returned (and released). Shared, not copy-on-write: a page the worker wrote would
otherwise stay its private copy and hide the next chunk's bytes. A worker may still write
to its items: its writes land in a segment that only its chunk uses, never in the
caller's arrays.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import threading
from collections import OrderedDict
from typing import Any, List, Tuple

from .shared_buffers import Shipped
from .shared_memory import open_segment

# Mappings a worker keeps, the least recently used dropped first. The caller's pool holds
# about its window of chunks' segments (backends/base.py window(): 2 per worker) and a
# few smaller ones for the first and last chunks of a call; a worker meets them in no
# fixed order, so it keeps twice that. A segment the caller has unlinked is dropped at
# the next chunk (its file has no links left): its pages are not held past that.
KEEP_MAPPED = 8


class _Kept:
    __slots__ = ("fd", "mapped")

    def __init__(self, fd: int, mapped: mmap.mmap) -> None:
        self.fd = fd  # kept open: fstat() tells whether the caller has unlinked it
        self.mapped = mapped

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # (still viewed: it goes with its views)
            self.mapped.close()
        os.close(self.fd)


# _lock guards _kept (a worker runs one chunk at a time; a test may run several).
_lock = threading.Lock()
_kept: OrderedDict[str, _Kept] = OrderedDict()


def load(shipped: Shipped) -> Tuple[Any, List[memoryview]]:
    """The items in ``shipped``, and the slices they view (for release())."""
    mapped = _mapping(shipped.name)
    with memoryview(mapped) as view:
        slices = [view[offset : offset + n] for offset, n in shipped.layout]
    # Each wrapped: a view made from a PickleBuffer counts on its slice (see release()).
    buffers = [pickle.PickleBuffer(s) for s in slices]
    return pickle.loads(shipped.data, buffers=buffers), slices


def release(name: str, slices: List[memoryview], *, keep: bool) -> bool:
    """Let go of one chunk's slices of segment ``name``; False when one is still viewed.
    The mapping stays kept only with ``keep`` (False: the caller will unlink it)."""
    viewed = False
    for part in slices:
        try:
            part.release()
        except BufferError:  # an item, or a view of one, outlived the chunk
            viewed = True
    if viewed or not keep:
        with _lock:
            kept = _kept.pop(name, None)
        if kept is not None:
            kept.close()
    return not viewed


def _mapping(name: str) -> mmap.mmap:
    with _lock:
        unlinked = [n for n, k in _kept.items() if n != name and os.fstat(k.fd).st_nlink == 0]
        dropped = [_kept.pop(n) for n in unlinked]
        kept = _kept.get(name)
        if kept is not None:
            _kept.move_to_end(name)
        else:
            kept = _kept[name] = _map(name)
            while len(_kept) > KEEP_MAPPED:
                dropped.append(_kept.popitem(last=False)[1])
    for old in dropped:
        old.close()
    return kept.mapped


def _map(name: str) -> _Kept:
    fd = open_segment(name, os.O_RDWR)
    try:
        return _Kept(fd, mmap.mmap(fd, os.fstat(fd).st_size, flags=mmap.MAP_SHARED))
    except BaseException:
        os.close(fd)
        raise


def _forget_after_fork() -> None:
    # A forked child's mappings are its parent's to keep; the child drops its references.
    global _lock
    _lock = threading.Lock()
    _kept.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
