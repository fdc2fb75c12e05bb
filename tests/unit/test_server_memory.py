"""What a large upload leaves in a running `updown serve`: its buffers are given back, so the server's memory after
it is what it was before (malloc.py: one heap, trimmed once the digest read-back is done). Before, each upload's
pool threads kept heaps of their own, ~6 MB that 1,000 slow downloads (benchmarks/README.md) and every unit paid."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, make_server

MiB = 1024 * 1024


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProcess]:
    server = make_server(tmp_path / "server", tls=False, extra_env={"UPDOWN_MAX_UPLOAD_SIZE": str(256 * MiB)}).start()
    yield server
    server.stop()


def rss_kb(srv: ServerProcess) -> int:
    assert srv.proc is not None
    status = Path(f"/proc/{srv.proc.pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert found
    return int(found.group(1))


def upload_and_complete(srv: ServerProcess, path: Path) -> None:
    with srv.client() as client:
        record = client.upload(path, package="mem", revision=path.stem, visibility="public")
        deadline = time.monotonic() + 30
        while client.info(record["id"])["sha512"] is None:  # the read-back is part of the upload's work
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
def test_a_large_upload_leaves_the_servers_memory_as_it_was(srv: ServerProcess, tmp_path: Path) -> None:
    warm, big = tmp_path / "warm.bin", tmp_path / "big.bin"
    warm.write_bytes(os.urandom(2 * MiB))  # the first upload loads what uploads need (modules, statements)
    big.write_bytes(os.urandom(96 * MiB))
    upload_and_complete(srv, warm)
    before = rss_kb(srv)
    upload_and_complete(srv, big)
    time.sleep(0.3)
    grown = rss_kb(srv) - before
    assert grown < 2 * 1024, f"the server kept {grown} kB after a 96 MiB upload"
