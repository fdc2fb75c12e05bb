"""Verified mirroring between two real instances on loopback: the upstream on the real Swift, the mirror on local
storage, ``updown mirror`` run as the real command.

Attacks are played by a small HTTP proxy in front of the upstream that swaps in crafted metadata (signed with the
real online keys where the attack needs valid signatures): an expired timestamp, a rolled-back timestamp or
snapshot version, a broken signature. A tampered target is real: its object is overwritten in the upstream's Swift.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tuf.api.metadata import Metadata, Timestamp

from tests.conftest import need_service
from tests.support.server import ServerProcess, make_server
from tests.support.swift import SWIFT_KEY, SWIFT_URL, SWIFT_USER
from tests.support.tuf_index import IndexKeys
from updown_app.index.keys import load_signers
from updown_app.upstream.importer import state_dir_for


class MetadataProxy:
    """Plain-HTTP proxy to the upstream; ``swap`` maps a path to the bytes to answer instead."""

    def __init__(self, upstream: ServerProcess) -> None:
        self.swap: dict[str, bytes] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        proxy = self
        client = httpx.Client(base_url=upstream.base_url, verify=upstream.verify, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path in proxy.swap:
                    status, body, headers = 200, proxy.swap[self.path], {"content-type": "application/json"}
                else:
                    fwd = {k: v for k, v in self.headers.items() if k.lower() in ("range", "if-range")}
                    r = client.get(self.path, headers=fwd)
                    status, body = r.status_code, r.content
                    headers = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "content-range")}
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path / "mirror", extra_env={"UPDOWN_LOOKUP_CACHE_TTL": "0"}).start()
    yield srv
    srv.stop()


@pytest.fixture
def proxy(upstream: ServerProcess) -> Iterator[MetadataProxy]:
    p = MetadataProxy(upstream)
    yield p
    p.close()


def publish(srv: ServerProcess, tmp: Path, package: str, name: str, data: bytes, channels: list[str]) -> dict[str, Any]:
    path = tmp / f"{package}-{name}"
    path.write_bytes(data)
    with srv.client() as c:
        record = c.upload(path, package=package, revision="1", filename=name)
        return c.publish(record["id"], channels)


def run_mirror(
    local: ServerProcess, upstream_url: str, keys: IndexKeys, *args: str, cacert: Path | None = None
) -> tuple[int, dict[str, Any]]:
    cmd = [sys.executable, "-m", "updown_app", "mirror", "--upstream", upstream_url]
    cmd += ["--root-of-trust", str(keys.first_root), *args]
    if cacert is not None:
        cmd += ["--cacert", str(cacert)]
    proc = subprocess.run(cmd, env={**os.environ, **local.env}, capture_output=True, text=True, timeout=120)
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"no summary (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
    assert "PRIVATE KEY" not in proc.stderr
    return proc.returncode, summary


def download(srv: ServerProcess, path: str) -> httpx.Response:
    with srv.http() as http:
        return http.get(path)


def current(upstream: ServerProcess, name: str) -> bytes:
    with upstream.http() as http:
        r = http.get(f"/-/tuf/metadata/{name}")
        assert r.status_code == 200
        return r.content


def resign_timestamp(keys: IndexKeys, data: bytes, change: Callable[[Timestamp], None]) -> bytes:
    md = Metadata[Timestamp].from_bytes(data)
    change(md.signed)
    (signer,) = [s for k, s in load_signers(keys.online_keys).items() if k in _root_keyids(keys, "timestamp")]
    md.sign(signer)
    return md.to_bytes()


def _root_keyids(keys: IndexKeys, role: str) -> list[str]:
    newest = max(keys.root_dir.glob("*.root.json"), key=lambda p: int(p.name.split(".")[0]))
    return list(json.loads(newest.read_text())["signed"]["roles"][role]["keyids"])


# Tests ---------------------------------------------------------------------------------------------------------


def test_mirror_imports_verified_files_incrementally(
    upstream: ServerProcess, local: ServerProcess, keys: IndexKeys, tmp_path: Path
) -> None:
    a = publish(upstream, tmp_path, "mirrored", "a.snap", os.urandom(300_000), ["stable", "edge"])
    b = publish(upstream, tmp_path, "mirrored", "b.snap", os.urandom(1000), ["edge"])
    publish(upstream, tmp_path, "other", "o.bin", b"not selected", ["stable"])

    status, summary = run_mirror(
        local, upstream.base_url, keys, "--package", "mirrored", "--dry-run", cacert=upstream.cert
    )
    assert status == 0 and sorted(summary["imported"]) == ["mirrored/1/a.snap", "mirrored/1/b.snap"]
    assert download(local, "/mirrored/1/a.snap").status_code == 404  # a dry run changes nothing

    status, summary = run_mirror(local, upstream.base_url, keys, "--package", "mirrored", cacert=upstream.cert)
    assert status == 0, summary
    assert sorted(summary["imported"]) == ["mirrored/1/a.snap", "mirrored/1/b.snap"]
    for record in (a, b):
        r = download(local, record["path"])
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == record["sha256"]
        assert hashlib.sha512(r.content).hexdigest() == record["sha512"]
    assert download(local, "/other/1/o.bin").status_code == 404
    # Same channels: the latest URL of the mirror points to the same file.
    r = download(local, "/mirrored/stable/latest/*.snap")
    assert r.status_code == 302 and r.headers["location"] == "/mirrored/1/a.snap"

    # Idempotent, incremental: a second run imports nothing; a new file alone is imported.
    status, summary = run_mirror(local, upstream.base_url, keys, "--package", "mirrored", cacert=upstream.cert)
    assert (status, summary["imported"], summary["unchanged"]) == (0, [], 2)
    c = publish(upstream, tmp_path, "mirrored", "c.snap", b"third", ["stable"])
    with upstream.client() as client:
        client.publish(b["id"], ["stable"])  # promotion upstream
        client.unpublish(a["id"])
    status, summary = run_mirror(local, upstream.base_url, keys, "--package", "mirrored", cacert=upstream.cert)
    assert status == 0, summary
    assert summary["imported"] == ["mirrored/1/c.snap"]
    assert summary["updated"] == ["mirrored/1/b.snap"]
    assert summary["unpublished"] == ["mirrored/1/a.snap"]
    assert download(local, c["path"]).content == b"third"
    assert download(local, "/mirrored/1/a.snap").status_code == 404

    # --channel selects by channel.
    publish(upstream, tmp_path, "chan", "e.bin", b"edge only", ["edge"])
    publish(upstream, tmp_path, "chan", "s.bin", b"stable", ["stable"])
    status, summary = run_mirror(
        local, upstream.base_url, keys, "--package", "chan", "--channel", "edge", cacert=upstream.cert
    )
    assert (status, summary["imported"]) == (0, ["chan/1/e.bin"])


def test_tampered_target_is_refused_and_the_rest_imported(
    upstream: ServerProcess, local: ServerProcess, keys: IndexKeys, container: str, tmp_path: Path
) -> None:
    import swiftclient

    good = publish(upstream, tmp_path, "tamper", "good.bin", os.urandom(4000), [])
    bad = publish(upstream, tmp_path, "tamper", "bad.bin", os.urandom(4000), [])
    url = need_service("Swift", SWIFT_URL)
    conn = swiftclient.Connection(authurl=f"{url}/auth/v1.0", user=SWIFT_USER, key=SWIFT_KEY)
    sha = bad["sha256"]
    conn.put_object(container, f"sha256/{sha[:2]}/{sha}", contents=os.urandom(4000))  # same length, other bytes
    conn.close()

    status, summary = run_mirror(local, upstream.base_url, keys, "--package", "tamper", cacert=upstream.cert)
    assert status == 1
    assert summary["imported"] == ["tamper/1/good.bin"]
    assert [(r["path"], r["reason"]) for r in summary["refused"]] == [("tamper/1/bad.bin", "hash_mismatch")]
    assert download(local, good["path"]).status_code == 200
    assert download(local, bad["path"]).status_code == 404
    assert not list((local.data_dir / "upstreams").rglob(f"partial/{sha}"))  # refused bytes are not kept


def test_expired_timestamp_is_refused(
    upstream: ServerProcess, local: ServerProcess, keys: IndexKeys, proxy: MetadataProxy, tmp_path: Path
) -> None:
    publish(upstream, tmp_path, "expiry", "x.bin", b"x", [])
    expired = resign_timestamp(
        keys,
        current(upstream, "timestamp.json"),
        lambda t: setattr(t, "expires", datetime.now(UTC) - timedelta(hours=1)),
    )
    proxy.swap["/-/tuf/metadata/timestamp.json"] = expired
    status, summary = run_mirror(local, proxy.url, keys, "--package", "expiry")
    assert status == 2 and summary["error"]["reason"] == "expired_metadata"
    assert summary["imported"] == []
    assert download(local, "/expiry/1/x.bin").status_code == 404


def test_bad_signature_is_refused(
    upstream: ServerProcess, local: ServerProcess, keys: IndexKeys, proxy: MetadataProxy, tmp_path: Path
) -> None:
    publish(upstream, tmp_path, "forged", "x.bin", b"x", [])
    md = json.loads(current(upstream, "timestamp.json"))
    md["signed"]["version"] += 1  # changed after signing
    proxy.swap["/-/tuf/metadata/timestamp.json"] = json.dumps(md).encode()
    status, summary = run_mirror(local, proxy.url, keys, "--package", "forged")
    assert status == 2 and summary["error"]["reason"] == "bad_signature"
    assert download(local, "/forged/1/x.bin").status_code == 404


def test_rollbacks_are_refused(
    upstream: ServerProcess, local: ServerProcess, keys: IndexKeys, proxy: MetadataProxy, tmp_path: Path
) -> None:
    publish(upstream, tmp_path, "rollback", "one.bin", b"1", [])
    old_timestamp = current(upstream, "timestamp.json")
    publish(upstream, tmp_path, "rollback", "two.bin", b"2", [])
    status, summary = run_mirror(local, proxy.url, keys, "--package", "rollback")
    assert status == 0 and sorted(summary["imported"]) == ["rollback/1/one.bin", "rollback/1/two.bin"]
    publish(upstream, tmp_path, "rollback", "three.bin", b"3", [])

    # An older (validly signed) timestamp: its version is lower than the one trusted.
    proxy.swap["/-/tuf/metadata/timestamp.json"] = old_timestamp
    status, summary = run_mirror(local, proxy.url, keys, "--package", "rollback")
    assert status == 2 and summary["error"]["reason"] == "rollback"

    # A newer timestamp pointing at an older snapshot version.
    newest = Metadata[Timestamp].from_bytes(current(upstream, "timestamp.json")).signed
    old_snapshot = Metadata[Timestamp].from_bytes(old_timestamp).signed.snapshot_meta.version

    def roll_back(t: Timestamp) -> None:
        t.version = newest.version + 1
        t.snapshot_meta.version = old_snapshot
        t.snapshot_meta.length = None
        t.snapshot_meta.hashes = None

    proxy.swap["/-/tuf/metadata/timestamp.json"] = resign_timestamp(
        keys, current(upstream, "timestamp.json"), roll_back
    )
    status, summary = run_mirror(local, proxy.url, keys, "--package", "rollback")
    assert status == 2 and summary["error"]["reason"] == "rollback"
    assert download(local, "/rollback/1/three.bin").status_code == 404

    # Once upstream serves the truth again, the mirror catches up.
    proxy.swap.clear()
    status, summary = run_mirror(local, proxy.url, keys, "--package", "rollback")
    assert (status, summary["imported"]) == (0, ["rollback/1/three.bin"])


def test_mirror_follows_a_rotation_of_the_online_keys(
    upstream: ServerProcess, local: ServerProcess, keys: IndexKeys, tmp_path: Path
) -> None:
    publish(upstream, tmp_path, "rotation", "before.bin", b"before", [])
    status, _ = run_mirror(local, upstream.base_url, keys, "--package", "rotation", cacert=upstream.cert)
    assert status == 0
    old_ids = {r: _root_keyids(keys, r) for r in ("targets", "snapshot", "timestamp")}
    keys.rotate()  # 2.root.json trusting new online keys; the keys file holds only the new ones
    assert all(_root_keyids(keys, r) != old_ids[r] for r in old_ids)
    upstream.stop()
    upstream.start()  # re-signs everything with the new keys
    publish(upstream, tmp_path, "rotation", "after.bin", b"after", [])
    status, summary = run_mirror(local, upstream.base_url, keys, "--package", "rotation", cacert=upstream.cert)
    assert (status, summary["imported"]) == (0, ["rotation/1/after.bin"]), summary
    assert list((local.data_dir / "upstreams").rglob("root_history/2.root.json"))
    assert download(local, "/rotation/1/after.bin").content == b"after"


def test_an_interrupted_download_resumes(
    upstream: ServerProcess, local: ServerProcess, keys: IndexKeys, proxy: MetadataProxy, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    record = publish(upstream, tmp_path, "resumed", "r.bin", data, [])
    partial = state_dir_for(local.data_dir, proxy.url) / "partial" / record["sha256"]
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(data[:150_000])  # what an interrupted run left
    status, summary = run_mirror(local, proxy.url, keys, "--package", "resumed")
    assert (status, summary["imported"]) == (0, ["resumed/1/r.bin"]), summary
    (headers,) = [h for path, h in proxy.requests if path == "/resumed/1/r.bin"]
    assert headers["range"] == "bytes=150000-" and headers["if-range"] == f'"{record["sha256"]}"'
    assert download(local, record["path"]).content == data
    assert not partial.exists()
