"""Swift (native API) and Keystone behind a private CA: `storage.swift.verify_tls` names the CA file, and the real
Swift behind HAProxy's TLS (tests/support/tls_front.py) stores, reads and deletes with it, with no SSL_CERT_FILE
or SSL_CERT_DIR in the environment; without it the store is unavailable, saying the certificate failed, at once.
The updown-app charm's `storage-ca` option renders the settings that do so."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from ops import testing

from tests.charms import test_app_charm as app_tests
from tests.conftest import need_service
from tests.support.server import KEY_ID, make_server
from tests.support.swift import (
    KEYSTONE_PASSWORD,
    KEYSTONE_PROJECT,
    KEYSTONE_URL,
    KEYSTONE_USER,
    SWIFT_KEY,
    SWIFT_USER,
    swift_env,
)
from tests.support.tls_front import tls_front
from updown_app.client import UpdownClient, UpdownError
from updown_app.settings import Settings, SwiftStorageSettings
from updown_app.storage import create_storage
from updown_app.storage.base import Storage, StorageError, StorageUnavailableError
from updown_app.storage.swift import SwiftStorage

ctx, host = app_tests.ctx, app_tests.host  # the charm's fixtures: a Context, and the unit's files under tmp_path


@pytest.fixture(autouse=True)
def no_ca_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CA reaches the clients through verify_tls alone (the local stack trusts it through SSL_CERT_FILE)."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ca_file(tls_swift: tuple[str, str], tmp_path: Path) -> Path:
    path = tmp_path / "store-ca.pem"
    path.write_text(tls_swift[1] + "\n")
    return path


def tempauth(url: str, **overrides: Any) -> SwiftStorageSettings:
    """Swift's tempauth through the TLS front; its storage URL too (tempauth answers Swift's own, plain one)."""
    values: dict[str, Any] = {
        "auth": "tempauth",
        "auth_url": f"{url}/auth/v1.0",
        "storage_url": f"{url}/v1/AUTH_test",
        "username": SWIFT_USER,
        "password": SWIFT_KEY,
        "container": f"private-ca-{uuid.uuid4().hex[:8]}",
        "retry_backoff": 0.05,
    }
    return SwiftStorageSettings(**{**values, **overrides})


async def once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def round_trip(storage: Storage) -> None:
    """check, put, head, get (whole and a range), delete: what serving files needs from the store."""
    try:
        await storage.check()
        data = uuid.uuid4().bytes * 4096
        await storage.put("ca/file.bin", once(data), size=len(data), md5=hashlib.md5(data).hexdigest())
        info = await storage.head("ca/file.bin")
        assert info is not None and info.size == len(data)
        assert b"".join([c async for c in storage.get("ca/file.bin")]) == data
        assert b"".join([c async for c in storage.get("ca/file.bin", offset=7, length=9)]) == data[7:16]
        assert await storage.delete("ca/file.bin")
        assert await storage.head("ca/file.bin") is None
    finally:
        await storage.close()


async def test_swift_trusts_the_ca_file_it_is_given(tls_swift: tuple[str, str], ca_file: Path) -> None:
    url, _ca = tls_swift
    await round_trip(SwiftStorage(tempauth(url, verify_tls=str(ca_file))))


async def test_without_the_ca_swift_is_unavailable_saying_why(tls_swift: tuple[str, str]) -> None:
    """The system's CAs do not know the private CA: every call is StorageUnavailableError (the HTTP layer's 503)
    naming the certificate failure, within the retry budget, never a hang."""
    url, _ca = tls_swift
    storage = SwiftStorage(tempauth(url))
    try:
        for call in (storage.check(), storage.head("ca/file.bin")):
            started = time.monotonic()
            with pytest.raises(StorageUnavailableError) as refused:
                await call
            assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
            assert time.monotonic() - started < 10
    finally:
        await storage.close()


def test_a_missing_ca_file_fails_at_once(tmp_path: Path) -> None:
    """A CA path that names nothing is a configuration error when the storage is made (at start-up)."""
    with pytest.raises(StorageError, match="swift verify_tls: cannot load the CA bundle"):
        SwiftStorage(tempauth("https://localhost:1", verify_tls=str(tmp_path / "absent.pem")))


@pytest.fixture(scope="module")
def tls_keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(Keystone's v3 URL over TLS, its CA's PEM); the object-store endpoint of its catalog stays plain."""
    url = need_service("Keystone", KEYSTONE_URL)
    origin, _, path = url.partition("/v3")
    with tls_front(tmp_path_factory.mktemp("tls-keystone"), origin, probe="/v3") as front:
        yield f"{front.urls[0]}/v3{path}", front.ca


