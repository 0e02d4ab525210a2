"""Cutting a call's input into chunks, read lazily; the size may change between chunks.

Used by :class:`~autopar._execute.pool_run.PoolRun`. Sizes come from the plan, or adapt to
the measured chunk time and footprint when the plan leaves them open (input of unknown
length); near the end of an input of known length they shrink so no worker is left with
a long last chunk while the others idle.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any, Iterable, Optional, Sequence, Tuple

from .worker import ChunkResult

# With the chunk size left open and no length known, chunks start at one item and double
# until a chunk takes this long, so per-chunk hand-off stays a small share of the work.
TARGET_CHUNK_SECONDS = 0.005
MAX_ADAPTIVE_CHUNK = 4096
# ... or this many where the chunks run in the caller's thread and all results are kept
# anyway (a serial map): only the clock checks between chunks bound the size there.
MAX_INLINE_CHUNK = 65_536
# ... and shrink once a chunk runs this many times longer than that.
SHRINK_AFTER = 8
# ... and stop growing before a chunk's items or results pass this many bytes, so that
# streaming large items (imap over a generator of 1 MiB blobs) keeps memory flat: with
# ``window`` chunks in flight, about window x 4 MiB of items and as much of results. A
# memory bound, not a speed threshold: tests/faults/test_streaming.py holds it to account.
MAX_CHUNK_BYTES = 4 * 2**20


class ChunkSource:
    """An input iterator that also hands out whole chunks: ``take(n)`` returns its next
    ``n`` items as a sequence of its own (fewer at its end), faster than reading them one
    at a time (autopar._auto.spread.SpreadView slices its input)."""

    def take(self, count: int) -> Sequence[Any]:
        raise NotImplementedError

    def take_lazily(self, count: int) -> Iterable[Any]:
        """The same items as ``take(count)``, as an iterable that may make them only as
        it is read (a range's items): for a chunk that runs at once and is not kept."""
        return self.take(count)


def _footprint(values: Sequence[Any], first: int = 0) -> int:
    """Bytes ``values[first:]`` hold, estimated from the shallow sizes of a sample of 8
    to 15 (read in place: the tail of a list is not copied).

    Shallow sizes see bytes, str and numpy buffers, the large items that matter here, and
    a sample keeps the estimate cheap next to the work of a chunk.
    """
    count = len(values) - first
    if count <= 0:
        return 0
    sample = values[first :: max(1, count // 8)]
    return sum(map(sys.getsizeof, sample)) * count // len(sample)


class Chunker:
    """Reads the input lazily, one chunk at a time; the size may change between chunks.

    ``shrink_tail=(total, workers)``: chunks shrink as the input's end nears (see _shrunk).

    An adaptive size (no chunksize named, input of unknown length) doubles while a chunk
    runs in under TARGET_CHUNK_SECONDS and its items and results stay under half of
    MAX_CHUNK_BYTES, up to MAX_ADAPTIVE_CHUNK items; it halves when a chunk holds more
    than MAX_CHUNK_BYTES, and falls to about one target's worth of items when a chunk
    runs SHRINK_AFTER times past it. So at most about ``window x MAX_CHUNK_BYTES`` of
    input (and as much of results) is in flight, however large the items are.
    """

    def __init__(
        self,
        items: Iterable[Any],
        size: Optional[int],
        start: int = 0,
        *,
        shrink_tail: Optional[Tuple[int, int]] = None,
        most: int = MAX_ADAPTIVE_CHUNK,
    ) -> None:
        self._items = iter(items)
        self._most = most  # the largest adaptive size
        self.adaptive = size is None
        self.size = size or 1
        self.next_index = start
        self.exhausted = False
        self._roomy = True  # the last chunk read could double and stay within the byte cap
        self._shrink_tail = shrink_tail

    def next(self) -> Optional[Tuple[int, Sequence[Any]]]:
        if self.exhausted:
            return None
        size = self.size
        if self._shrink_tail is not None:
            size = self._shrunk(size, *self._shrink_tail)
        chunk: Sequence[Any]
        if isinstance(self._items, ChunkSource):
            chunk = self._items.take(size)
        else:
            chunk = list(itertools.islice(self._items, size))
        if len(chunk) < size:
            self.exhausted = True
        if not chunk:
            return None
        if self.adaptive:
            self._fit(_footprint(chunk))
        start = self.next_index
        self.next_index += len(chunk)
        return start, chunk

    def next_lazily(self) -> Optional[Tuple[int, int, Iterable[Any]]]:
        """The next chunk as (start, size asked, items read only as they run), for a chunk
        that runs at once in the caller's thread: its items are never held in a list (for
        items of a few tens of nanoseconds, making and copying that list cost a quarter of
        their work). The runner reports how many ran with :meth:`ran`."""
        if self.exhausted:
            return None
        size = self.size
        if isinstance(self._items, ChunkSource):
            return self.next_index, size, self._items.take_lazily(size)
        return self.next_index, size, itertools.islice(self._items, size)

    def ran(self, asked: int, count: int) -> None:
        """``count`` items of a lazy chunk of ``asked`` ran (fewer: the input has ended)."""
        self.next_index += count
        if count < asked:
            self.exhausted = True

    def _shrunk(self, size: int, total: int, workers: int) -> int:
        """Near the end of ``total`` items: chunks of what is left / (2 x workers), down to
        an eighth of ``size``, so that no worker is left with a long last chunk while the
        others idle (items whose cost rises along the input put the most work there)."""
        left = total - self.next_index
        return max(1, size // 8, min(size, -(-left // (2 * workers))))

    def _fit(self, nbytes: int) -> None:
        self._roomy = nbytes * 2 <= MAX_CHUNK_BYTES
        if nbytes > MAX_CHUNK_BYTES:
            self.size = max(1, self.size // 2)

    def observe(self, result: ChunkResult, count: int, first: int = 0) -> None:
        """Grow an adaptive chunk size while chunks are cheap next to their hand-off;
        halve it when a chunk held too many bytes or ran far past the target (items
        grew costlier: a chunk is also how often a watcher of the run learns of it).
        ``first``: where the chunk's results start in ``result.results`` (see
        run_chunk's ``into``)."""
        if not self.adaptive:
            return
        nbytes = _footprint(result.results, first)
        if result.wall > SHRINK_AFTER * TARGET_CHUNK_SECONDS:
            # Down to what the items just read would fill the target with, not halved:
            # items that turned costly mid-input (a watcher of the run is waiting to hear
            # of it) are read again within about one target's work.
            fits = int((len(result.results) - first) * TARGET_CHUNK_SECONDS / result.wall)
            self.size = max(1, min(self.size // 2, fits))
        elif nbytes > MAX_CHUNK_BYTES:
            self.size = max(1, self.size // 2)
        elif (
            self._roomy
            and nbytes * 2 <= MAX_CHUNK_BYTES
            and count >= self.size
            and result.wall < TARGET_CHUNK_SECONDS
        ):
            self.size = min(self.size * 2, self._most)
