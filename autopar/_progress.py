"""Progress bars: a tqdm bar that counts results as they reach the caller.

tqdm is optional (``pip install 'autopar[progress]'``) and imported only when a bar is
asked for. A bar stays invisible for calls shorter than :data:`DELAY` seconds (tqdm's
``delay=``), so a quick map prints nothing even with progress on.

Where the bar draws depends on who asked: ``progress=True`` given to the decorator or the
call always draws on stderr; ``AUTOPAR_PROGRESS=1`` alone draws only when stderr is a
terminal, so switching bars on for a whole program does not flood CI logs.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterator, List, Optional, TypeVar

T = TypeVar("T")

#: Seconds a call runs before its bar appears ("maps that run longer than about a second").
DELAY = 1.0

INSTALL_HINT = "progress bars need tqdm: pip install 'autopar[progress]'"


class NoBar:
    """Stands in for a bar when progress is off, so callers need no ``if``."""

    def update(self, n: int = 1) -> None:
        """Count ``n`` more results (ignored)."""

    def close(self) -> None:
        """Finish the bar (nothing to do)."""


def _tqdm_class() -> Any:
    try:
        return importlib.import_module("tqdm").tqdm
    except ImportError:
        raise ImportError(INSTALL_HINT) from None


def open_bar(total: Optional[int], desc: str, *, on: bool, explicit: bool) -> Any:
    """A tqdm bar if ``on``, else a :class:`NoBar`; raises ImportError without tqdm.

    ``explicit`` means an argument asked for it (draw anywhere) rather than only the
    environment (draw on a terminal only: tqdm's ``disable=None``).
    """
    if not on:
        return NoBar()
    tqdm = _tqdm_class()
    # disable=None is tqdm's "draw only on a terminal".
    disable = False if explicit else None
    return tqdm(total=total, desc=desc, unit="item", delay=DELAY, disable=disable)


def note_failure(bar: Any, failed: int, skipped: bool) -> None:
    """Show the call's ``failed`` items so far on ``bar``; a skipped item counts as done
    (it reaches the caller as no result at all)."""
    if isinstance(bar, NoBar):
        return
    if skipped:
        bar.update(1)
    bar.set_postfix(failed=failed, refresh=False)


def counted(chunks: Iterator[List[T]], bar: Any) -> Iterator[List[T]]:
    """Yield the chunks of results unchanged, counting their items on ``bar`` as each
    reaches the caller; the bar closes on any way out."""
    if isinstance(bar, NoBar):
        return chunks
    return _counting(chunks, bar)


def _counting(chunks: Iterator[List[T]], bar: Any) -> Iterator[List[T]]:
    try:
        for chunk in chunks:
            bar.update(len(chunk))
            yield chunk
    finally:
        bar.close()
        # Closing the source stops the run early and releases its pool slots.
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
