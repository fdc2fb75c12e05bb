"""Swift's s3api through s3-integrator: the updown-app charm (ops.testing) gets the relation data the real
s3-integrator writes for this Swift (its endpoint, path URI style and tempauth's s3api keys, `account:user` and
the key), and the settings and environment file it renders give an app storage that really uploads, downloads
and presigns against the real Swift (scripts/services/swift.sh). Behind HAProxy's TLS with a throwaway CA, the
integrator's `tls-ca-chain` is what the app verifies the endpoint with."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops import testing

from tests.charms import s3_integrator_data as integrator
from tests.charms import test_app_charm as app_tests
from tests.conftest import need_service
from tests.support.swift import SWIFT_KEY, SWIFT_URL, SWIFT_USER
from updown_app.settings import Settings
from updown_app.storage import create_storage
from updown_app.storage.base import StorageAuthError, StorageError

ctx, host = app_tests.ctx, app_tests.host  # the charm's fixtures: a Context, and the unit's files under tmp_path


def make_bucket(bucket: str) -> None:
    """What the operator (or 2/edge's integrator) does first: the bucket exists. s3api's bucket is a container."""
    url = need_service("Swift", SWIFT_URL)
    auth = httpx.get(f"{url}/auth/v1.0", headers={"X-Auth-User": SWIFT_USER, "X-Auth-Key": SWIFT_KEY})
    auth.raise_for_status()
    put = httpx.put(f"{auth.headers['X-Storage-Url']}/{bucket}", headers={"X-Auth-Token": auth.headers["X-Auth-Token"]})
    put.raise_for_status()


def use_rendered_environment(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The systemd EnvironmentFile the charm wrote, as the service would see it (and no other AWS source)."""
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            monkeypatch.setenv(name, value.strip('"'))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 64 * 1024):
        yield data[i : i + 64 * 1024]


@pytest.mark.parametrize("track", ["1/stable", "2/edge"])
async def test_the_integrators_data_stores_on_swift_s3api(
    ctx: Any, host: Any, track: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = need_service("Swift", SWIFT_URL)
    bucket = f"integrator-{uuid.uuid4().hex[:8]}"
    make_bucket(bucket)
    opts: dict[str, Any] = {"endpoint": url, "bucket": bucket, "region": "us-east-1", "uri_style": "path"}
    secrets: list[testing.Secret] = []
    if track == "1/stable":
        relation = integrator.stable(SWIFT_USER, SWIFT_KEY, **opts)
    else:
        relation, secret = integrator.edge(SWIFT_USER, SWIFT_KEY, **opts)
        secrets.append(secret)
    state = app_tests.ready(relation)
    state = dataclasses.replace(state, secrets=[*state.secrets, *secrets])
    out = ctx.run(ctx.on.relation_changed(relation), state)
    assert out.unit_status == testing.ActiveStatus(f"running {app_tests.RELEASE}")

    settings = Settings.load(host.layout.config)
    assert settings.storage.backend == "s3"
    use_rendered_environment(host.layout.environment, monkeypatch, tmp_path)
    storage = create_storage(settings)
    try:
        await storage.check()
        data = uuid.uuid4().bytes * 40_000  # 640 KB
        await storage.put("pkg/1/file.bin", chunks(data), size=len(data), md5=hashlib.md5(data).hexdigest())
        got = b"".join([c async for c in storage.get("pkg/1/file.bin")])
        assert got == data
        assert b"".join([c async for c in storage.get("pkg/1/file.bin", offset=100, length=10)]) == data[100:110]
        # the backend caches fetch through presigned URLs: signed with the integrator's keys
        presigned = await storage.presigned_url("pkg/1/file.bin")
        assert presigned is not None
        async with httpx.AsyncClient() as client:
            answer = await client.get(presigned, headers={"Range": "bytes=0-15"})
        assert answer.status_code == 206 and answer.content == data[:16]
        assert await storage.delete("pkg/1/file.bin")
    finally:
        await storage.close()


async def test_wrong_keys_from_the_integrator_are_refused_by_swift(
    ctx: Any, host: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The keys really are the integrator's: with a wrong secret-key the store refuses the app."""
    url = need_service("Swift", SWIFT_URL)
    bucket = f"integrator-{uuid.uuid4().hex[:8]}"
    make_bucket(bucket)
    relation = integrator.stable(SWIFT_USER, "not-the-key", endpoint=url, bucket=bucket, uri_style="path")
    ctx.run(ctx.on.relation_changed(relation), app_tests.ready(relation))
    use_rendered_environment(host.layout.environment, monkeypatch, tmp_path)
    storage = create_storage(Settings.load(host.layout.config))
    try:
        with pytest.raises(StorageAuthError):
            await storage.check()
    finally:
        await storage.close()


@pytest.mark.parametrize("with_chain", [True, False])
async def test_the_integrators_ca_chain_is_what_the_app_trusts(
    ctx: Any, host: Any, tls_swift: tuple[str, str], with_chain: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With tls-ca-chain the app stores over TLS to a private CA's endpoint; without it the same endpoint is
    refused (botocore's own CA bundle does not know that CA)."""
    url, ca = tls_swift
    bucket = f"integrator-tls-{uuid.uuid4().hex[:8]}"
    make_bucket(bucket)
    chain = [ca] if with_chain else None
    relation = integrator.stable(SWIFT_USER, SWIFT_KEY, endpoint=url, bucket=bucket, uri_style="path", ca_chain=chain)
    ctx.run(ctx.on.relation_changed(relation), app_tests.ready(relation))
    use_rendered_environment(host.layout.environment, monkeypatch, tmp_path)
    storage = create_storage(Settings.load(host.layout.config))
    try:
        if not with_chain:
            with pytest.raises(StorageError) as refused:
                await storage.check()
            assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)  # (after the client's retries: ~10 s)
            return
        await storage.check()
        data = uuid.uuid4().bytes * 1000
        await storage.put("tls/file.bin", chunks(data), size=len(data), md5=hashlib.md5(data).hexdigest())
        assert b"".join([c async for c in storage.get("tls/file.bin")]) == data
    finally:
        await storage.close()
