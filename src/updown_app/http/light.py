"""Lighter stand-ins for objects uvicorn's protocol makes for every connection, each holding an empty ``deque``.

A ``deque`` is 760 bytes from its creation, and uvicorn makes three per connection (its flow control's "writable"
event, the request cycle's "message" event, the queue of pipelined requests) although most connections never wait
on the first two or pipeline: with 1,000 slow downloads that is 2.2 MB of empty deques. These make their list on
first use. Own code: the standard library has nothing lighter, and the protocol (``protocol.py``) needs only the
few methods uvicorn calls.
"""

from __future__ import annotations

import asyncio
from typing import Any


class LightEvent:
    """``asyncio.Event``'s ``set``, ``clear``, ``is_set`` and ``wait``."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        """True once the event is set (at once if it is); cancellable, like ``asyncio.Event.wait``."""
        if self._value:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class LightPipeline:
    """The queue of pipelined requests: uvicorn calls ``appendleft``, ``pop`` and its truth value."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[Any] | None = None

    def appendleft(self, item: Any) -> None:
        if self._items is None:
            self._items = []
        self._items.insert(0, item)

    def pop(self) -> Any:
        if not self._items:
            raise IndexError("pop from an empty pipeline")
        return self._items.pop()

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items or ())