@pytest.mark.parametrize("trusted", [True, False])
async def test_keystone_is_verified_with_the_same_ca(
    tls_keystone: tuple[str, str], tmp_path: Path, trusted: bool
) -> None:
    """Keystone usually sits behind the same private CA: the keystoneauth session verifies with verify_tls too."""
    url, ca = tls_keystone
    (tmp_path / "ca.pem").write_text(ca + "\n")
    settings = SwiftStorageSettings(
        auth="keystone",
        auth_url=url,
        username=KEYSTONE_USER,
        password=KEYSTONE_PASSWORD,  # type: ignore[arg-type]
        project_name=KEYSTONE_PROJECT,
        region_name="RegionOne",
        container=f"private-ca-ks-{uuid.uuid4().hex[:8]}",
        retry_backoff=0.05,
        verify_tls=str(tmp_path / "ca.pem") if trusted else True,
    )
    storage = SwiftStorage(settings)
    if trusted:
        await round_trip(storage)
        return
    try:
        with pytest.raises(StorageUnavailableError) as refused:
            await storage.check()
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    finally:
        await storage.close()


async def test_the_charms_storage_ca_renders_settings_that_reach_swift(
    ctx: Any, host: Any, tls_swift: tuple[str, str]
) -> None:
    """`juju config updown-app storage-ca="$(cat ca.pem)"` on a Swift deployment: the settings the unit renders
    give a storage that works against the real Swift behind the private CA."""
    url, ca = tls_swift
    storage_credentials = testing.Secret(tracked_content={"password": SWIFT_KEY})
    config = {
        "storage-backend": "swift",
        "swift-auth": "tempauth",
        "swift-auth-url": f"{url}/auth/v1.0",
        "swift-storage-url": f"{url}/v1/AUTH_test",
        "swift-username": SWIFT_USER,
        "swift-container": f"private-ca-charm-{uuid.uuid4().hex[:8]}",
        "storage-ca": ca,
        "storage-credentials": storage_credentials.id,
    }
    state = app_tests.ready(**config)
    state = dataclasses.replace(state, secrets=[*state.secrets, storage_credentials])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.ActiveStatus(f"running {app_tests.RELEASE}")
    await round_trip(create_storage(Settings.load(host.layout.config)))


@pytest.mark.parametrize("trusted", [True, False])
def test_the_service_serves_from_swift_behind_the_private_ca(
    tls_swift: tuple[str, str], ca_file: Path, tmp_path: Path, trusted: bool
) -> None:
    """`updown serve` with storage.swift.verify_tls (its environment has no SSL_CERT_FILE): ready, an upload is
    stored and downloads. Without it: /readyz and the upload answer 503 at once, never a hang or a 500."""
    url, _ca = tls_swift
    env = swift_env(
        f"private-ca-srv-{uuid.uuid4().hex[:8]}", auth_url=f"{url}/auth/v1.0", storage_url=f"{url}/v1/AUTH_test"
    )
    if trusted:
        env["UPDOWN_STORAGE__SWIFT__VERIFY_TLS"] = str(ca_file)
    srv = make_server(tmp_path / "srv", tls=False, extra_env=env).start(ready=trusted)
    data = uuid.uuid4().bytes * 1000
    (tmp_path / "file.bin").write_bytes(data)
    try:
        client = UpdownClient(srv.base_url, key_id=KEY_ID, secret=srv.keys[KEY_ID].encode(), verify=False, retries=0)
        with srv.http(host="localhost") as http, client:
            if not trusted:
                started = time.monotonic()
                ready = http.get("/readyz")
                assert ready.status_code == 503 and ready.json()["checks"]["storage"] == "failed"
                with pytest.raises(UpdownError) as refused:
                    client.upload(tmp_path / "file.bin", package="ca", revision="1")
                assert (refused.value.status, refused.value.code) == (503, "storage_unavailable")
                assert time.monotonic() - started < 10
                assert "CERTIFICATE_VERIFY_FAILED" in srv.log()  # the operator's log says why
                return
            client.publish(client.upload(tmp_path / "file.bin", package="ca", revision="1")["id"])
            got = http.get("/ca/1/file.bin")
            assert got.status_code == 200 and got.content == data
    finally:
        srv.stop()
