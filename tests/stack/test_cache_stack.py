"""Real clients through the local caching stack (scripts/stack.sh): HAProxy + Varnish on two frontend "units",
configs rendered by charms/cache's workload code, in front of a real `updown serve`."""

from __future__ import annotations

import collections
import os
import secrets
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import need_service
from updown_app.client import UpdownClient


@pytest.fixture(scope="module")
def stack() -> dict[str, str]:
    need_service("the caching stack (scripts/stack.sh)", os.environ.get("UPDOWN_TEST_STACK_FRONTENDS"))
    return {
        k.removeprefix("UPDOWN_TEST_STACK_"): v for k, v in os.environ.items() if k.startswith("UPDOWN_TEST_STACK_")
    }


@pytest.fixture(scope="module")
def frontends(stack: dict[str, str]) -> list[str]:
    return stack["FRONTENDS"].split(",")


@pytest.fixture(scope="module")
def http(stack: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(verify=ssl.create_default_context(cafile=stack["CA"]), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def published(stack: dict[str, str], frontends: list[str], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """100 small published public files, uploaded through the first frontend (the API is never cached)."""
    package = "stack" + secrets.token_hex(4)
    paths = []
    directory = tmp_path_factory.mktemp("stack-files")
    with UpdownClient(frontends[0], key_id=stack["KEY_ID"], secret=stack["KEY"].encode(), verify=stack["CA"]) as client:
        for i in range(100):
            f = Path(directory, f"f{i}.deb")
            f.write_bytes(secrets.token_bytes(2048 + i))
            record = client.upload(f, package=package, revision="1", visibility="public")
            client.publish(record["id"])
            paths.append(f"/{package}/1/f{i}.deb")
    return paths


def test_each_url_is_cached_on_one_unit_whichever_frontend(http, frontends, published) -> None:
    owners: dict[str, str] = {}
    statuses = collections.Counter()
    for path in published:
        seen = set()
        for frontend in [*frontends, *reversed(frontends)]:
            r = http.get(frontend + path)
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
            seen.add(r.headers["X-Cache-Unit"])
            statuses[r.headers["X-Cache"]] += 1
        assert len(seen) == 1, (path, seen)
        owners[path] = seen.pop()
    # one miss per URL (the owner fetched it once from the app), every other request a hit
    assert statuses == {"MISS": len(published), "HIT": 3 * len(published)}
    share = collections.Counter(owners.values())
    assert set(share) == {"updown-cache/0", "updown-cache/1"}, share
    assert min(share.values()) >= 20, share


def test_range_on_a_cached_file(http, frontends, published) -> None:
    path = published[0]
    full = http.get(frontends[0] + path).content
    r = http.get(frontends[1] + path, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.headers["X-Cache"] == "HIT"
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(full)}" and r.content == full[100:200]


def test_plain_http_redirects_and_hsts(http, stack, frontends) -> None:
    plain = stack["HTTP"].split(",")[0]
    r = http.get(plain + "/some/1/file.deb?x=1")
    assert r.status_code == 308 and r.headers["Location"] == frontends[0] + "/some/1/file.deb?x=1"
    r = http.get(frontends[1] + "/some/1/missing.deb")
    assert r.status_code == 404
    assert r.headers["Strict-Transport-Security"] == "max-age=63072000"


def test_purge_only_from_the_app_units(http, stack, frontends, published) -> None:
    """PURGE from an app unit's address (127.0.0.1 here) drops the object; from any other address it is refused."""
    caches = dict(item.split("=", 1) for item in stack["CACHES"].split(","))
    path = published[1]
    http.get(frontends[0] + path)
    owner = http.get(frontends[0] + path).headers["X-Cache-Unit"]
    assert http.get(frontends[1] + path).headers["X-Cache"] == "HIT"

    stranger = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with stranger:
        r = stranger.request("PURGE", caches[owner] + path, headers={"Host": "localhost"})
        assert r.status_code == 405
        r = stranger.request("BAN", caches[owner] + "/", headers={"Host": "localhost", "X-Ban-Url": "^/"})
        assert r.status_code == 405
    assert http.get(frontends[1] + path).headers["X-Cache"] == "HIT"

    r = httpx.request("PURGE", caches[owner] + path, headers={"Host": "localhost"})
    assert r.status_code == 200
    assert http.get(frontends[1] + path).headers["X-Cache"] == "MISS"
    assert http.get(frontends[0] + path).headers["X-Cache"] == "HIT"


def test_private_host_and_api_never_touch_a_cache(http, frontends) -> None:
    """The private hostname and the API go straight to the app: no cache header, whichever frontend."""
    for frontend in frontends:
        r = http.get(frontend + "/some/1/file.deb", headers={"Host": "private.localhost"})
        assert r.status_code in (401, 404, 503), r.status_code
        assert "X-Cache" not in r.headers and "X-Cache-Unit" not in r.headers
        r = http.get(frontend + "/v1/files/0123")
        assert r.status_code in (401, 403, 404), r.status_code
        assert "X-Cache" not in r.headers


def test_app_down_cached_files_still_served_uncached_503(http, stack, frontends, published) -> None:
    """Last in this module: freezes the app (SIGSTOP) and resumes it."""
    cached = published[2]
    assert http.get(frontends[0] + cached).status_code == 200
    pid = int(stack["APP_PID"])
    os.kill(pid, signal.SIGSTOP)
    try:
        # Each unit's probes (1 s apart) mark the frozen app sick within a few seconds. A fresh URL each try: a
        # request sent before that waits on the frozen app, and Varnish queues later ones for that URL behind it.
        caches = [item.split("=", 1)[1] for item in stack["CACHES"].split(",")]
        deadline = time.monotonic() + 20
        for cache in caches:
            for attempt in range(1000):
                try:
                    url = f"{cache}{published[3]}?try={attempt}"
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
            assert http.get(frontend + published[4] + "?after", timeout=5).status_code == 503
    finally:
        os.kill(pid, signal.SIGCONT)
