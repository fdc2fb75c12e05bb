"""The `updown` client answers every failure with one line on stderr and an exit status, never a traceback:
a missing local file, a refused connection, a dropped connection, a TLS failure, an HTTP error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import KEY_ID, ServerProcess, free_port


def updown(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "updown_app", *args],
        env={**os.environ, "UPDOWN_KEY": "secret", "UPDOWN_KEY_ID": KEY_ID, **env},
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(done: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    err = done.stderr.strip()
    assert "Traceback" not in done.stderr, done.stderr
    assert len(err.splitlines()) == 1 and err.startswith("updown: "), done.stderr
    assert done.returncode == status, (done.returncode, done.stderr)
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def dropping_server() -> Iterator[int]:
    """Accepts connections and closes each at once, like a unit that dies mid-request."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    listener.close()


def test_missing_local_file(tmp_path: Path) -> None:
    done = updown(tmp_path, "upload", "nope.snap", "--package", "a", "--revision", "1", UPDOWN_URL="https://x.invalid")
    one_line(done, 2, "nope.snap", "No such file")


def test_missing_ca_bundle_and_key_file(tmp_path: Path) -> None:
    done = updown(tmp_path, "info", "abc", UPDOWN_URL="https://localhost:1", UPDOWN_CA_BUNDLE="missing-ca.pem")
    one_line(done, 2)
    (tmp_path / "keys.json").write_text("not json")
    env = {"UPDOWN_URL": "https://localhost:1", "UPDOWN_KEY_FILE": "keys.json"}
    done = subprocess.run(
        [sys.executable, "-m", "updown_app", "info", "abc"],
        env={k: v for k, v in {**os.environ, **env}.items() if k != "UPDOWN_KEY"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr and done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1


def test_refused_connection(tmp_path: Path) -> None:
    done = updown(tmp_path, "info", "abc", UPDOWN_URL=f"https://127.0.0.1:{free_port()}")
    one_line(done, 3, "cannot connect", "connection refused")
    url = f"https://127.0.0.1:{free_port()}/p/1/f.bin"
    one_line(updown(tmp_path, "download", url), 3, "connection refused")


def test_dropped_connection(tmp_path: Path, dropping_server: int) -> None:
    done = updown(tmp_path, "info", "abc", UPDOWN_URL=f"http://127.0.0.1:{dropping_server}")
    one_line(done, 3, "dropped")
    (tmp_path / "f.bin").write_bytes(b"x" * 100_000)
    done = updown(
        tmp_path,
        "upload",
        "f.bin",
        "--package",
        "a",
        "--revision",
        "1",
        UPDOWN_URL=f"http://127.0.0.1:{dropping_server}",
    )
    one_line(done, 3)


def test_tls_failure(server: ServerProcess, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "UPDOWN_CA_BUNDLE"}
    done = subprocess.run(
        [sys.executable, "-m", "updown_app", "info", "abc"],
        env={**env, "UPDOWN_URL": server.base_url, "UPDOWN_KEY": "x", "UPDOWN_KEY_ID": KEY_ID},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    one_line(done, 3, "TLS failure", "certificate verify failed", "UPDOWN_CA_BUNDLE")


def test_http_errors(server: ServerProcess, tmp_path: Path) -> None:
    ca = str(server.cert)
    done = updown(tmp_path, "info", "0" * 32, UPDOWN_URL=server.base_url, UPDOWN_CA_BUNDLE=ca)
    one_line(done, 1, "401")  # wrong secret: refused
    keyfile = tmp_path / "keys.json"
    keyfile.write_text(json.dumps({KEY_ID: server.keys[KEY_ID]}))
    env = {"UPDOWN_URL": server.base_url, "UPDOWN_CA_BUNDLE": ca, "UPDOWN_KEY_FILE": str(keyfile)}
    done = subprocess.run(
        [sys.executable, "-m", "updown_app", "info", "0" * 32],
        env={**{k: v for k, v in os.environ.items() if k != "UPDOWN_KEY"}, **env, "UPDOWN_KEY_ID": KEY_ID},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    one_line(done, 1, "404")
    done = updown(tmp_path, "download", f"{server.base_url}/no/1/such.bin", UPDOWN_CA_BUNDLE=ca)
    one_line(done, 1, "404 not_found")
