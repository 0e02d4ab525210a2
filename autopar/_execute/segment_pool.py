"""Caller-owned segments recycled across chunks, so that a chunk's large buffers are
copied into pages the caller already holds and maps: one memcpy. A fresh segment's pages
must first be allocated and zeroed by the kernel, and freed again when it is unlinked,
which costs ten times as much as the memcpy, more than the work of the benchmark's items
(the "fresh segments" and "reused segments" rows of
``python -m benchmarks.bench_buffers --pages``).

    lend(parts)   the smallest idle segment that fits, else a new one (a size class);
                  parts copied in; the segment belongs to one chunk until given back
    give_back(name, reuse=True)    the chunk returned and its worker let go of its mapping:
                  the segment is idle again, unless idle ones would then pass the cap
    give_back(name, reuse=False)   anything else (failed, cancelled, killed, or a worker
                  that still holds views of it): unlinked, never reused

A segment is reused only after the chunk that used it has returned, so no worker maps it
any more: a reader never sees a later chunk's bytes. Segments are owned by this process
in shared_memory's sense (0600, tracked, unlinked at shutdown and by the resource tracker
should the program be killed).
"""

from __future__ import annotations

import mmap
import os
import threading
from typing import Dict, List, Optional

from . import shared_memory

# Idle segments kept for reuse, in bytes at most: this, and a quarter of /dev/shm. Enough
# for the chunks in flight of benchmarks/bench_buffers.py (a window of 4 chunks of ~120
# MiB), so that a call following another writes into reused pages only.
MAX_IDLE = 512 * 1024 * 1024
_MIN_CLASS = 64 * 1024


def size_class(size: int) -> int:
    """``size`` rounded up to one of 8 steps per power of two (at most 1/8 more), so that
    chunks of similar sizes share segments."""
    step = max(_MIN_CLASS, 1 << max(0, size.bit_length() - 4))
    return -(-size // step) * step


def _idle_cap() -> int:
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:  # no /dev/shm (macOS): the system sizes shared memory itself
        return MAX_IDLE
    return min(MAX_IDLE, stats.f_blocks * stats.f_frsize // 4)


class _Segment:
    __slots__ = ("mapped", "name", "size")

    def __init__(self, name: str, size: int, mapped: mmap.mmap) -> None:
        self.name = name
        self.size = size
        self.mapped = mapped  # shared, writable: reused pages are written with a memcpy


class SegmentPool:
    """The segments one process pool's chunks borrow for their large buffers."""

    def __init__(self, align: int) -> None:
        self.align = align  # each buffer starts at a multiple of this many bytes
        # _lock guards _idle and _lent: chunks are submitted on the caller's threads and
        # given back from the executor's thread (a future's done callback).
        self._lock = threading.Lock()
        self._idle: List[_Segment] = []
        self._lent: Dict[str, _Segment] = {}
        self._closed = False
        self.cap = _idle_cap()

    def lend(self, parts: List[memoryview]) -> Optional[str]:
        """A segment holding ``parts`` (at shared_memory.offsets()), lent until give_back();
        None when /dev/shm has no room for a new one."""
        offsets = shared_memory.offsets([p.nbytes for p in parts], self.align)
        size = offsets[-1] + parts[-1].nbytes
        with self._lock:
            fits = [s for s in self._idle if s.size >= size]
            segment = min(fits, key=lambda s: s.size) if fits else None
            if segment is not None:
                self._idle.remove(segment)
        if segment is None:
            segment = _create(parts, offsets, size_class(size))
            if segment is None:
                return None
        else:
            for offset, part in zip(offsets, parts):
                segment.mapped[offset : offset + part.nbytes] = part
        with self._lock:
            if not self._closed:
                self._lent[segment.name] = segment
                return segment.name
        shared_memory.unlink(segment.name)  # (closed meanwhile: the pool was aborted)
        return None

    def give_back(self, name: str, *, reuse: bool) -> None:
        """The chunk that borrowed ``name`` has ended; call once per lend (a second call
        would end the next borrower's lease: shared_buffers.Chunks sees to it)."""
        with self._lock:
            segment = self._lent.pop(name, None)
            if segment is None:
                return
            if reuse:
                self._idle.append(segment)
                segment = self._trim()
        if segment is not None:
            shared_memory.unlink(segment.name)

    def _trim(self) -> Optional[_Segment]:
        # Under _lock. Past the cap, the largest idle segment goes (one per give-back
        # suffices: each adds one).
        if sum(s.size for s in self._idle) <= self.cap:
            return None
        largest = max(self._idle, key=lambda s: s.size)
        self._idle.remove(largest)
        return largest

    def idle_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._idle)

    def close(self) -> None:
        """Unlink every segment, idle or lent (the pool is stopping: no worker reads them)."""
        with self._lock:
            segments = self._idle + list(self._lent.values())
            self._idle, self._lent, self._closed = [], {}, True
        for segment in segments:
            shared_memory.unlink(segment.name)


def _create(parts: List[memoryview], offsets: List[int], size: int) -> Optional[_Segment]:
    if not shared_memory.room_for(size):
        return None
    try:
        made = shared_memory.create_mapped(parts, offsets, size)
    except OSError:  # (/dev/shm filled up meanwhile): through the pipe
        return None
    assert made.mapped is not None
    return _Segment(made.name, size, made.mapped)
