"""The backend cache tier for real: the test Swift behind a TLS terminator (HAProxy, throwaway CA), backend cache
units (nginx, configs rendered by charms/cache's workload code) and `updown serve` reading objects through them.

Ports are picked in 21000-21999. Skips without the Swift of scripts/services (UPDOWN_TEST_SWIFT_URL).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from scripts.throwaway_ca import make_tls

from tests.conftest import need_service
from tests.support.server import KEY_ID, ServerProcess, make_server
from tests.support.swift import SWIFT_KEY, SWIFT_URL, SWIFT_USER, swift_env
from updown_app.settings import SwiftStorageSettings
from updown_app.storage.read_cache import ReadCacheStorage
from updown_app.storage.swift import SwiftStorage

# the cache charm's modules, as it imports them: its src/ and the library both charms carry
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "charms" / "common"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "charms" / "cache" / "src"))

import workload
from models import CacheConfig, CacheState, Origin, Telemetry

MiB = 1024 * 1024
SLICE = 8 * MiB
RUN = uuid.uuid4().hex[:8]
CONTAINER = f"backend-cache-{RUN}"
# A container key: it can't disturb the account key other suites set on the shared Swift.
TEMP_URL_KEY = secrets.token_urlsafe(24)
UNITS = ("updown-cache-backend/0", "updown-cache-backend/1")


def free_port() -> int:
    for _ in range(200):
        port = random.randint(21000, 21999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 21000-21999")


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1, verify=False).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def swift_settings() -> SwiftStorageSettings:
    url = need_service("Swift", SWIFT_URL)
    return SwiftStorageSettings(
        auth="tempauth",
        auth_url=f"{url}/auth/v1.0",
        username=SWIFT_USER,
        password=SWIFT_KEY,  # type: ignore[arg-type]
        container=CONTAINER,
        temp_url_key=TEMP_URL_KEY,  # type: ignore[arg-type]
        temp_url_key_scope="container",
        retry_backoff=0.05,
    )


@dataclass
class TlsStore:
    """HAProxy terminating TLS in front of the test Swift; one log line per request nginx makes to the store."""

    port: int
    ca: str
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def requests(self, since: int = 0) -> list[dict[str, str]]:
        """(method, path, status, bytes, range) of every request after byte ``since`` of the log."""
        with self.log.open("rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        out = []
        for line in lines:
            match = re.search(r"REQ (\S+) (\S+) (\d+) (\d+) range=(\S*)", line)
            if match:
                method, path, status, size, rng = match.groups()
                out.append({"method": method, "path": path, "status": status, "bytes": size, "range": rng})
        return out

    def mark(self) -> int:
        return self.log.stat().st_size


@pytest.fixture(scope="module")
def tls_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStore]:
    swift = urlsplit(need_service("Swift", SWIFT_URL))
    for binary in ("haproxy", "nginx"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is not installed (scripts/apt-packages.txt)")
    root = tmp_path_factory.mktemp("tls-store")
    chain, key = make_tls("localhost", ["localhost"])
    (root / "store.pem").write_text(chain + key)
    port = free_port()
    (root / "haproxy.cfg").write_text(
        "\n".join(
            [
                "global",
                "    log stdout format raw local0 info",
                "defaults",
                "    mode http",
                "    log global",
                '    log-format "REQ %HM %HPO %ST %B range=%[capture.req.hdr(0)]"',
                "    timeout connect 5s",
                "    timeout client 60s",
                "    timeout server 60s",
                "frontend store",
                f"    bind 127.0.0.1:{port} ssl crt {root / 'store.pem'}",
                "    capture request header Range len 64",
                "    default_backend swift",
                "backend swift",
                f"    server swift {swift.hostname}:{swift.port or 80}",
                "",
            ]
        )
    )
    log = root / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(root / "haproxy.cfg")], stdout=out, stderr=subprocess.STDOUT
        )
    store = TlsStore(port, chain[chain.rindex("-----BEGIN CERTIFICATE-----") :], log, proc)
    try:
        wait_http(f"{store.url}/info")
        yield store
    finally:
        stop(proc)


@dataclass
class Unit:
    """A backend cache unit: nginx on loopback, its files under its own root (Layout.under)."""

    name: str
    port: int
    state: CacheState
    layout: workload.Layout
    proc: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Unit:
        argv = workload.local_backend(self.state, self.layout)
        with (self.layout.nginx_error_log.parent / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wait_http(f"{self.url}{workload.CACHE_HEALTH_PATH}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def access(self) -> list[dict[str, str]]:
        """The unit's access log: client, method, path (no query), status, cache status."""
        log = self.layout.nginx_access_log
        out = []
        for line in log.read_text().splitlines() if log.exists() else ():
            match = re.match(r'(\S+) \[\S+\] "(\S+) (\S+)" (\d+) (\d+) range="[^"]*" cache=(\S+)', line)
            if match:
                client, method, path, status, _size, cache = match.groups()
                out.append({"client": client, "method": method, "path": path, "status": status, "cache": cache})
        return out


