"""The sweeper after crashes: ``kill -9`` mid-upload and an object no file records (an ingest killed between its
put and its record). Afterwards the store holds exactly the objects the database knows."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

from tests.support.forms import form, multipart, signed_headers, upload_fields
from tests.support.server import KEY_ID, ServerProcess, make_server

DAY = 24 * 3600


def recorded_keys(srv: ServerProcess) -> set[str]:
    with sqlite3.connect(srv.data_dir / "updown.db") as conn:
        return {row[0] for row in conn.execute("SELECT object_key FROM files")}


def stored(srv: ServerProcess) -> set[str]:
    return {k for k in srv.objects() if not k.startswith(".tmp/")}


def partials(srv: ServerProcess) -> list[Path]:
    return [p for p in (srv.data_dir / "objects" / ".tmp").iterdir() if p.is_file()]


def backdate(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def kill_mid_upload(srv: ServerProcess) -> None:
    """Start an upload, send half its file, and ``kill -9`` the server once the partial write is on disk."""
    data = os.urandom(2 * 1024 * 1024)
    fields = upload_fields(data, package="crash")
    body, ctype = multipart(form(fields, data))
    headers = signed_headers(KEY_ID, srv.keys[KEY_ID], fields, ctype)
    before = len(partials(srv))
    ctx = ssl.create_default_context(cafile=str(srv.cert))
    with (
        socket.create_connection(("127.0.0.1", srv.port)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: localhost\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
        )
        sock.sendall(body[: len(body) // 2])
        deadline = time.monotonic() + 10
        while len(partials(srv)) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(partials(srv)) > before, "the upload never reached the store"
        srv.kill()


def plant_orphan(srv: ServerProcess, data: bytes) -> str:
    """The object an ingest killed between its put and its record leaves: content at its key, no file row."""
    sha = hashlib.sha256(data).hexdigest()
    key = f"sha256/{sha[:2]}/{sha}"
    path = srv.data_dir / "objects" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return key


def sweep_cli(srv: ServerProcess, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "updown_app", "sweep", *args],
        env={**os.environ, **srv.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


def test_sweep_command_leaves_exactly_the_recorded_objects(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "srv", extra_env={"UPDOWN_SWEEP__INTERVAL": "0"}).start()
    try:
        with srv.client() as c:
            for i in range(3):
                (tmp_path / f"f{i}").write_bytes(os.urandom(1000 + i))
                c.upload(tmp_path / f"f{i}", package="kept", revision=str(i))
        for _ in range(2):  # two crashes mid-upload, each leaving a partial write
            kill_mid_upload(srv)
            srv.start()
        old_orphan = plant_orphan(srv, b"orphan from yesterday")
        new_orphan = plant_orphan(srv, b"an ingest that is about to record this")
        backdate(srv.data_dir / "objects" / old_orphan, 2 * DAY)
        for p in partials(srv):
            backdate(p, 2 * DAY)
        fresh_partial = srv.data_dir / "objects" / ".tmp" / "in-progress"
        fresh_partial.write_bytes(b"a live upload on another unit")
        recorded = recorded_keys(srv)
        assert len(recorded) == 3 and stored(srv) == recorded | {old_orphan, new_orphan}
        assert len(partials(srv)) == 3

        assert sweep_cli(srv, "--dry-run")["object_keys"] == [old_orphan]
        assert stored(srv) == recorded | {old_orphan, new_orphan} and len(partials(srv)) == 3

        report = sweep_cli(srv)  # default grace: a day
        assert report["object_keys"] == [old_orphan] and report["removed_partials"] == 2
        assert stored(srv) == recorded | {new_orphan}
        assert partials(srv) == [fresh_partial]

        report = sweep_cli(srv, "--grace", "0")
        assert report["object_keys"] == [new_orphan]
        assert stored(srv) == recorded_keys(srv) == recorded  # exactly the objects the database knows
        assert partials(srv) == []
        with srv.client() as c:  # the recorded files are intact
            for key in recorded:
                sha = key.rsplit("/", 1)[1]
                assert hashlib.sha256((srv.data_dir / "objects" / key).read_bytes()).hexdigest() == sha
            c.upload(tmp_path / "f0", package="kept", revision="9")  # deduplicated onto a kept object
        assert stored(srv) == recorded_keys(srv) == recorded
    finally:
        srv.stop()


def test_the_service_sweeps_after_a_crash_and_counts(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "srv", extra_env={"UPDOWN_SWEEP__INTERVAL": "0"}).start()
    try:
        kill_mid_upload(srv)
        orphan = plant_orphan(srv, b"left by a crash")
        for p in [*partials(srv), srv.data_dir / "objects" / orphan]:
            backdate(p, 2 * DAY)
        # Restarted with the sweeper on: it sweeps soon after start (within a second here, jittered).
        srv.env["UPDOWN_SWEEP__INTERVAL"] = "1"
        srv.start()
        deadline = time.monotonic() + 20
        while (partials(srv) or stored(srv)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert partials(srv) == [] and stored(srv) == set() == recorded_keys(srv)
        with srv.http(host="localhost") as http:
            metrics = http.get("/metrics").text
        assert 'updown_swept_total{kind="partial"} 1.0' in metrics
        assert 'updown_swept_total{kind="object"} 1.0' in metrics
    finally:
        srv.stop()
