"""Typed use of autopar, checked by mypy --strict in tests/test_typing.py (and `make lint`).

Every ``assert_type`` here fails type checking if the decorator loses a type. The file also
runs as a plain script, so the examples are known to work.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Coroutine, Iterator, List, Optional

from autopar import AsyncParallelFunction, ParallelFunction, Plan, parallel

if sys.version_info >= (3, 11):
    from typing import assert_type, reveal_type
else:
    from typing_extensions import assert_type, reveal_type


@parallel
def square(x: int) -> int:
    """Bare decorator."""
    return x * x


@parallel(kind="thread", workers=2)
def label(x: int, prefix: str = "#") -> str:
    """Decorator with arguments; a second parameter with a default."""
    return f"{prefix}{x}"


@parallel
async def fetch(x: int) -> int:
    """An async function."""
    await asyncio.sleep(0)
    return x + 1


@parallel(workers=10)
async def fetch_text(x: int) -> str:
    """An async function, decorator with arguments."""
    return str(x)


def check_sync() -> None:
    """The sync wrappers keep the function's types."""
    assert isinstance(square, ParallelFunction)
    reveal_type(square.map([1, 2]))
    assert_type(square.map([1, 2]), List[int])
    assert_type(square(3), int)
    assert_type(square.imap(range(3)), Iterator[int])
    assert_type(square.imap_unordered(range(3)), Iterator[int])
    assert_type(label.map([1, 2], timeout=5.0), List[str])
    assert_type(label.starmap([(1, "x")]), List[str])
    assert_type(label(1, prefix="n"), str)
    assert_type(square.last_plan, Optional[Plan])
    assert_type(square.explain(), str)


async def check_async() -> None:
    """The async wrappers: map gives the awaited type, a plain call the coroutine."""
    assert isinstance(fetch, AsyncParallelFunction)
    reveal_type(fetch.map([1, 2]))
    assert_type(fetch.map([1, 2]), List[int])
    assert_type(await fetch.amap([1, 2]), List[int])
    assert_type(await fetch_text.amap([1]), List[str])
    coroutine = assert_type(fetch(1), Coroutine[Any, Any, int])
    coroutine.close()
    assert_type(await fetch(1), int)


class Client:
    """Decorated methods: bound, the instance leaves the signature."""

    @parallel(kind="thread")
    def get(self, x: int) -> bytes:
        return bytes([x])

    @parallel
    async def aget(self, x: int) -> float:
        return x / 2

    @staticmethod
    @parallel
    def tool(x: int) -> bool:
        return x > 0


async def check_methods() -> None:
    """Methods keep their types once bound."""
    client = Client()
    assert_type(client.get(1), bytes)
    assert_type(client.get.map([1, 2]), List[bytes])
    assert_type(await client.aget.amap([1]), List[float])
    assert_type(client.aget.map([1]), List[float])
    assert_type(await client.aget(1), float)
    assert_type(Client.tool.map([1, -1]), List[bool])


if __name__ == "__main__":
    check_sync()
    asyncio.run(check_async())
    asyncio.run(check_methods())
    print("ok")
