"""The `updown` command as a user runs it, and resumable verified downloads."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.server import KEY_ID, ServerProcess, free_port, make_server
from updown_app.client import UpdownError


def run(srv: ServerProcess, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    keyfile = tmp / "keys.json"
    keyfile.write_text(json.dumps({KEY_ID: srv.keys[KEY_ID]}))
    env = {
        **os.environ,
        "UPDOWN_URL": srv.base_url,
        "UPDOWN_CA_BUNDLE": str(srv.cert),
        "UPDOWN_KEY_ID": KEY_ID,
        "UPDOWN_KEY_FILE": str(keyfile),
    }
    return subprocess.run(
        [sys.executable, "-m", "updown_app", *args],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_upload_publish_info_download(server: ServerProcess, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    (tmp_path / "app_1.0.snap").write_bytes(data)
    up = run(server, tmp_path, "upload", "app_1.0.snap", "--package", "app", "--revision", "1")
    assert up.returncode == 0, up.stderr
    rec = json.loads(up.stdout)
    assert rec["state"] == "unpublished" and rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads(run(server, tmp_path, "publish", rec["id"]).stdout)["state"] == "published"
    info = json.loads(run(server, tmp_path, "info", rec["id"]).stdout)
    assert [e["action"] for e in info["events"]] == ["upload", "publish"]
    url = f"{server.base_url}/app/1/app_1.0.snap"
    dl = run(server, tmp_path, "download", url, "-o", "copy.snap")
    assert dl.returncode == 0, dl.stderr
    assert (tmp_path / "copy.snap").read_bytes() == data
    dup = run(server, tmp_path, "upload", "app_1.0.snap", "--package", "app", "--revision", "1")
    assert dup.returncode == 1 and "409 duplicate" in dup.stderr


def test_download_resumes_and_verifies(server: ServerProcess, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    src = tmp_path / "resume.bin"
    src.write_bytes(data)
    with server.client() as c:
        rec = c.upload(src, package="resume", revision="1")
        c.publish(rec["id"])
        url = f"{server.base_url}/resume/1/resume.bin"
        dest = tmp_path / "out.bin"
        # An interrupted earlier transfer left the first MiB behind.
        (tmp_path / "out.bin.part").write_bytes(data[: 1024 * 1024])
        (tmp_path / "out.bin.part.etag").write_text(f'"{rec["sha256"]}"')
        c.download(url, dest)
        assert dest.read_bytes() == data
        # A corrupt partial file is detected by the SHA-256 check and removed.
        (tmp_path / "bad.bin.part").write_bytes(b"\0" * 1024)
        (tmp_path / "bad.bin.part.etag").write_text(f'"{rec["sha256"]}"')
        with pytest.raises(UpdownError, match="checksum_mismatch"):
            c.download(url, tmp_path / "bad.bin")
        assert not (tmp_path / "bad.bin.part").exists()
        c.download(url, tmp_path / "bad.bin")
        assert (tmp_path / "bad.bin").read_bytes() == data


def test_same_flow_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    srv = make_server(tmp_path / "srv", database_url=postgres_url).start()
    try:
        src = tmp_path / "pg.bin"
        src.write_bytes(b"stored in postgres" * 1000)
        with srv.client() as c:
            rec = c.upload(src, package="pg", revision="1")
            c.publish(rec["id"])
            c.download(f"{srv.base_url}/pg/1/pg.bin", tmp_path / "pg.out")
        assert (tmp_path / "pg.out").read_bytes() == src.read_bytes()
    finally:
        srv.stop()


def test_find_published_names_the_file_served_at_a_path(server: ServerProcess, tmp_path: Path) -> None:
    """`updown find-published` (the charm's unpublish-by-name action) reads the instance's own settings."""
    (tmp_path / "f.bin").write_bytes(b"find me\n")
    rec = json.loads(run(server, tmp_path, "upload", "f.bin", "--package", "find", "--revision", "1").stdout)

    def find(path: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **server.env}
        cmd = [sys.executable, "-m", "updown_app", "find-published", path]
        return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert json.loads(find("/find/1/f.bin").stdout) == {"id": None}  # unpublished: not served
    run(server, tmp_path, "publish", rec["id"])
    assert json.loads(find("/find/1/f.bin").stdout) == {"id": rec["id"]}
    assert json.loads(find("find/1/other.bin").stdout) == {"id": None}
    bad = find("/find/1")
    assert bad.returncode != 0 and "/<package>/<revision>/<filename>" in bad.stderr


def test_serve_prints_commands_that_work_as_printed(tmp_path: Path) -> None:
    """The README's run command (`.venv/bin/updown serve`, with `updown` not on PATH), then the banner's commands
    pasted into a shell in the same directory: upload, publish and download work as printed."""
    venv = Path(sys.executable).parent.parent
    assert (venv / "bin" / "updown").exists()
    (tmp_path / ".venv").symlink_to(venv)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != venv / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDOWN_") and k != "VIRTUAL_ENV"}
    env |= {"PATH": path, "UPDOWN_PORT": str(free_port()), "UPDOWN_HTTP_PORT": str(free_port())}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([".venv/bin/updown", "serve"], cwd=tmp_path, env=env, stderr=log, stdout=log)
    try:
        deadline = time.monotonic() + 30
        while "Upload a first file" not in (tmp_path / "serve.log").read_text() or not ready(env["UPDOWN_PORT"]):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        printed = (tmp_path / "serve.log").read_text().split("Upload a first file with the bundled client:\n", 1)[1]
        commands = [line[2:] for line in printed.splitlines() if line.startswith("  ")]
        assert all(not c.startswith("updown ") for c in commands), commands  # not on PATH here
        exports = [c for c in commands if c.startswith("export ")]
        steps = [c for c in commands if not c.startswith("export ")]

        def shell(command: str) -> subprocess.CompletedProcess[str]:
            script = "\n".join([*exports, command])
            return subprocess.run(
                ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            )

        outputs = []
        file_id = ""
        for step in steps:
            done = shell(step.replace("<id>", file_id))
            assert done.returncode == 0, (step, done.stderr)
            outputs.append(done.stdout)
            if " upload " in step:
                file_id = json.loads(done.stdout)["id"]
        assert file_id and (tmp_path / "hello.txt").read_text() == "hello\n"
        assert outputs[-1].strip() == "hello.txt"  # downloaded over the original, verified
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def ready(port: str) -> bool:
    import httpx

    try:
        return httpx.get(f"https://127.0.0.1:{port}/readyz", verify=False, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