@pytest.fixture(scope="module")
def units(tls_store: TlsStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Unit]]:
    started = []
    try:
        for name in UNITS:
            port = free_port()
            state = CacheState(
                unit_name=name,
                address="127.0.0.1",
                bind_address="127.0.0.1",
                config=CacheConfig(
                    role="backend",  # type: ignore[arg-type]
                    upstream_url=tls_store.url,
                    upstream_ca=tls_store.ca,
                    cache_port=port,
                    slice_size="8M",
                    cache_size="1G",
                ),
                # the app runs on this host: its address is the unit's own, always allowed
                origins=(Origin(unit_name="updown-app/0", address="127.0.0.1", port=8000),),
                # two units on one machine: the stub_status port of each its own
                telemetry=Telemetry(nginx_status=free_port()),
            )
            root = tmp_path_factory.mktemp(name.replace("/", "-"))
            started.append(Unit(name, port, state, workload.Layout.under(root)).start())
        yield started
    finally:
        for unit in started:
            unit.stop()


def app_env(backends: dict[str, str]) -> dict[str, str]:
    return {
        **swift_env(CONTAINER, temp_url_key=TEMP_URL_KEY, temp_url_key_scope="container"),
        "UPDOWN_CACHES__BACKENDS": json.dumps(backends),
        "UPDOWN_MAX_UPLOAD_SIZE": str(128 * MiB),
    }


def start_app(tmp: Path, backends: dict[str, str]) -> ServerProcess:
    srv = make_server(tmp, tls=False, extra_env=app_env(backends))
    srv.port = free_port()
    srv.env["UPDOWN_PORT"] = str(srv.port)
    return srv.start()


