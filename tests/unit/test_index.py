"""The signed index of a real server, read with python-tuf's own client (ngclient.Updater): publish, channel moves
and unpublish update it before the request is answered; metadata is served with the cache headers the caches
need; the timestamp is re-signed before it expires; the service refuses to start with keys the root does not
trust."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Timestamp
from tuf.ngclient import Updater, UpdaterConfig

from tests.support.server import ServerProcess, make_server
from tests.support.tuf_index import IndexKeys, make_index_keys
from tests.unit.test_cache_purge import BanRecorder
from updown_app.caches.purge import ban_expression
from updown_app.index.client import http_client
from updown_app.index.fetcher import HttpxFetcher


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> IndexKeys:
    return make_index_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def recorder() -> Iterator[BanRecorder]:
    rec = BanRecorder()
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, keys: IndexKeys, recorder: BanRecorder) -> Iterator[ServerProcess]:
    env = keys.env(
        UPDOWN_INDEX__TIMESTAMP_EXPIRY="12",
        UPDOWN_INDEX__REFRESH_INTERVAL="1",
        UPDOWN_CACHES__FRONTENDS=json.dumps([f"http://127.0.0.1:{recorder.port}"]),
        UPDOWN_LOOKUP_CACHE_TTL="0",
    )
    server = make_server(tmp_path_factory.mktemp("index"), extra_env=env).start()
    yield server
    server.stop()


def updater(srv: ServerProcess, keys: IndexKeys, tmp: Path) -> Updater:
    meta = tmp / "meta"
    meta.mkdir(exist_ok=True)
    return Updater(
        str(meta),
        f"{srv.base_url}/-/tuf/metadata/",
        str(tmp / "targets"),
        f"{srv.base_url}/",
        fetcher=HttpxFetcher(http_client(srv.cert)),
        config=UpdaterConfig(prefix_targets_with_hash=False),
        bootstrap=keys.first_root.read_bytes(),
    )


def publish(srv: ServerProcess, tmp: Path, name: str, data: bytes, channels: list[str] | None = None) -> dict:  # type: ignore[type-arg]
    path = tmp / name
    path.write_bytes(data)
    with srv.client() as c:
        record = c.upload(path, package="indexed", revision="1", filename=name)
        return c.publish(record["id"], channels)


def test_publish_is_in_the_index_when_answered(srv: ServerProcess, keys: IndexKeys, tmp_path: Path) -> None:
    record = publish(srv, tmp_path, "a.snap", b"alpha" * 1000, ["stable"])
    up = updater(srv, keys, tmp_path)
    up.refresh()
    info = up.get_targetinfo("indexed/1/a.snap")
    assert info is not None
    assert info.length == 5000
    assert info.hashes == {"sha256": record["sha256"], "sha512": record["sha512"]}
    assert info.custom["package"] == "indexed" and info.custom["revision"] == "1"
    assert info.custom["channels"] == ["stable"]
    assert info.custom["published"].startswith(record["published_at"][:19])
    # ngclient downloads the target from its download path and checks it.
    assert Path(up.download_target(info, str(tmp_path / "a.snap.dl"))).read_bytes() == b"alpha" * 1000

    # Unpublish and channel moves are there when answered too.
    with srv.client() as c:
        c.publish(record["id"], ["candidate"])
    up = updater(srv, keys, tmp_path)
    up.refresh()
    info = up.get_targetinfo("indexed/1/a.snap")
    assert info is not None and info.custom["channels"] == ["candidate"]
    with srv.client() as c:
        c.unpublish(record["id"])
    up = updater(srv, keys, tmp_path)
    up.refresh()
    assert up.get_targetinfo("indexed/1/a.snap") is None


def test_private_and_unpublished_files_are_not_in_the_index(
    srv: ServerProcess, keys: IndexKeys, tmp_path: Path
) -> None:
    (tmp_path / "p.bin").write_bytes(b"private")
    (tmp_path / "u.bin").write_bytes(b"unpublished")
    with srv.client() as c:
        c.publish(c.upload(tmp_path / "p.bin", package="indexed", revision="2", visibility="private")["id"])
        c.upload(tmp_path / "u.bin", package="indexed", revision="2")
    up = updater(srv, keys, tmp_path)
    up.refresh()
    assert up.get_targetinfo("indexed/2/p.bin") is None
    assert up.get_targetinfo("indexed/2/u.bin") is None


def test_metadata_cache_headers_and_timestamp_purge(
    srv: ServerProcess, keys: IndexKeys, recorder: BanRecorder, tmp_path: Path
) -> None:
    with srv.http() as http:
        ts = http.get("/-/tuf/metadata/timestamp.json")
        assert ts.status_code == 200
        assert ts.headers["cache-control"] == "public, max-age=10"
        version = Metadata[Timestamp].from_bytes(ts.content).signed.snapshot_meta.version
        snap = http.get(f"/-/tuf/metadata/{version}.snapshot.json")
        assert snap.status_code == 200 and "immutable" in snap.headers["cache-control"]
        root = http.get("/-/tuf/metadata/1.root.json")
        assert root.content == keys.first_root.read_bytes() and "immutable" in root.headers["cache-control"]
        for missing in ("999.snapshot.json", "0.root.json", "1.timestamp.json", "../x", "root.json"):
            assert http.get(f"/-/tuf/metadata/{missing}").status_code == 404, missing
        assert http.get("/-/tuf/metadata/timestamp.json", headers={"host": "private.localhost"}).status_code == 404
    recorder.bans.clear()
    publish(srv, tmp_path, "purged.snap", b"purge me")
    assert ban_expression("/-/tuf/metadata/timestamp.json") in [ban for _, _, ban in recorder.bans]


def test_timestamp_is_resigned_before_it_expires(srv: ServerProcess) -> None:
    with srv.http() as http:
        first = Metadata[Timestamp].from_bytes(http.get("/-/tuf/metadata/timestamp.json").content).signed
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = Metadata[Timestamp].from_bytes(http.get("/-/tuf/metadata/timestamp.json").content).signed
            if now.version > first.version:
                break
            time.sleep(0.5)
    assert now.version > first.version
    assert now.expires > first.expires
    assert not now.is_expired()


def test_keys_the_root_does_not_trust_stop_the_start(keys: IndexKeys, tmp_path: Path) -> None:
    other = make_index_keys(tmp_path / "other")
    srv = make_server(tmp_path / "srv", extra_env=keys.env(UPDOWN_INDEX__KEYS_FILE=str(other.online_keys)))
    with pytest.raises(RuntimeError, match="cannot sign"):
        srv.start(timeout=15)
    assert "PRIVATE KEY" not in srv.log()


@pytest.mark.postgres
def test_two_processes_publishing_at_once_keep_one_consistent_index(
    keys: IndexKeys, postgres_url: str, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    shared = {
        **keys.env(),
        "UPDOWN_DATABASE_URL": postgres_url,
        "UPDOWN_STORAGE__LOCAL__PATH": str(tmp_path / "objects"),
    }
    hmac = {"store-test": "k" * 32}
    servers = [make_server(tmp_path / f"n{i}", extra_env=shared, keys=hmac) for i in range(2)]
    for s in servers:
        s.start()
    try:

        def publish_on(i: int) -> str:
            srv = servers[i % 2]
            path = tmp_path / f"c{i}.bin"
            path.write_bytes(f"concurrent {i}".encode())
            with srv.client() as c:
                c.publish(c.upload(path, package="race", revision=str(i))["id"])
            return f"race/{i}/c{i}.bin"

        with ThreadPoolExecutor(6) as pool:
            paths = list(pool.map(publish_on, range(12)))
        for srv in servers:
            up = updater(srv, keys, tmp_path / srv.data_dir.name)
            up.refresh()
            assert all(up.get_targetinfo(p) is not None for p in paths)
    finally:
        for s in servers:
            s.stop()
