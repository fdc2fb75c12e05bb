"""Attacks on imports, played by a malicious proxy between two real instances (the upstream on the real Swift):
a frozen index, a byte flipped early in a file followed by an If-Range resume, a tampered HEAD, dropped
connections, broken answers; and the local operator's unpublish kept against the mirror."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp

from tests.stack.test_mirror import _root_keyids, current, download, publish, resign_timestamp, run_mirror
from tests.support.attack_proxy import Answer, AttackProxy
from tests.support.server import ServerProcess, db_file_count, make_server
from tests.support.tuf_index import IndexKeys
from updown_app.index.keys import load_signers

MiB = 1024 * 1024


@pytest.fixture
def proxy(upstream: ServerProcess) -> Iterator[AttackProxy]:
    p = AttackProxy(upstream)
    yield p
    p.close()


@pytest.fixture
def puller(tmp_path: Path, proxy: AttackProxy, keys: IndexKeys) -> Iterator[ServerProcess]:
    """A fresh instance pulling through from the upstream, through the proxy."""
    env = {
        "UPDOWN_UPSTREAM__URL": proxy.url,
        "UPDOWN_UPSTREAM__ROOT_FILE": str(keys.first_root),
        "UPDOWN_UPSTREAM__REFRESH_INTERVAL": "0",
        "UPDOWN_UPSTREAM__TIMEOUT": "5",
        "UPDOWN_LOOKUP_CACHE_TTL": "0",
    }
    srv = make_server(tmp_path / "puller", extra_env=env).start()
    yield srv
    srv.stop()


@pytest.fixture
def mirror_here(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path / "mirror", extra_env={"UPDOWN_LOOKUP_CACHE_TTL": "0"}).start()
    yield srv
    srv.stop()


def get(srv: ServerProcess, path: str, method: str = "GET", **headers: str) -> httpx.Response:
    with srv.http() as http:
        return http.request(method, path, headers=headers)


def wait_for_object(srv: ServerProcess, sha256: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(o.endswith(sha256) for o in srv.objects()):
        assert time.monotonic() < deadline, "not stored in time"
        time.sleep(0.05)


def log_lines(srv: ServerProcess) -> list[dict[str, Any]]:
    lines = []
    for line in srv.log().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"raw": line})
    return lines


# Pull-through -----------------------------------------------------------------------------------------------------


def test_a_frozen_index_serves_nothing_new(
    upstream: ServerProcess, puller: ServerProcess, proxy: AttackProxy, keys: IndexKeys, tmp_path: Path
) -> None:
    kept = publish(upstream, tmp_path, "frozen", "kept.bin", b"pulled while fresh", [])
    dropped = publish(upstream, tmp_path, "frozen", "dropped.bin", b"unpublished upstream later", [])
    proxy.replay[dropped["path"]] = proxy.record(dropped["path"])  # the attacker keeps the bytes
    # The attacker freezes the index at a timestamp that is valid now (signed with the real online key) and
    # expires in a few seconds, as a real one does after its lifetime.
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)
    frozen = resign_timestamp(keys, current(upstream, "timestamp.json"), lambda t: setattr(t, "expires", expires))
    proxy.replay["/-/tuf/metadata/timestamp.json"] = proxy.record("/-/tuf/metadata/timestamp.json")
    proxy.replay["/-/tuf/metadata/timestamp.json"].body = frozen

    assert get(puller, kept["path"]).content == b"pulled while fresh"
    with upstream.client() as c:
        c.unpublish(dropped["id"])
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1.5)

    for method in ("GET", "HEAD"):
        r = get(puller, dropped["path"], method)
        assert r.status_code == 503, (method, r.status_code)
        if method == "GET":
            assert r.json()["error"]["code"] == "upstream_stale"
    assert not any(o.endswith(dropped["sha256"]) for o in puller.objects())
    # What was pulled before stays as it is.
    r = get(puller, kept["path"])
    assert r.status_code == 200 and r.content == b"pulled while fresh"

    # Once the truth is served again, the unpublished file is unknown: 404, never pulled.
    proxy.replay.clear()
    assert get(puller, dropped["path"]).status_code == 404
    assert not any(o.endswith(dropped["sha256"]) for o in puller.objects())


def _first_answer(srv: ServerProcess, path: str) -> tuple[bytes, str | None]:
    """What a downloading client keeps of its first answer: the bytes of a 200 (all of them if the connection was
    cut) and the validator it would resume on (ETag, else Last-Modified); nothing from an error answer."""
    with srv.http() as http, http.stream("GET", path) as r:
        if r.status_code != 200:
            return b"", None
        got = b""
        try:
            for chunk in r.iter_bytes():
                got += chunk
        except httpx.RemoteProtocolError:
            pass  # cut: the client keeps the prefix to resume
        return got, r.headers.get("etag") or r.headers.get("last-modified")


def _resume(srv: ServerProcess, path: str, got: bytes, validator: str | None) -> bytes:
    """Resume as curl -C/aria2/browsers do: Range + If-Range on the validator; without one, start again."""
    if not got or validator is None:
        return get(srv, path).content
    r = get(srv, path, range=f"bytes={len(got)}-", **{"if-range": validator})
    assert r.status_code in (200, 206), r.status_code
    return got + r.content if r.status_code == 206 else r.content


def test_a_byte_flipped_early_never_reaches_a_resuming_client(
    upstream: ServerProcess, puller: ServerProcess, proxy: AttackProxy, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB)
    record = publish(upstream, tmp_path, "flipped", "f.bin", data, [])
    proxy.flip_once[record["path"]] = 100
    got, validator = _first_answer(puller, record["path"])

    # The attacker lets the file through once (to another client): it is stored here. The first client resumes
    # from what it kept and must end with exactly the signed file.
    assert get(puller, record["path"]).content == data
    wait_for_object(puller, record["sha256"])
    assert hashlib.sha256(_resume(puller, record["path"], got, validator)).hexdigest() == record["sha256"]
    assert data.startswith(got), "an unverified byte reached the client"


def test_tampered_head_and_get_are_clear_errors_logged_as_such(
    upstream: ServerProcess, puller: ServerProcess, proxy: AttackProxy, tmp_path: Path
) -> None:
    record = publish(upstream, tmp_path, "tamperhead", "t.bin", os.urandom(2 * MiB), [])
    for method in ("HEAD", "GET"):
        proxy.flip_once[record["path"]] = 10
        try:
            r = get(puller, record["path"], method)
        except httpx.RemoteProtocolError:
            pytest.fail(f"{method}: the connection was cut instead of a clear error")
        assert r.status_code == 502, (method, r.status_code)
        if method == "GET":
            assert r.json()["error"]["code"] == "upstream_mismatch"
    assert not any(o.endswith(record["sha256"]) for o in puller.objects())
    lines = log_lines(puller)
    assert not any("exception" in line or "Traceback" in line.get("raw", "") for line in lines), puller.log()
    statuses = [
        (line["method"], line["status"])
        for line in lines
        if line.get("logger") == "updown.access" and line.get("path") == record["path"]
    ]
    assert statuses == [("HEAD", 502), ("GET", 502)]


# The mirror -------------------------------------------------------------------------------------------------------


def test_the_mirror_keeps_what_the_local_operator_unpublished(
    upstream: ServerProcess, mirror_here: ServerProcess, keys: IndexKeys, tmp_path: Path
) -> None:
    imported = publish(upstream, tmp_path, "localdecision", "imported.bin", b"imported then withdrawn here", [])
    local_copy = b"uploaded here, not published"
    publish(upstream, tmp_path, "localdecision", "uploaded.bin", local_copy, [])
    gone = publish(upstream, tmp_path, "localdecision", "gone.bin", b"dropped upstream, back later", [])
    (tmp_path / "uploaded.bin").write_bytes(local_copy)
    with mirror_here.client() as c:
        c.upload(tmp_path / "uploaded.bin", package="localdecision", revision="1", filename="uploaded.bin")

    args = ("--package", "localdecision")
    status, summary = run_mirror(mirror_here, upstream.base_url, keys, *args, cacert=upstream.cert)
    assert status == 0 and sorted(summary["imported"]) == ["localdecision/1/gone.bin", "localdecision/1/imported.bin"]
    assert [s["path"] for s in summary["skipped"]] == ["localdecision/1/uploaded.bin"]
    # The operator withdraws the imported file here.
    _unpublish_here(mirror_here, "localdecision/1/imported.bin")
    # Upstream drops a file and publishes it again: that one follows upstream.
    with upstream.client() as c:
        c.unpublish(gone["id"])
    status, summary = run_mirror(mirror_here, upstream.base_url, keys, *args, cacert=upstream.cert)
    assert summary["unpublished"] == ["localdecision/1/gone.bin"]
    with upstream.client() as c:
        c.publish(gone["id"])

    status, summary = run_mirror(mirror_here, upstream.base_url, keys, *args, cacert=upstream.cert)
    assert status == 0, summary
    assert summary["updated"] == ["localdecision/1/gone.bin"]
    assert sorted((s["path"], s["reason"]) for s in summary["skipped"]) == [
        ("localdecision/1/imported.bin", "unpublished_here"),
        ("localdecision/1/uploaded.bin", "unpublished_here"),
    ]
    assert download(mirror_here, imported["path"]).status_code == 404
    assert download(mirror_here, "/localdecision/1/uploaded.bin").status_code == 404
    assert download(mirror_here, gone["path"]).status_code == 200


def _unpublish_here(srv: ServerProcess, path: str) -> None:
    import sqlite3

    with sqlite3.connect(srv.data_dir / "updown.db") as conn:
        package, revision, filename = path.split("/")
        (file_id,) = conn.execute(
            "SELECT id FROM files WHERE package = ? AND revision = ? AND filename = ?", (package, revision, filename)
        ).fetchone()
    with srv.client() as c:
        c.unpublish(file_id)


def test_a_dropped_connection_is_one_line_and_a_failure(
    upstream: ServerProcess, mirror_here: ServerProcess, keys: IndexKeys, proxy: AttackProxy, tmp_path: Path
) -> None:
    record = publish(upstream, tmp_path, "dropped", "d.bin", os.urandom(300_000), [])
    proxy.drop.add(record["path"])
    cmd = [sys.executable, "-m", "updown_app", "mirror", "--upstream", proxy.url]
    cmd += ["--root-of-trust", str(keys.first_root), "--package", "dropped"]
    proc = subprocess.run(cmd, env={**os.environ, **mirror_here.env}, capture_output=True, text=True, timeout=120)
    summary = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [(f["path"], f["reason"]) for f in summary["failed"]] == [(record["path"].lstrip("/"), "unreachable")]
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_summary_reasons_match_the_docs(
    upstream: ServerProcess, mirror_here: ServerProcess, keys: IndexKeys, proxy: AttackProxy, tmp_path: Path
) -> None:
    record = publish(upstream, tmp_path, "reasons", "r.bin", b"reasons", [])
    target = record["path"].lstrip("/")

    # An upstream answering 500 for a file: a failure to retry, not a refusal of its bytes.
    proxy.status[record["path"]] = 500
    status, summary = run_mirror(mirror_here, proxy.url, keys, "--package", "reasons")
    assert status == 1 and summary["refused"] == []
    assert [(f["path"], f["reason"]) for f in summary["failed"]] == [(target, "upstream_error")]
    proxy.status.clear()

    # Metadata longer than the client accepts: refused metadata (exit 2), not an unreachable upstream.
    ts = "/-/tuf/metadata/timestamp.json"
    proxy.pad[ts] = 100_000
    status, summary = run_mirror(mirror_here, proxy.url, keys, "--package", "reasons")
    assert (status, summary["error"]["reason"]) == (2, "bad_metadata"), summary
    proxy.pad.clear()

    # A timestamp (validly signed) whose snapshot length does not match the snapshot: refused metadata too.
    newest = Metadata[Timestamp].from_bytes(current(upstream, "timestamp.json")).signed

    snapshot = current(upstream, f"{newest.snapshot_meta.version}.snapshot.json")

    def wrong_length(t: Timestamp) -> None:
        t.version = newest.version + 1
        t.snapshot_meta.length = len(snapshot) + 10
        t.snapshot_meta.hashes = None

    proxy.replay[ts] = proxy.record(ts)
    proxy.replay[ts].body = resign_timestamp(keys, current(upstream, "timestamp.json"), wrong_length)
    # A first run (no snapshot trusted yet: a trusted local copy is not checked against the timestamp again).
    fresh = ("--state-dir", str(tmp_path / "fresh-state"))
    status, summary = run_mirror(mirror_here, proxy.url, keys, "--package", "reasons", *fresh)
    assert (status, summary["error"]["reason"]) == (2, "bad_metadata"), summary
    assert download(mirror_here, record["path"]).status_code == 404


# Names ------------------------------------------------------------------------------------------------------------


def _signer(keys: IndexKeys, role: str) -> Any:
    (signer,) = [s for k, s in load_signers(keys.online_keys).items() if k in _root_keyids(keys, role)]
    return signer


def _index_with_extra_targets(upstream: ServerProcess, keys: IndexKeys, extra: dict[str, bytes]) -> dict[str, bytes]:
    """The upstream's index with ``extra`` targets added, validly re-signed with its online keys (as a compromised
    or buggy upstream would sign them): the proxy paths to answer and their bytes."""
    ts = Metadata[Timestamp].from_bytes(current(upstream, "timestamp.json"))
    snap = Metadata[Snapshot].from_bytes(current(upstream, f"{ts.signed.snapshot_meta.version}.snapshot.json"))
    tmeta = snap.signed.meta["targets.json"]
    targets = Metadata[Targets].from_bytes(current(upstream, f"{tmeta.version}.targets.json"))
    for path, data in extra.items():
        target = TargetFile.from_data(path, data, ["sha256", "sha512"])
        target.unrecognized_fields["custom"] = {"package": path.split("/")[0], "channels": []}
        targets.signed.targets[path] = target
    targets.signed.version += 1
    targets.sign(_signer(keys, "targets"))
    snap.signed.meta["targets.json"] = MetaFile(targets.signed.version)
    snap.signed.version += 1
    snap.sign(_signer(keys, "snapshot"))
    ts.signed.snapshot_meta = MetaFile(snap.signed.version)
    ts.signed.version += 1
    ts.sign(_signer(keys, "timestamp"))
    return {
        "/-/tuf/metadata/timestamp.json": ts.to_bytes(),
        f"/-/tuf/metadata/{snap.signed.version}.snapshot.json": snap.to_bytes(),
        f"/-/tuf/metadata/{targets.signed.version}.targets.json": targets.to_bytes(),
    }


def test_names_arriving_from_upstream_follow_the_upload_rule(
    upstream: ServerProcess,
    mirror_here: ServerProcess,
    puller: ServerProcess,
    keys: IndexKeys,
    proxy: AttackProxy,
    tmp_path: Path,
) -> None:
    good = publish(upstream, tmp_path, "unicode", "ünï.bin", b"a valid non-ASCII name", [])
    bad_names = ["unicode/1/evil\u202egnp.exe", "unicode/1/" + unicodedata.normalize("NFD", "ünï2.bin")]
    for path, body in _index_with_extra_targets(upstream, keys, {p: b"signed, badly named" for p in bad_names}).items():
        proxy.replay[path] = Answer(200, {"content-type": "application/json"}, body)
    for name in bad_names:  # the bytes are there too: only the name is refused
        digest = base64.b64encode(hashlib.md5(b"signed, badly named").digest()).decode()
        proxy.replay["/" + quote(name)] = Answer(200, {"digest": f"md5={digest}"}, b"signed, badly named")

    status, summary = run_mirror(mirror_here, proxy.url, keys, "--package", "unicode")
    assert status == 1, summary
    assert summary["imported"] == ["unicode/1/ünï.bin"]
    assert sorted((r["path"], r["reason"]) for r in summary["refused"]) == sorted((n, "bad_target") for n in bad_names)
    assert download(mirror_here, good["path"]).content == b"a valid non-ASCII name"

    r = get(puller, good["path"])
    assert r.status_code == 200 and r.content == b"a valid non-ASCII name"
    for name in bad_names:
        assert get(puller, "/" + quote(name)).status_code == 404
    assert db_file_count(puller) == 1
