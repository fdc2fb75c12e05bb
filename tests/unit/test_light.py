"""The per-connection stand-ins for uvicorn's deques (``http/light.py``): they behave as ``asyncio.Event`` and
``deque`` do where uvicorn uses them, and a connection of our protocol really uses them (a uvicorn release that
renames what they replace fails here, not silently in the memory of 1,000 slow downloads)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from updown_app.http.light import LightEvent, LightPipeline
from updown_app.http.protocol import JsonErrorsProtocol


def test_an_event_wakes_every_waiter_and_answers_at_once_while_set() -> None:
    async def run() -> None:
        event = LightEvent()
        assert not event.is_set()
        waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        event.set()
        assert await asyncio.gather(*waiters) == [True, True, True]
        assert await asyncio.wait_for(event.wait(), 0.1) is True  # set: no waiting
        event.clear()
        late = asyncio.create_task(event.wait())
        await asyncio.sleep(0.01)
        assert not late.done()  # cleared: waits again
        event.set()
        event.clear()  # as asyncio.Event: a waiter woken by set() stays woken
        assert await asyncio.wait_for(late, 0.1) is True

    asyncio.run(run())


def test_a_cancelled_wait_leaves_no_waiter_behind() -> None:
    async def run() -> None:
        event = LightEvent()
        waiter = asyncio.create_task(event.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not event._waiters
        event.set()  # nothing to wake, nothing raised

    asyncio.run(run())


def test_the_pipeline_keeps_requests_in_order_like_the_deque_it_replaces() -> None:
    light, reference = LightPipeline(), deque[int]()
    assert not light and len(light) == 0
    for i in range(3):
        light.appendleft(i)
        reference.appendleft(i)
    assert bool(light) and len(light) == 3
    assert [light.pop() for _ in range(3)] == [reference.pop() for _ in range(3)] == [0, 1, 2]
    assert not light
    with pytest.raises(IndexError):
        light.pop()


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_a_connection_of_our_protocol_uses_them() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> bytes:
        config = Config(app, http="httptools", log_config=None)
        config.load()
        protocol = JsonErrorsProtocol(config, ServerState(), {})
        transport = _Transport()
        protocol.connection_made(transport)
        assert isinstance(protocol.pipeline, LightPipeline)
        assert isinstance(protocol.flow._is_writable_event, LightEvent) and protocol.flow._is_writable_event.is_set()
        # Two pipelined requests in one read: the second waits in the pipeline for the first's response.
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert protocol.cycle is not None and isinstance(protocol.cycle.message_event, LightEvent)
        for _ in range(50):
            await asyncio.sleep(0.01)
            if bytes(transport.written).count(b"HTTP/1.1 204") == 2:
                break
        protocol.connection_lost(None)
        return bytes(transport.written)

    assert asyncio.run(run()).count(b"HTTP/1.1 204") == 2
