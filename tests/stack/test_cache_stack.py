"""Real clients through the whole local stack (scripts/stack.sh): two frontend units (HAProxy + Varnish, configs
rendered by charms/cache's workload code) in front of two `updown serve` app units on PostgreSQL and Swift.

The tests that change the stack (a unit joining and leaving, the app units frozen) come last in this module."""

from __future__ import annotations

import collections
import hashlib
import os
import secrets
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import need_service
from tests.stack.apt_repo import AptClient, build_deb, index_files
from tests.support import apt_method
from tests.support.apt_method import MethodApt
from tests.support.fake_sso import FakeSso, FakeStore
from updown_app.client import UpdownClient

method_deb = apt_method.method_deb  # the .deb of the apt method, built once for the module

MiB = 1024 * 1024
URLS = 300


@pytest.fixture(scope="module")
def stack() -> dict[str, str]:
    need_service("the local stack (scripts/stack.sh)", os.environ.get("UPDOWN_TEST_STACK_FRONTENDS"))
    return {
        k.removeprefix("UPDOWN_TEST_STACK_"): v for k, v in os.environ.items() if k.startswith("UPDOWN_TEST_STACK_")
    }


@pytest.fixture(scope="module")
def frontends(stack: dict[str, str]) -> list[str]:
    return stack["FRONTENDS"].split(",")


@pytest.fixture(scope="module")
def caches(stack: dict[str, str]) -> dict[str, str]:
    """Unit name -> its Varnish (http://address:port)."""
    return dict(item.split("=", 1) for item in stack["CACHES"].split(","))


