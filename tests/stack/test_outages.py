"""Dependency outages through a whole stack of its own (scripts/stack.py, on free ports): its own PostgreSQL and its
own Swift proxy (in front of the shared Swift storage servers), so this module can stop, freeze and kill them for
real, by the PIDs its stack recorded, without disturbing any other test.

- The backend cache unit's nginx frozen (SIGSTOP): an uncached download costs < 3 s, later ones nothing extra.
- PostgreSQL stopped, Swift stopped: every entry point (public host, private host, API) answers JSON 503 with
  Retry-After, never a 500 nor an HTML page, and what Varnish holds is still served.
- Swift dying in the middle of a download: the truncation comes at once, a Range resume gets a quick 503.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import need_service
from tests.stack.test_storage_failures import SwiftProxy
from tests.support.fake_sso import FakeSso, FakeStore
from tests.support.server import free_port
from updown_app.client import UpdownClient
from updown_app.core import signing

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
PRIVATE = "private.localhost"


def free_block(size: int = 60) -> int:
    """A base port whose next `size` ports are all free now (the stack's units take fixed offsets from it)."""
    for _ in range(50):
        base = random.randrange(30000, 60000 - size)
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


class OwnStack:
    def __init__(self, run: Path, proxy: SwiftProxy) -> None:
        self.run = run
        self.proxy = proxy
        self.env = {k: v for k, v in os.environ.items() if k != "UPDOWN_TEST_POSTGRES_URL"} | {
            "UPDOWN_STACK_PORT": str(free_block()),
            "UPDOWN_PG_PORT": str(free_port()),
            "UPDOWN_TEST_SWIFT_URL": proxy.url,
        }
        self.vars: dict[str, str] = {}

    def script(self, *args: str) -> None:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "stack.py"), *args], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    def start(self) -> None:
        self.script("start", str(self.run))
        for line in (self.run / "stack.env").read_text().splitlines():
            key, _, value = line.partition("=")
            self.vars[key.removeprefix("UPDOWN_TEST_STACK_")] = value

    def stop(self) -> None:
        self.script("stop", str(self.run))

    # -- the processes this stack started ------------------------------------------------------------------------

    def nginx_pids(self) -> list[int]:
        master = int((self.run / "backend0.pid").read_text())
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return [master, *map(int, children)]

    def postgres_pid(self) -> int:
        return int((self.run / "services" / "pg" / "data" / "postmaster.pid").read_text().split()[0])

    def postgres_start(self) -> None:
        env = self.env | {"UPDOWN_RUN_DIR": str(self.run / "services")}
        subprocess.run([str(ROOT / "scripts" / "services" / "postgres.sh"), "start"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnStack]:
    need_service("Swift", os.environ.get("UPDOWN_TEST_SWIFT_URL"))
    need_service("the local stack's tools", os.environ.get("UPDOWN_TEST_STACK_FRONTENDS"))
    proxy = SwiftProxy(tmp_path_factory.mktemp("outage-proxy"))
    proxy.start()
    # Not under pytest's tmp_path (mode 0700): PostgreSQL runs as its own user and must reach its data directory.
    run = Path(tempfile.mkdtemp(prefix="updown-outage-"))
    run.chmod(0o755)
    stack = OwnStack(run / "stack", proxy)
    try:
        try:
            stack.start()
        except subprocess.CalledProcessError:
            for log in sorted(stack.run.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")
            raise
        yield stack
    finally:
        stack.stop()
        proxy.kill()
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="module")
def frontends(own: OwnStack) -> list[str]:
    return own.vars["FRONTENDS"].split(",")


@pytest.fixture(scope="module")
def http(own: OwnStack) -> Iterator[httpx.Client]:
    with httpx.Client(verify=ssl.create_default_context(cafile=own.vars["CA"]), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def client(own: OwnStack, frontends: list[str]) -> Iterator[UpdownClient]:
    v = own.vars
    with UpdownClient(frontends[0], key_id=v["KEY_ID"], secret=v["KEY"].encode(), verify=v["CA"]) as c:
        yield c


@pytest.fixture(scope="module")
def sso_and_store(own: OwnStack) -> Iterator[tuple[FakeSso, FakeStore]]:
    """The deployer's SSO and store, played by small real servers on the ports the app units were given."""
    client_id, client_secret = own.vars["SSO_CLIENT"].split(":", 1)
    sso = FakeSso(client_id, client_secret)
    sso.port = int(own.vars["SSO_PORT"])
    store = FakeStore({own.vars["KEY_ID"]: own.vars["KEY"].encode()})
    store.port = int(own.vars["STORE_PORT"])
    sso.start()
    store.start()
    yield sso, store
    sso.stop()
    store.stop()


def publish(client: UpdownClient, directory: Path, size: int, visibility: str = "public") -> tuple[str, str, bytes]:
    """(id, path, content) of a new published file."""
    data = secrets.token_bytes(size)
    f = directory / f"f{secrets.token_hex(4)}.bin"
    f.write_bytes(data)
    record = client.upload(f, package="out" + secrets.token_hex(4), revision="1", visibility=visibility)
    client.publish(record["id"])
    return record["id"], record["path"], data


def prime(http: httpx.Client, frontends: list[str], path: str, data: bytes) -> None:
    """Until every frontend answers `path` from Varnish's cache (the outage tests' proof that grace serves it)."""
    deadline = time.monotonic() + 20
    for frontend in frontends:
        while True:
            r = http.get(frontend + path)
            assert r.status_code == 200 and r.content == data, (frontend, r.status_code, r.text[:300])
            if r.headers.get("x-cache") == "HIT":
                break
            assert time.monotonic() < deadline, (frontend, dict(r.headers))
            time.sleep(0.2)


@pytest.fixture(autouse=True)
def recovered(http: httpx.Client, frontends: list[str]) -> None:
    """Each test starts on a stack whose API answers through every frontend: a test that failed during its outage
    must not fail the next one too (HAProxy takes a few health checks to bring the app units back)."""
    deadline = time.monotonic() + 60
    while not all(_api_up(http, f) for f in frontends):
        assert time.monotonic() < deadline, "the stack did not recover from the previous test"
        time.sleep(0.5)


def _api_up(http: httpx.Client, frontend: str) -> bool:
    try:
        return http.get(frontend + "/v1/files/0").status_code not in (502, 503, 504)
    except httpx.HTTPError:
        return False


def wait_ready(http: httpx.Client, frontends: list[str], path: str, timeout: float = 60) -> None:
    """Until the app answers through every frontend again on both of its ways there: a download (Varnish, which may
    answer it from its cache alone) and the API (HAProxy straight to the app units, by health checks of its own)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if all(http.get(f + path).status_code == 200 and _api_up(http, f) for f in frontends):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the stack did not recover")
        time.sleep(0.5)


def metric(own: OwnStack, name: str) -> float:
    total = 0.0
    for app in own.vars["APPS"].split(","):
        text = httpx.get(app + "/metrics", headers={"X-Forwarded-Proto": "https"}).text
        total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))
    return total


def test_a_frozen_backend_unit_costs_a_download_under_3_s_and_later_ones_nothing(
    own, http, client, frontends, tmp_path
) -> None:
    files = [publish(client, tmp_path, 256 * 1024 + i) for i in range(8)]
    opens = metric(own, "updown_read_cache_breaker_opens_total")
    pids = own.nginx_pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        took = []
        for i, (_, path, data) in enumerate(files):  # none of them is cached anywhere yet
            start = time.monotonic()
            r = http.get(frontends[i % 2] + path, timeout=10)
            took.append(time.monotonic() - start)
            assert r.status_code == 200 and r.content == data, (path, r.status_code, r.text[:200])
        assert max(took) < 3.0, took
        # Each app unit pays once (its read timeout); after that the unit is out of its read path.
        slow = [t for t in took if t > 1.0]
        assert len(slow) <= len(own.vars["APPS"].split(",")), took
        assert metric(own, "updown_read_cache_breaker_opens_total") > opens
        assert metric(own, 'updown_read_cache_fallbacks_total{reason="circuit_open"') >= len(files) - len(slow)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    logs = "".join((own.run / f"app{i}.log").read_text() for i in range(2))
    assert "backend cache unit taken out of the read path" in logs and "temp_url_sig" not in logs


def signed_get(http: httpx.Client, frontend: str, own: OwnStack, path: str, timeout: float = 15) -> httpx.Response:
    fields = signing.fresh_fields()
    auth = signing.authorization_header(own.vars["KEY_ID"], own.vars["KEY"].encode(), "GET", path, fields)
    return http.get(frontend + path, params=fields, headers={"authorization": auth}, timeout=timeout)


def assert_json_503(r: httpx.Response, where: str, seen: set[str]) -> None:
    assert r.status_code == 503, (where, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), (where, r.headers, r.text[:300])
    assert int(r.headers["retry-after"]) > 0, where
    seen.add(r.json()["error"]["code"])


def outage_rounds(
    http: httpx.Client, frontends: list[str], own: OwnStack, entry_points: dict[str, Any], cached: tuple[str, bytes]
) -> set[str]:
    """Every entry point on every frontend, for long enough that the app units answer first and, once their
    readiness fails, the frontends: all JSON 503 + Retry-After, every answer within seconds; the cached file 200."""
    seen: set[str] = set()
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        for frontend in frontends:
            for where, request in entry_points.items():
                start = time.monotonic()
                r = request(frontend)
                assert time.monotonic() - start < 8, (where, time.monotonic() - start)
                assert_json_503(r, f"{where} via {frontend}", seen)
            r = http.get(frontend + cached[0])
            assert r.status_code == 200 and r.content == cached[1] and r.headers["x-cache"] == "HIT", (
                frontend, r.status_code, dict(r.headers), r.text[:300])  # fmt: skip
        time.sleep(0.3)
    return seen


def wait_gone(pid: int, timeout: float = 15.0) -> None:
    """Until ``pid`` has exited (gone, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        assert time.monotonic() < deadline, f"process {pid} still running"
        time.sleep(0.05)


def private_get(http: httpx.Client, token: str, path: str) -> Any:
    return lambda frontend: http.get(
        frontend + path, headers={"Host": PRIVATE, "Authorization": f"Bearer {token}"}, timeout=15
    )


def test_database_stopped_every_entry_point_answers_json_503_with_retry_after(
    own, http, client, frontends, sso_and_store, tmp_path
) -> None:
    sso, store = sso_and_store
    _, cached_path, cached_data = publish(client, tmp_path, 10_000)
    prime(http, frontends, cached_path, cached_data)
    file_id, public_path, _ = publish(client, tmp_path, 20_000)
    _, private_path, _ = publish(client, tmp_path, 30_000, visibility="private")
    token = sso.issue(secrets.token_urlsafe(24), "alice")
    store.grants.add(("alice", private_path.split("/")[1]))
    entry_points = {
        "public host": lambda frontend: http.get(frontend + public_path, timeout=15),
        "private host": private_get(http, token, private_path),
        "API": lambda frontend: signed_get(http, frontend, own, f"/v1/files/{file_id}"),
    }
    master = own.postgres_pid()
    os.kill(master, signal.SIGINT)  # PostgreSQL's fast shutdown
    try:
        wait_gone(master)  # stopped, not stopping: a request in the shutdown's first moments may still be answered
        seen = outage_rounds(http, frontends, own, entry_points, (cached_path, cached_data))
    finally:
        own.postgres_start()
    assert seen == {"database_unavailable", "unavailable"}, seen  # the app's answer, then the frontends'
    logs = "".join((own.run / f"app{i}.log").read_text() for i in range(2))
    assert "internal_error" not in logs and "unhandled error" not in logs
    wait_ready(http, frontends, public_path)


def test_database_frozen_a_download_answers_json_503_within_seconds(own, http, client, frontends, tmp_path) -> None:
    """A hung PostgreSQL (every process of it frozen): bounded pool, ping, connect and statement waits."""
    file_id, path, _ = publish(client, tmp_path, 20_000)
    master = own.postgres_pid()
    pids = [master, *map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split())]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        took = {}
        for where, request in {
            "public host": lambda: http.get(frontends[0] + path, timeout=60),
            "API": lambda: signed_get(http, frontends[1], own, f"/v1/files/{file_id}", timeout=60),
        }.items():
            start = time.monotonic()
            r = request()
            took[where] = time.monotonic() - start
            assert_json_503(r, where, set())
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert max(took.values()) < 20, took  # Varnish would wait 60 s for the app; the app's DB waits are bounded
    wait_ready(http, frontends, path)


def test_swift_stopped_every_entry_point_answers_json_503_with_retry_after(
    own, http, client, frontends, sso_and_store, tmp_path
) -> None:
    sso, store = sso_and_store
    _, cached_path, cached_data = publish(client, tmp_path, 10_000)
    prime(http, frontends, cached_path, cached_data)
    _, public_path, _ = publish(client, tmp_path, 20_000)
    _, private_path, _ = publish(client, tmp_path, 30_000, visibility="private")
    token = sso.issue(secrets.token_urlsafe(24), "alice")
    store.grants.add(("alice", private_path.split("/")[1]))
    upload = tmp_path / "during.bin"
    upload.write_bytes(secrets.token_bytes(5000))
    answers: list[httpx.Response] = []
    client.http.event_hooks["response"].append(answers.append)

    def api_upload(frontend: str) -> httpx.Response:
        answers.clear()
        retries, client.retries = client.retries, 0  # the answer itself is checked, not the client's retries
        try:
            with pytest.raises(Exception):  # noqa: B017 - UpdownError
                client.upload(upload, package="during" + secrets.token_hex(3), revision="1")
        finally:
            client.retries = retries
        return answers[-1]

    entry_points = {
        "public host": lambda frontend: http.get(frontend + public_path, timeout=15),
        "private host": private_get(http, token, private_path),
        "API upload": api_upload,
    }
    own.proxy.kill()
    try:
        seen = outage_rounds(http, frontends, own, entry_points, (cached_path, cached_data))
    finally:
        client.http.event_hooks["response"].remove(answers.append)
        own.proxy.start()
    assert seen == {"storage_unavailable", "unavailable"}, seen
    wait_ready(http, frontends, public_path)


def test_swift_dying_mid_download_truncates_at_once_and_resumes_get_what_is_cached_then_a_quick_503(
    own, http, client, frontends, sso_and_store, tmp_path
) -> None:
    """On the private host (never cached by Varnish, which would fetch the whole file ahead of a slow client)."""
    sso, store = sso_and_store
    _, path, data = publish(client, tmp_path, 48 * MiB, visibility="private")
    token = sso.issue(secrets.token_urlsafe(24), "bob")
    store.grants.add(("bob", path.split("/")[1]))
    headers = {"Host": PRIVATE, "Authorization": f"Bearer {token}"}
    frontend = frontends[0]
    got = bytearray()
    ended: list[float] = []
    started = threading.Event()

    def download() -> None:
        try:
            with http.stream("GET", frontend + path, headers=headers, timeout=60) as r:
                assert r.status_code == 200
                for chunk in r.iter_raw(64 * 1024):
                    got.extend(chunk)
                    if len(got) >= 2 * MiB:
                        started.set()
                        time.sleep(0.01)  # a slow client: most of the file is still to come when Swift goes
        except httpx.HTTPError:
            pass
        finally:
            ended.append(time.monotonic())

    reader = threading.Thread(target=download)
    reader.start()
    assert started.wait(30)
    killed = time.monotonic()
    own.proxy.kill()

    def resume(offset: int) -> tuple[httpx.Response | None, bytes, float]:
        """A resume from ``offset``: its answer, the body it carried before it ended or broke off, its time."""
        begun = time.monotonic()
        body = bytearray()
        answer = None
        try:
            with http.stream("GET", frontend + path, headers={**headers, "Range": f"bytes={offset}-"}) as answer:
                for chunk in answer.iter_raw(64 * 1024):
                    body.extend(chunk)
        except httpx.HTTPError:
            pass
        return answer, bytes(body), time.monotonic() - begun

    try:
        time.sleep(0.5)
        offset = len(got)  # the reader may still be taking in what was buffered
        first, carried, resume_took = resume(offset)
        # What the backend cache unit holds of the rest may still come (a partial 206); where it ends, the store's
        # breaker is open: the next resume hears 503 at once.
        served = carried if first is not None and first.status_code == 206 else b""
        # The frontends share requests out round-robin over the app units, and each unit's breaker learns the
        # outage from its own first failed call: a unit that has not met it yet pays that once. So the resumes go
        # on until one is answered at once, at most one per app unit.
        slow: list[float] = [resume_took]
        app_units = len(own.vars["APPS"].split(","))
        for _ in range(app_units):
            again, again_body, again_took = resume(offset + len(served))
            if again_took < 1.0 or again is None or again.status_code != 503:
                break
            slow.append(again_took)
        reader.join(60)
        assert not reader.is_alive()
    finally:
        own.proxy.start()
    assert len(got) < len(data) and bytes(got) == data[: len(got)]  # truncated, never wrong bytes
    assert first is not None and first.status_code in (206, 503), first
    if first.status_code == 503:
        assert first.headers["retry-after"]
        assert json.loads(carried)["error"]["code"] in ("storage_unavailable", "unavailable")
    assert served == data[offset : offset + len(served)] and offset + len(served) < len(data)
    assert again is not None and again.status_code == 503 and again.headers["retry-after"], again
    assert json.loads(again_body)["error"]["code"] in ("storage_unavailable", "unavailable")
    print(
        f"resume: {first.status_code} with {len(served)} bytes in {resume_took:.2f} s, slow 503s "
        f"{[round(t, 2) for t in slow[1:]]}, then a 503 in {again_took:.2f} s, truncation {ended[0] - killed:.2f} s "
        "after the kill"
    )
    # The first requests of an outage pay what it takes to learn the store is gone: the app's 2 s read timeout of
    # the backend unit (waiting on the store itself), then one round of the store's retries, answered 503 by the
    # store's load balancer (5.3 s seen). Once one failed, the store's breaker answers the next ones at once.
    assert max(slow) < 7, slow
    assert len(slow) <= app_units, slow  # every unit paid the learning once at most
    assert again_took < 1.0, (again_took, slow)
    # Before the bounded store retries the client stalled ~17 s; what arrives after the kill is only what the
    # frontend and the sockets still buffer, read by this deliberately slow client (5.2 s seen on a busy box).
    assert ended[0] - killed < 8, ended[0] - killed
