"""Serial: each chunk runs in the caller's thread, inside submit(). No pool, no copies."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Optional, Sequence

from ..worker import run_chunk
from .base import Backend, Replacement

# Serial chunks only batch the bookkeeping (the deadline is checked between items, not
# chunks), so they are large: small ones would cost tiny items a large share of plain
# map's speed (the "tiny" row of benchmarks/RESULTS.md, "serial named first").
SERIAL_CHUNK = 16_384


class SerialBackend(Backend):
    kind = "serial"
    inline = True

    @classmethod
    def default_chunksize(cls, n_items: Optional[int], workers: int) -> Optional[int]:
        # One chunk would do, but smaller ones let imap stream and the timeout be checked.
        return None if n_items is None else min(max(n_items, 1), SERIAL_CHUNK)

    def replacement(self, config: Any, workers: int) -> Optional[Replacement]:
        return None  # one pool serves every call: it holds nothing

    def submit(
        self,
        payload: Any,
        start: int,
        items: Sequence[Any],
        *,
        star: bool,
        deadline: Optional[float],
    ) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(run_chunk(payload, start, items, star=star, deadline=deadline))
        return future
