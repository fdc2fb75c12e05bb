"""Writeback started as the local store writes (storage/writeback.py): the kernel accepts the request on Linux,
a refused one is no error (the fsync alone decides durability), and a stored object is whole either way."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from updown_app.storage import writeback
from updown_app.storage.local import LocalStorage


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_kernel_accepts_the_request_for_a_written_range(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"x" * 65536)
        assert writeback.start_writeback(fd, 0, 65536)
    finally:
        os.close(fd)


def test_a_refused_request_is_no_error() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    assert writeback.start_writeback(fd, 0, 4096) is False  # a closed descriptor: EBADF, reported, not raised


def test_writeback_is_started_every_range_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(writeback, "start_writeback", lambda fd, offset, length: started.append((offset, length)))
    tracker = writeback.Writeback(-1)
    for _ in range(5):
        tracker.wrote(writeback.RANGE // 2)
    assert started == [(0, writeback.RANGE), (writeback.RANGE, writeback.RANGE)]


async def test_a_large_object_is_stored_whole(tmp_path: Path) -> None:
    data = os.urandom(2 * writeback.RANGE + 12345)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    store = LocalStorage(tmp_path)
    await store.put("o/big", body(), size=len(data), md5=hashlib.md5(data).hexdigest())
    assert b"".join([chunk async for chunk in store.get("o/big")]) == data