@pytest.fixture(scope="module")
def http(stack: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(verify=ssl.create_default_context(cafile=stack["CA"]), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def client(stack: dict[str, str], frontends: list[str]) -> Iterator[UpdownClient]:
    """The store's client, through the first frontend (the API is never cached)."""
    with UpdownClient(frontends[0], key_id=stack["KEY_ID"], secret=stack["KEY"].encode(), verify=stack["CA"]) as c:
        yield c


def publish_files(client: UpdownClient, directory: Path, count: int, size: int = 2048, **kw: str) -> list[str]:
    package = "stack" + secrets.token_hex(4)
    paths = []
    for i in range(count):
        f = directory / f"f{i}.deb"
        f.write_bytes(secrets.token_bytes(size + i))
        record = client.upload(f, package=package, revision="1", visibility=kw.get("visibility", "public"))
        client.publish(record["id"])
        paths.append(record["path"])
    return paths


@pytest.fixture(scope="module")
def published(client: UpdownClient, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return publish_files(client, tmp_path_factory.mktemp("stack-files"), URLS)


def owners(http: httpx.Client, frontend: str, paths: list[str]) -> dict[str, str]:
    """Which unit serves each path when entering through `frontend`."""
    found = {}
    for path in paths:
        r = http.get(frontend + path)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        found[path] = r.headers["X-Cache-Unit"]
    return found


def test_each_url_is_cached_on_one_unit_whichever_frontend(http, frontends, published) -> None:
    seen: dict[str, set[str]] = collections.defaultdict(set)
    statuses: collections.Counter[str] = collections.Counter()
    for frontend in [*frontends, *reversed(frontends)]:
        for path in published:
            r = http.get(frontend + path)
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
            seen[path].add(r.headers["X-Cache-Unit"])
            statuses[r.headers["X-Cache"]] += 1
    assert all(len(units) == 1 for units in seen.values()), {p: u for p, u in seen.items() if len(u) > 1}
    # one miss per URL (its owner fetched it once from an app unit), every other request a hit
    assert statuses == {"MISS": URLS, "HIT": 3 * URLS}
    share = collections.Counter(units.pop() for units in seen.values())
    assert set(share) == {"updown-cache/0", "updown-cache/1"} and min(share.values()) >= URLS // 5, share


def test_range_and_conditional_requests_on_a_cached_file(http, frontends, published) -> None:
    path = published[0]
    full = http.get(frontends[0] + path)
    r = http.get(frontends[1] + path, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.headers["X-Cache"] == "HIT"
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(full.content)}" and r.content == full.content[100:200]
    r = http.get(frontends[1] + path, headers={"If-None-Match": full.headers["ETag"]})
    assert r.status_code == 304 and r.headers["X-Cache"] == "HIT"


def test_https_only_hsts_and_the_test_ca(http, stack, frontends) -> None:
    plain = stack["HTTP"].split(",")[0]
    r = http.get(plain + "/some/1/file.deb?x=1")
    assert r.status_code == 308 and r.headers["Location"] == frontends[0] + "/some/1/file.deb?x=1"
    r = http.get(frontends[1] + "/some/1/missing.deb")
    assert r.status_code == 404 and r.headers["Strict-Transport-Security"] == "max-age=63072000"
    assert r.json()["error"]["code"]
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(frontends[0] + "/healthz")  # the system trust store does not know the throwaway CA


def test_dot_segments_are_one_url_and_dotdot_is_refused(http, stack, frontends, published) -> None:
    """apt asks for "/repo/./Packages": one object, one owner, whatever dot segments or doubled slashes."""
    package, revision, filename = published[5].strip("/").split("/")
    plain = http.get(frontends[0] + published[5])

    def curl(url: str) -> tuple[str, bytes]:
        out = subprocess.run(
            ["curl", "-sS", "--http1.1", "--path-as-is", "--cacert", stack["CA"], "-D", "-", url],
            capture_output=True,
            check=True,
        ).stdout
        head, _, body = out.partition(b"\r\n\r\n")
        return head.decode("latin-1").lower(), body

    head, body = curl(f"{frontends[1]}/{package}/./{revision}//./{filename}")
    assert head.startswith("http/1.1 200") and body == plain.content and "x-cache: hit" in head
    head, body = curl(f"{frontends[0]}/{package}/{revision}/../{filename}")
    assert head.startswith("http/1.1 400") and b"invalid_path" in body


def test_purge_only_from_the_app_units(http, caches, frontends, published) -> None:
    """PURGE from an app unit's address (127.0.0.1 here) drops the object; from any other address it is refused."""
    path = published[1]
    owner = http.get(frontends[0] + path).headers["X-Cache-Unit"]
    assert http.get(frontends[1] + path).headers["X-Cache"] == "HIT"
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as stranger:
        assert stranger.request("PURGE", caches[owner] + path, headers={"Host": "localhost"}).status_code == 405
        ban = {"Host": "localhost", "X-Ban-Url": "^/"}
        assert stranger.request("BAN", caches[owner] + "/", headers=ban).status_code == 405
    assert http.get(frontends[1] + path).headers["X-Cache"] == "HIT"
    assert httpx.request("PURGE", caches[owner] + path, headers={"Host": "localhost"}).status_code == 200
    assert http.get(frontends[1] + path).headers["X-Cache"] == "MISS"


def test_unpublish_is_404_through_every_unit_within_a_second(http, client, frontends, tmp_path) -> None:
    f = tmp_path / "gone.snap"
    f.write_bytes(secrets.token_bytes(10_000))
    record = client.upload(f, package="takedown" + secrets.token_hex(3), revision="1", visibility="public")
    client.publish(record["id"])
    for frontend in frontends:
        http.get(frontends[0] + record["path"])
        assert http.get(frontend + record["path"]).headers["X-Cache"] == "HIT"
    client.unpublish(record["id"])
    done = time.monotonic()
    for frontend in frontends:
        r = http.get(frontend + record["path"])
        assert r.status_code == 404, (frontend, r.status_code, r.headers.get("X-Cache"))
    assert time.monotonic() - done < 1.0
    time.sleep(1.2)  # the second purge round (after the app's lookup-cache TTL) must not bring it back either
    assert all(http.get(frontend + record["path"]).status_code == 404 for frontend in frontends)


def read_cache_reads(stack: dict[str, str], status: str) -> float:
    """Object reads the app units made through the backend unit, by its X-Cache status (summed over units)."""
    total = 0.0
    for app in stack["APPS"].split(","):
        text = httpx.get(app + "/metrics").text
        for line in text.splitlines():
            if line.startswith("updown_read_cache_reads_total{") and f'cache="{status}"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_app_units_read_the_store_through_the_backend_unit(http, stack, caches, client, frontends, tmp_path) -> None:
    """A frontend miss reaches an app unit, which reads the object through the backend unit (nginx, sliced,
    Swift over HTTPS behind it); the second time the backend unit has it."""
    f = tmp_path / "through.bin"
    data = secrets.token_bytes(3 * MiB + 5)
    f.write_bytes(data)
    record = client.upload(f, package="backend" + secrets.token_hex(3), revision="1", visibility="public")
    client.publish(record["id"])
    misses, hits = read_cache_reads(stack, "MISS"), read_cache_reads(stack, "HIT")
    r = http.get(frontends[0] + record["path"])
    assert r.status_code == 200 and r.content == data and r.headers["X-Cache"] == "MISS"
    assert read_cache_reads(stack, "MISS") > misses
    owner = r.headers["X-Cache-Unit"]
    assert httpx.request("PURGE", caches[owner] + record["path"], headers={"Host": "localhost"}).status_code == 200
    r = http.get(frontends[1] + record["path"], headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == data[1000:2000]
    assert read_cache_reads(stack, "HIT") > hits
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as stranger:
        assert stranger.get(stack["BACKEND"] + "/v1/AUTH_test/anything").status_code == 403  # app units only


@pytest.fixture(scope="module")
def sso_and_store(stack: dict[str, str]) -> Iterator[tuple[FakeSso, FakeStore]]:
    """The deployer's SSO and store, played by small real servers on the ports the app units were given."""
    client_id, client_secret = stack["SSO_CLIENT"].split(":", 1)
    sso = FakeSso(client_id, client_secret)
    sso.port = int(stack["SSO_PORT"])
    store = FakeStore({stack["KEY_ID"]: stack["KEY"].encode()})
    store.port = int(stack["STORE_PORT"])
    sso.start()
    store.start()
    yield sso, store
    sso.stop()
    store.stop()


def varnish_lookups(stack: dict[str, str], unit: int) -> int:
    """Client requests a unit's Varnish looked up or passed (its own health answers are neither)."""
    counters = ["MAIN.cache_hit", "MAIN.cache_miss", "MAIN.s_pass", "MAIN.s_pipe"]
    out = subprocess.run(
        ["varnishstat", "-n", f"{stack['RUN']}/unit{unit}/varnish", "-1", *(a for c in counters for a in ("-f", c))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[1]) for line in out.splitlines())


def test_private_files_never_reach_a_cache(http, stack, client, frontends, sso_and_store, tmp_path) -> None:
    sso, store = sso_and_store
    f = tmp_path / "paid.snap"
    data = secrets.token_bytes(50_000)
    f.write_bytes(data)
    package = "paid" + secrets.token_hex(3)
    record = client.upload(f, package=package, revision="1", visibility="private")
    client.publish(record["id"])
    token = sso.issue(secrets.token_urlsafe(24), "alice")
    store.grants.add(("alice", package))
    before = [varnish_lookups(stack, i) for i in range(len(frontends))]
    for frontend in frontends:
        for _ in range(2):
            r = http.get(
                frontend + record["path"], headers={"Host": "private.localhost", "Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 200 and r.content == data
            assert "X-Cache" not in r.headers and r.headers["Cache-Control"] == "private, no-store"
        r = http.get(frontend + record["path"], headers={"Host": "private.localhost"})
        assert r.status_code == 401
    assert [varnish_lookups(stack, i) for i in range(len(frontends))] == before  # no Varnish saw any of them
    assert http.get(frontends[0] + record["path"]).status_code == 404  # and the public host does not know it


@pytest.fixture(scope="module")
def big_file(client: UpdownClient, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    directory = tmp_path_factory.mktemp("big")
    f = directory / "big.img"
    digest = hashlib.sha256()
    with f.open("wb") as out:
        for _ in range(100):
            chunk = secrets.token_bytes(MiB)
            digest.update(chunk)
            out.write(chunk)
    record = client.upload(f, package="big" + secrets.token_hex(3), revision="1", visibility="public")
    client.publish(record["id"])
    return f, record["path"], digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_curl_resumes_a_100_mib_download(stack, frontends, big_file, tmp_path) -> None:
    _, path, sha256 = big_file
    out = tmp_path / "big.img"
    curl = ["curl", "-sS", "--fail", "--cacert", stack["CA"], "-o", str(out)]
    subprocess.run([*curl, "--range", f"0-{40 * MiB - 1}", frontends[0] + path], check=True)  # an interrupted one
    assert out.stat().st_size == 40 * MiB
    subprocess.run([*curl, "-C", "-", frontends[1] + path], check=True)  # resumed through the other unit
    assert out.stat().st_size == 100 * MiB and sha256_of(out) == sha256


def test_aria2c_fetches_with_8_parallel_ranges(stack, frontends, big_file, tmp_path) -> None:
    _, path, sha256 = big_file
    result = subprocess.run(
        ["aria2c", "-q", "-x", "8", "-s", "8", "-k", "1M", "--ca-certificate", stack["CA"], "--dir", str(tmp_path),
         "-o", "big.img", "--allow-overwrite=true", "--file-allocation=none",
         "--log", str(tmp_path / "aria2.log"), "--log-level=debug", frontends[0] + path],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert sha256_of(tmp_path / "big.img") == sha256
    log = (tmp_path / "aria2.log").read_bytes()  # it holds the requests and responses it made
    # Parallel ranges, answered 206 (aria2c's first connection may keep its plain GET, and how it splits the rest
    # varies; a server ignoring ranges would answer none).
    assert log.count(b"Range: bytes=") >= 4 and log.count(b"HTTP/1.1 206") >= 4


def test_apt_get_installs_a_deb_over_https_and_revalidates_with_304(stack, client, frontends, tmp_path) -> None:
    deb = build_deb(tmp_path, "updown-hello", "1.0", secrets.token_bytes(5000))
    package = "apt" + secrets.token_hex(3)
    for f in [deb, *index_files(tmp_path, [deb])]:
        record = client.upload(f, package=package, revision="1", visibility="public")
        client.publish(record["id"])
    apt = AptClient(tmp_path / "apt", f"deb [trusted=yes] {frontends[0]}/{package}/1/ ./", stack["CA"])
    first = apt.run("update")
    assert first.returncode == 0 and "Get:" in first.stdout and "Err:" not in first.stdout, first.stdout + first.stderr
    install = apt.run("install", "-y", "--no-install-recommends", "updown-hello")
    assert install.returncode == 0, install.stdout + install.stderr
    assert (apt.root / "usr/share/updown-hello/payload.bin").stat().st_size == 5000
    second = apt.run("-o", "Debug::Acquire::https=true", "update")
    output = second.stdout + second.stderr
    assert second.returncode == 0 and "Hit:" in second.stdout and "Get:" not in second.stdout, output
    assert "HTTP/1.1 304 Not Modified" in output


def test_apt_get_installs_a_private_deb_through_updown_https_and_no_cache_keeps_it(
    stack: dict[str, str],
    client: UpdownClient,
    frontends: list[str],
    sso_and_store: tuple[FakeSso, FakeStore],
    method_deb: Path,
    tmp_path: Path,
) -> None:
    sso, store = sso_and_store
    payload = secrets.token_bytes(5000)
    deb = build_deb(tmp_path, "updown-paid", "1.0", payload)
    package = "paidapt" + secrets.token_hex(3)
    for f in [deb, *index_files(tmp_path, [deb])]:
        record = client.upload(f, package=package, revision="1", visibility="private")
        client.publish(record["id"])
    user = "apt" + secrets.token_hex(3)
    store.grants.add((user, package))
    token = sso.issue(secrets.token_urlsafe(24), user)
    port = frontends[0].rsplit(":", 1)[1]
    source = f"deb [trusted=yes] updown+https://private.localhost:{port}/{package}/1/ ./"
    apt = MethodApt(AptClient(tmp_path / "apt", source, stack["CA"]), method_deb, "private.localhost", token)
    before = [varnish_lookups(stack, i) for i in range(len(frontends))]
    first = apt.run("update")
    assert first.returncode == 0 and "Get:" in first.stdout and "Err:" not in first.stdout, first.stdout + first.stderr
    install = apt.run("install", "-y", "--no-install-recommends", "updown-paid")
    assert install.returncode == 0, install.stdout + install.stderr
    assert (apt.apt.root / "usr/share/updown-paid/payload.bin").read_bytes() == payload
    second = apt.run("-o", "Debug::pkgAcquire::Worker=1", "update")
    assert second.returncode == 0 and "Hit:" in second.stdout and "Get:" not in second.stdout, second.stderr
    assert "IMS-Hit:%20true" in second.stderr  # the app's 304, through HAProxy, not a cache's
    assert [varnish_lookups(stack, i) for i in range(len(frontends))] == before  # no Varnish saw any of them


# -- tests that change the stack: last ---------------------------------------------------------------------------


def stack_command(stack: dict[str, str], *args: str) -> None:
    env = os.environ | {"UPDOWN_RUN_DIR": str(Path(stack["RUN"]).parent)}  # the stack these tests run against
    subprocess.run([stack["SCRIPT"], *args], check=True, capture_output=True, timeout=120, env=env)


def test_a_unit_joining_moves_only_its_share_and_leaving_moves_only_its_urls(
    http, stack, client, frontends, published, tmp_path
):
    before = owners(http, frontends[0], published)
    stack_command(stack, "add-unit", "2")
    try:
        third = stack["SPARE_FRONTEND"]
        joined = owners(http, frontends[0], published)
        assert owners(http, frontends[1], published) == joined == owners(http, third, published)
        moved = [p for p in published if joined[p] != before[p]]
        assert all(joined[p] == "updown-cache/2" for p in moved)  # URLs move only to the new unit
        assert 0.15 * URLS <= len(moved) <= 0.45 * URLS, len(moved)
        # The app units learnt of the new unit without a restart (caches.units_file): its copy is purged too.
        package = "joined" + secrets.token_hex(3)
        for i in range(30):
            f = tmp_path / f"j{i}.bin"
            f.write_bytes(secrets.token_bytes(1000))
            record = client.upload(f, package=package, revision="1", visibility="public")
            client.publish(record["id"])
            if http.get(third + record["path"]).headers["X-Cache-Unit"] == "updown-cache/2":
                break
        assert http.get(frontends[0] + record["path"]).headers["X-Cache"] == "HIT"
        client.unpublish(record["id"])
        assert [http.get(f + record["path"]).status_code for f in [*frontends, third]] == [404, 404, 404]
    finally:
        stack_command(stack, "remove-unit", "2")
    left = owners(http, frontends[0], published)
    assert left == before == owners(http, frontends[1], published)  # only the leaver's URLs moved (back)


def test_app_units_down_cached_files_still_served_uncached_503(http, stack, caches, frontends, published) -> None:
    """Freezes every app unit (SIGSTOP) and resumes them."""
    cached = published[2]
    assert http.get(frontends[0] + cached).status_code == 200
    pids = [int(pid) for pid in stack["APP_PIDS"].split(",")]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        # Each unit's probes (1 s apart) mark the frozen apps sick within a few seconds. A fresh URL each try: a
        # request sent before that waits on a frozen app, and Varnish queues later ones for that URL behind it.
        # (A query does not make one: it is no part of Varnish's key.)
        deadline = time.monotonic() + 20
        for cache in caches.values():
            for attempt in range(1000):
                try:
                    url = f"{cache}/uncached/1/try-{attempt}.deb"
                    status = httpx.get(url, headers={"Host": "localhost"}, timeout=2).status_code
                except httpx.TimeoutException:
                    status = None
                if status == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert status == 503, cache
        for frontend in frontends:
            r = http.get(frontend + cached)
            assert r.status_code == 200 and r.headers["X-Cache"] == "HIT"
            r = http.get(frontend + "/uncached/1/after.deb", timeout=5)
            assert r.status_code == 503 and r.headers["Retry-After"] and r.json()["error"]["code"] == "unavailable"
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        # The frontends' probes take the apps back within a few seconds: the next test must not meet their 503.
        deadline = time.monotonic() + 30
        for cache in caches.values():
            while time.monotonic() < deadline:
                answer = httpx.get(f"{cache}/uncached/1/back-{time.monotonic()}.deb", headers={"Host": "localhost"})
                if answer.status_code != 503:
                    break
                time.sleep(0.5)