@pytest.fixture(scope="module")
def app(units: list[Unit], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """updown serve reading through unit 0 only."""
    srv = start_app(tmp_path_factory.mktemp("app-one"), {units[0].name: units[0].url})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def app_two(units: list[Unit], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """updown serve reading through both units."""
    srv = start_app(tmp_path_factory.mktemp("app-two"), {u.name: u.url for u in units})
    yield srv
    srv.stop()


def publish(srv: ServerProcess, tmp: Path, size: int) -> tuple[str, bytes]:
    data = secrets.token_bytes(size)
    f = tmp / f"{secrets.token_hex(4)}.bin"
    f.write_bytes(data)
    with srv.client(KEY_ID) as client:
        record = client.upload(f, package="bc" + secrets.token_hex(4), revision="1", visibility="public")
        client.publish(record["id"])
    return str(record["path"]), data


def download(srv: ServerProcess, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with srv.http(host="localhost") as http:
        response = http.get(path, headers=headers or {})
    assert response.status_code in (200, 206), response.text
    return response


def metric(srv: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"{srv.base_url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def object_lines(unit: Unit, since: int = 0) -> list[dict[str, str]]:
    return [e for e in unit.access()[since:] if e["path"].startswith("/v1/AUTH_") and CONTAINER in e["path"]]


def test_downloads_are_byte_exact_and_the_second_read_is_a_hit(app, units, tmp_path) -> None:
    path, data = publish(app, tmp_path, 3 * MiB + 12345)
    seen = len(units[0].access())
    hits = metric(app, "updown_read_cache_reads_total", unit=units[0].name, cache="HIT")
    assert download(app, path).content == data
    assert download(app, path).content == data
    lines = object_lines(units[0], seen)
    assert [e["cache"] for e in lines] == ["MISS", "HIT"], lines
    assert all(e["client"] == "127.0.0.1" and e["status"] == "206" for e in lines)
    assert metric(app, "updown_read_cache_reads_total", unit=units[0].name, cache="HIT") == hits + 1
    # the TempURL's signature never reaches a log
    assert "temp_url_sig" not in units[0].layout.nginx_access_log.read_text()
    assert "temp_url_sig" not in app.log()


def test_the_digest_read_back_of_an_upload_goes_to_the_store_not_the_unit(app, units, tmp_path) -> None:
    """SHA-1/SHA-512 are computed from the stored object after the upload answered; that read must not fill the
    backend cache with a file nobody may download yet."""
    seen = len(units[0].access())
    data = secrets.token_bytes(2 * MiB + 7)
    f = tmp_path / "pending.bin"
    f.write_bytes(data)
    with app.client(KEY_ID) as client:
        record = client.upload(f, package="bc" + secrets.token_hex(4), revision="1", visibility="public")
        deadline = time.monotonic() + 30
        while client.info(record["id"])["sha512"] is None:
            assert time.monotonic() < deadline, "SHA-512 never completed"
            time.sleep(0.1)
        assert client.info(record["id"])["sha512"] == hashlib.sha512(data).hexdigest()
    assert object_lines(units[0], seen) == []


def test_a_range_in_a_large_object_fetches_only_its_slices(app, units, tls_store, tmp_path) -> None:
    path, data = publish(app, tmp_path, 64 * MiB)
    mark = tls_store.mark()
    start, end = 30 * MiB + 123, 31 * MiB  # inside the fourth slice (24-32 MiB)
    response = download(app, path, {"Range": f"bytes={start}-{end}"})
    assert response.status_code == 206 and response.content == data[start : end + 1]
    fetched = tls_store.requests(mark)
    assert [r["range"] for r in fetched] == [f"bytes={3 * SLICE}-{4 * SLICE - 1}"], fetched
    assert sum(int(r["bytes"]) for r in fetched) < SLICE + 64 * 1024  # one slice, not 64 MiB

    # a range over a slice boundary: the slice already cached is a hit, only the next one is fetched
    mark = tls_store.mark()
    start, end = 31 * MiB, 33 * MiB
    assert download(app, path, {"Range": f"bytes={start}-{end}"}).content == data[start : end + 1]
    assert [r["range"] for r in tls_store.requests(mark)] == [f"bytes={4 * SLICE}-{5 * SLICE - 1}"]

    # the whole object, byte-exact, through the cache
    assert download(app, path).content == data


def test_two_tempurls_of_an_object_share_one_cache_entry(units, tls_store) -> None:
    unit = units[0]
    key = f"direct/{secrets.token_hex(6)}"
    data = secrets.token_bytes(2 * MiB + 7)

    async def presign() -> tuple[str, str]:
        storage = SwiftStorage(swift_settings())
        try:
            await storage.put(key, once(data), size=len(data), md5=hashlib.md5(data).hexdigest())
            return await storage.presigned_url(key, 600) or "", await storage.presigned_url(key, 1200) or ""
        finally:
            await storage.close()

    first, second = asyncio.run(presign())
    assert first != second and "temp_url_sig=" in first
    mark = tls_store.mark()
    answers = []
    for url in (first, second):
        parts = urlsplit(url)
        r = httpx.get(f"{unit.url}{parts.path}?{parts.query}", timeout=30)
        assert r.status_code == 200 and r.content == data
        answers.append((r.headers["x-cache"], r.headers["x-cache-unit"]))
    assert answers == [("MISS", unit.name), ("HIT", unit.name)]
    assert len(tls_store.requests(mark)) == 1  # the store was read once

    # a signature the store refuses is not cached under the object's key either way: 401 passes through
    bad = urlsplit(first.replace("temp_url_sig=", "temp_url_sig=0", 1))
    other = f"/v1/{bad.path.split('/v1/', 1)[1].rsplit('/', 1)[0]}/{secrets.token_hex(4)}"
    r = httpx.get(f"{unit.url}{other}?{bad.query}", timeout=30)
    assert r.status_code == 401 and r.headers["x-cache"] == "MISS"


def test_other_addresses_are_refused(units) -> None:
    unit = units[0]
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as other:
        r = other.get(f"{unit.url}/v1/AUTH_test/{CONTAINER}/anything?temp_url_sig=x&temp_url_expires=1")
        assert r.status_code == 403
        assert other.get(f"{unit.url}{workload.CACHE_HEALTH_PATH}").status_code == 200  # health is open
    # and only GET/HEAD, even from an allowed address
    assert httpx.put(f"{unit.url}/v1/AUTH_test/{CONTAINER}/x", content=b"x", timeout=10).status_code == 405


def test_two_units_the_choice_is_stable_per_key_and_spread(app_two, units, tmp_path) -> None:
    files = [publish(app_two, tmp_path, 4096 + i) for i in range(12)]
    seen = [len(u.access()) for u in units]
    for _ in range(2):
        for path, data in files:
            assert download(app_two, path).content == data
    served: dict[str, set[str]] = {}
    for unit, since in zip(units, seen, strict=True):
        for entry in object_lines(unit, since):
            served.setdefault(entry["path"], set()).add(unit.name)
    assert len(served) == len(files)
    assert all(len(names) == 1 for names in served.values()), served  # each object always on the same unit
    per_unit = {u.name: sum(1 for names in served.values() if u.name in names) for u in units}
    assert all(n > 0 for n in per_unit.values()), per_unit
    # and it is the unit any app unit would choose (the same hash ring over the same unit names)
    ring = ReadCacheStorage(SwiftStorage(swift_settings()), {u.name: u.url for u in units})
    for path, names in served.items():
        key = path.split(f"/{CONTAINER}/", 1)[1]
        assert {ring.unit_for(key)} == names


def test_a_unit_down_the_app_reads_the_store_directly(app_two, units, tmp_path) -> None:
    files = [publish(app_two, tmp_path, 10000 + i) for i in range(8)]
    for path, data in files:  # warm both units
        assert download(app_two, path).content == data
    down = units[1]
    before = metric(app_two, "updown_read_cache_fallbacks_total", unit=down.name, reason="unreachable")
    down.stop()
    try:
        for path, data in files:
            assert download(app_two, path).content == data
    finally:
        down.start()
    fallbacks = metric(app_two, "updown_read_cache_fallbacks_total", unit=down.name, reason="unreachable")
    assert fallbacks > before  # some of the 8 keys belong to the stopped unit
    assert "backend cache unit failed, reading the store directly" in app_two.log()
    assert "temp_url_sig" not in app_two.log()


def test_a_unit_dying_mid_download_the_rest_comes_from_the_store(app, units, tmp_path) -> None:
    path, data = publish(app, tmp_path, 48 * MiB)
    unit = units[0]
    before = metric(app, "updown_read_cache_fallbacks_total", unit=unit.name, reason="broken")
    got = bytearray()
    try:
        with app.http(host="localhost") as http, http.stream("GET", path) as response:
            chunks = response.iter_bytes()
            while len(got) < 2 * MiB:
                got += next(chunks)
            unit.stop()  # fast shutdown: the unit closes the app's connection mid-body
            for chunk in chunks:
                got += chunk
    finally:
        if unit.proc is None:
            unit.start()
    assert len(got) == len(data) and bytes(got) == data
    assert metric(app, "updown_read_cache_fallbacks_total", unit=unit.name, reason="broken") == before + 1
