"""An ASGI response that streams an object from storage with bounded memory.

Starlette's ``StreamingResponse`` starts a task group per response to watch for disconnects; for a one-chunk body
that costs more than the transfer, so a single chunk is sent directly. Longer bodies watch ``receive`` for
``http.disconnect`` (uvicorn silently drops sends after a disconnect) so an abandoned download stops reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.types import Receive, Scope, Send


class ObjectResponse:
    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        first: bytes,
        rest: AsyncIterator[bytes] | None,
    ) -> None:
        self.status = status
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.first = first
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.raw_headers})
        if self.rest is None:
            await send({"type": "http.response.body", "body": self.first, "more_body": False})
            return
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.body", "body": self.first, "more_body": True})
            async for chunk in self.rest:
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            aclose = getattr(self.rest, "aclose", None)
            if aclose is not None:
                await aclose()
