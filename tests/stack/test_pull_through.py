"""Pull-through downloads between two real instances: the upstream on the real Swift with its signed index, the
local instance on local storage configured with the upstream and its root of trust."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import need_service
from tests.stack.test_mirror import publish
from tests.support.server import ServerProcess, make_server
from tests.support.swift import SWIFT_KEY, SWIFT_URL, SWIFT_USER
from tests.support.tuf_index import IndexKeys


@pytest.fixture(scope="module")
def local(
    tmp_path_factory: pytest.TempPathFactory, upstream: ServerProcess, keys: IndexKeys
) -> Iterator[ServerProcess]:
    env = {
        "UPDOWN_UPSTREAM__URL": upstream.base_url,
        "UPDOWN_UPSTREAM__ROOT_FILE": str(keys.first_root),
        "UPDOWN_UPSTREAM__CA_BUNDLE": str(upstream.cert),
        "UPDOWN_UPSTREAM__REFRESH_INTERVAL": "0",
        "UPDOWN_UPSTREAM__TIMEOUT": "5",
        "UPDOWN_LOOKUP_CACHE_TTL": "0",
    }
    srv = make_server(tmp_path_factory.mktemp("local"), extra_env=env).start()
    yield srv
    srv.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def get(srv: ServerProcess, path: str, method: str = "GET") -> httpx.Response:
    with srv.http() as http:
        return http.request(method, path)


def test_first_request_pulls_second_is_local_and_survives_the_upstream(
    upstream: ServerProcess, local: ServerProcess, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    record = publish(upstream, tmp_path, "pulled", "big.bin", data, ["stable"])
    first = get(local, record["path"])
    assert first.status_code == 200 and first.content == data
    # Verified and stored before the first byte is answered: the first answer is already the ordinary one.
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert 'updown_pull_through_total{result="stored"} 1.0' in get(local, "/metrics").text
    assert local.objects() == [f"sha256/{record['sha256'][:2]}/{record['sha256']}"]

    second = get(local, record["path"])  # the ordinary answer of a stored, published file
    assert second.status_code == 200 and hashlib.sha256(second.content).hexdigest() == record["sha256"]
    assert second.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "MD5=" in second.headers["digest"]
    assert get(local, "/pulled/stable/latest/*.bin").headers["location"] == "/pulled/1/big.bin"  # channels too

    upstream.stop()
    try:
        third = get(local, record["path"])
        assert third.status_code == 200 and third.content == data
        r = get(local, "/pulled/1/never-fetched.bin")
        assert r.status_code == 404  # answered from the metadata verified before, never a guess
    finally:
        upstream.start()


def test_head_imports_and_answers(upstream: ServerProcess, local: ServerProcess, tmp_path: Path) -> None:
    record = publish(upstream, tmp_path, "headed", "h.bin", b"head first", [])
    r = get(local, record["path"], "HEAD")
    assert r.status_code == 200 and r.headers["content-length"] == "10"
    assert get(local, record["path"]).content == b"head first"


def pulled(srv: ServerProcess, result: str) -> float:
    match = re.search(rf'^updown_pull_through_total{{result="{result}"}} (\S+)$', get(srv, "/metrics").text, re.M)
    return 0.0 if match is None else float(match[1])


def test_concurrent_requests_for_a_missing_file_fetch_it_once(
    upstream: ServerProcess, local: ServerProcess, tmp_path: Path
) -> None:
    data = os.urandom(4 * 1024 * 1024)
    record = publish(upstream, tmp_path, "herd", "h.bin", data, [])
    before = pulled(local, "stored")
    with ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda _: get(local, record["path"]).content, range(6)))
    assert all(body == data for body in bodies)
    wait_for(lambda: pulled(local, "stored") >= before + 1)
    time.sleep(0.5)  # a second fetch, if one was started, would have finished by now
    assert pulled(local, "stored") == before + 1


def test_unknown_unpublished_and_private_files_are_404(
    upstream: ServerProcess, local: ServerProcess, tmp_path: Path
) -> None:
    assert get(local, "/nothing/1/here.bin").status_code == 404
    (tmp_path / "u.bin").write_bytes(b"unpublished")
    (tmp_path / "p.bin").write_bytes(b"private")
    with upstream.client() as c:
        c.upload(tmp_path / "u.bin", package="hidden", revision="1")
        c.publish(c.upload(tmp_path / "p.bin", package="hidden", revision="1", visibility="private")["id"])
    assert get(local, "/hidden/1/u.bin").status_code == 404
    assert get(local, "/hidden/1/p.bin").status_code == 404


def test_a_file_unpublished_here_is_not_pulled_again(
    upstream: ServerProcess, local: ServerProcess, tmp_path: Path
) -> None:
    record = publish(upstream, tmp_path, "withheld", "w.bin", b"upstream copy", [])
    (tmp_path / "w.bin").write_bytes(b"local copy")
    with local.client() as c:
        c.upload(tmp_path / "w.bin", package="withheld", revision="1")  # here, unpublished
    before = pulled(local, "stored")
    assert get(local, record["path"]).status_code == 404
    assert pulled(local, "stored") == before


def test_tampered_upstream_file_is_never_served_nor_stored(
    upstream: ServerProcess, local: ServerProcess, container: str, tmp_path: Path
) -> None:
    import swiftclient

    record = publish(upstream, tmp_path, "tampered", "t.bin", os.urandom(2 * 1024 * 1024), [])
    url = need_service("Swift", SWIFT_URL)
    conn = swiftclient.Connection(authurl=f"{url}/auth/v1.0", user=SWIFT_USER, key=SWIFT_KEY)
    sha = record["sha256"]
    conn.put_object(container, f"sha256/{sha[:2]}/{sha}", contents=os.urandom(2 * 1024 * 1024))
    conn.close()

    for _ in range(2):  # a retry pulls again and is refused again: nothing bad was kept
        assert complete_body(local, record["path"]) is None
    assert not any(o.endswith(sha) for o in local.objects())
    wait_for(lambda: 'updown_pull_through_total{result="refused"} 2.0' in get(local, "/metrics").text)


def complete_body(srv: ServerProcess, path: str) -> bytes | None:
    """The body if a complete 200 arrived; None if the connection was cut before the end (or no 200)."""
    try:
        r = get(srv, path)
    except httpx.RemoteProtocolError:
        return None
    return r.content if r.status_code == 200 else None
