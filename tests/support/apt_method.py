"""What the apt method tests share: a real ``updown serve`` with its default host names (the private one,
``private.localhost``, is loopback to the method as RFC 6761 says, whatever the system resolver), the fake SSO
(introspection: opaque tokens that can be expired or revoked) and the fake store; and a driver that runs the
method executable and talks apt's message protocol to it over its stdin/stdout."""

from __future__ import annotations

import os
import queue
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests.stack.apt_repo import AptClient
from tests.support.fake_sso import FakeSso, FakeStore, running
from tests.support.server import KEY_ID, ServerProcess, make_server

PRIVATE = "private.localhost"
CLIENT_SECRET = secrets.token_urlsafe(24)
HMAC_KEYS = {KEY_ID: secrets.token_urlsafe(32)}
METHOD_SOURCE = Path(__file__).resolve().parents[2] / "src" / "updown_app" / "aptmethod.py"
BUILD_DEB = Path(__file__).resolve().parents[2] / "scripts" / "build-apt-method-deb.sh"


@pytest.fixture(scope="module")
def sso() -> Iterator[FakeSso]:
    yield from running(FakeSso("updown", CLIENT_SECRET))


@pytest.fixture(scope="module")
def store() -> Iterator[FakeStore]:
    yield from running(FakeStore({KEY_ID: HMAC_KEYS[KEY_ID].encode()}))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, sso: FakeSso, store: FakeStore) -> Iterator[ServerProcess]:
    env = {**sso.introspection_env(), **store.access_check_env(KEY_ID, allowed_ttl=1)}
    server = make_server(tmp_path_factory.mktemp("srv"), extra_env=env, keys=HMAC_KEYS).start()
    yield server
    server.stop()


def publish_private(srv: ServerProcess, path: Path, package: str, revision: str = "1") -> dict[str, Any]:
    with srv.client() as c:
        record = c.upload(path, package=package, revision=revision, filename=path.name, visibility="private")
        published: dict[str, Any] = c.publish(record["id"])
        return published


def corrupt_object(srv: ServerProcess, sha256: str) -> None:
    """Flip one byte of the stored object (same size), as a damaged disk or a bad cache would."""
    matches = [p for p in (srv.data_dir / "objects").rglob("*") if p.is_file() and sha256 in p.as_posix()]
    assert len(matches) == 1, matches
    data = bytearray(matches[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    matches[0].write_bytes(bytes(data))


def write_token(path: Path, token: str, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def method_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb scripts/build-apt-method-deb.sh builds."""
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run([str(BUILD_DEB), str(out)], capture_output=True, text=True, check=True)
    return Path(result.stdout.strip())


def install_method(methods: Path, deb: Path) -> Path:
    """A methods directory like /usr/lib/apt/methods: the system's methods (apt needs ``store``, ``file``, ...)
    and ``updown+https`` as the .deb installs it (its shebang runs /usr/bin/python3)."""
    unpacked = methods.parent / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    methods.mkdir(parents=True, exist_ok=True)
    for entry in Path("/usr/lib/apt/methods").iterdir():
        (methods / entry.name).symlink_to(entry)
    target = methods / "updown+https"
    target.symlink_to(unpacked / "usr/lib/apt/methods/updown+https")
    return target


class MethodApt:
    """An ``AptClient`` (private apt state) set up as an apt user would: the packaged method in its methods
    directory, the token in a 0600 file and an apt.conf.d file naming it."""

    def __init__(self, apt: AptClient, deb: Path, host: str, token: str) -> None:
        self.apt = apt
        home = apt.home
        install_method(home / "methods", deb)
        (home / "auth.conf.d").mkdir()
        self.token_file = write_token(home / "auth.conf.d" / "updown.token", token)
        self.conf = home / "apt.conf.d" / "50updown"
        self.conf.parent.mkdir()
        self.conf.write_text(f'Acquire::updown+https::{host}::Token-File "{self.token_file}";\n')
        # APT_CONFIG is read before the parts directory, so it can move /etc/apt/apt.conf.d to ours.
        (home / "apt.conf").write_text(f'Dir::Etc::parts "{self.conf.parent}";\n')

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "APT_CONFIG": str(self.apt.home / "apt.conf")}
        return self.apt.run("-o", f"Dir::Bin::Methods={self.apt.home / 'methods'}", *args, env=env)


# Talking to the method ---------------------------------------------------------------------------------------


@dataclass
class Msg:
    code: int
    text: str
    fields: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.fields[name]

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)


def encode(code: int, text: str, fields: Iterable[tuple[str, str]] = ()) -> bytes:
    return ("".join([f"{code} {text}\n", *(f"{k}: {v}\n" for k, v in fields), "\n"])).encode()


class MethodProcess:
    """The method run as apt runs it: a child process, messages on its stdin and stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.messages: queue.Queue[Msg | None] = queue.Queue()
        self.seen: list[Msg] = []
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        lines: list[str] = []
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line:
                lines.append(line)
                continue
            if lines:
                code, _, text = lines[0].partition(" ")
                fields: dict[str, str] = {}
                for item in lines[1:]:
                    name, _, value = item.partition(":")
                    fields[name.strip()] = value.strip()
                self.messages.put(Msg(int(code), text, fields))
                lines = []
        self.messages.put(None)

    def send(self, code: int, text: str, fields: Iterable[tuple[str, str]] = ()) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode(code, text, fields))
        self.proc.stdin.flush()

    def configure(self, items: dict[str, str]) -> None:
        self.send(601, "Configuration", [("Config-Item", f"{k}={v}") for k, v in items.items()])

    def acquire(self, uri: str, filename: Path, **extra: str) -> None:
        self.send(600, "URI Acquire", [("URI", uri), ("Filename", str(filename)),
                                       *((k.replace("_", "-"), v) for k, v in extra.items())])  # fmt: skip

    def next(self, timeout: float = 30) -> Msg:
        msg = self.messages.get(timeout=timeout)  # flushed after every message, or this times out
        if msg is None:
            raise AssertionError(f"the method exited: {self.stderr()}")
        self.seen.append(msg)
        return msg

    def finish(self, uri: str, timeout: float = 30) -> Msg:
        """Messages until the final one (201, 400 or 103) for ``uri``; other URIs' are kept in ``seen``."""
        for msg in self.seen:
            if msg.code in (103, 201, 400) and msg.get("URI") == uri:
                return msg
        while True:
            msg = self.next(timeout)
            if msg.code in (103, 201, 400) and msg.get("URI") == uri:
                return msg

    def for_uri(self, uri: str) -> list[Msg]:
        return [m for m in self.seen if m.get("URI") == uri]

    def stderr(self) -> str:
        self.close()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@contextmanager
def method(argv: list[str] | None = None) -> Iterator[MethodProcess]:
    proc = MethodProcess(argv or [sys.executable, "-I", str(METHOD_SOURCE)])
    try:
        yield proc
    finally:
        proc.close()
        if proc.proc.stdout:
            proc.proc.stdout.close()
        if proc.proc.stderr:
            proc.proc.stderr.close()


def env_without_python_path() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
