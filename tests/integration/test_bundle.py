"""bundle.yaml on a real controller: deploy, upload/publish/download through the frontend caches, unpublish
purges, scale, and a refresh with a canary (pause, resume-refresh, rollback). Skipped without a controller
(conftest.py). Run with `tox -e integration`; the tests of this module run in order on one model.

Environment:
  UPDOWN_APP_CHARM, UPDOWN_CACHE_CHARM   packed charms (default: the paths bundle.yaml names)
  UPDOWN_NEXT_APP_CHARM                  updown-app packed with another release (UPDOWN_RELEASE=<version>
                                         charms/updown-app/pack.sh), for the refresh test (skipped without)
  UPDOWN_IT_S3_ENDPOINT, UPDOWN_IT_S3_BUCKET, UPDOWN_IT_S3_REGION, UPDOWN_IT_S3_ACCESS_KEY_ID,
  UPDOWN_IT_S3_SECRET_ACCESS_KEY         an S3 store (its bucket made): the bundle as it is, s3-integrator
                                         configured and given the keys by sync-s3-credentials, two app units and
                                         the backend caches. Without it: the bundle's test overlay
                                         (bundle-test-overlay.yaml: one app unit on local storage, no
                                         s3-integrator, no backend cache tier).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.conftest import REPO, charm_path

PUBLIC = "updown.example.com"
KEY_ID = "store-it"
KEY = secrets.token_urlsafe(32)
S3 = {k: os.environ.get(f"UPDOWN_IT_S3_{k}", "") for k in ("ENDPOINT", "BUCKET", "REGION")}
S3_KEYS = {k: os.environ.get(f"UPDOWN_IT_S3_{k}", "") for k in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")}
WITH_S3 = bool(S3["ENDPOINT"] and S3_KEYS["ACCESS_KEY_ID"])
APPS = ["postgresql", "updown-app", "cache-frontend", "self-signed-certificates"] + (
    ["cache-backend", "s3-integrator"] if WITH_S3 else []
)
STATE: dict[str, Any] = {}


TEST_OVERLAY = REPO / "bundle-test-overlay.yaml"


def bundle(tmp: Path) -> tuple[Path, list[Path]]:
    """bundle.yaml with the packed charms' paths, and the overlays to deploy it with: none with the S3 store of
    the environment (configured as bundle.yaml's header says), else the bundle's test overlay (local storage on
    one app unit, no s3-integrator, no backend cache tier)."""
    spec = yaml.safe_load((REPO / "bundle.yaml").read_text())
    apps = spec["applications"]
    app_charm = charm_path("UPDOWN_APP_CHARM", REPO / apps["updown-app"]["charm"])
    cache_charm = charm_path("UPDOWN_CACHE_CHARM", REPO / apps["cache-frontend"]["charm"])
    apps["updown-app"]["charm"] = str(app_charm)
    apps["cache-frontend"]["charm"] = apps["cache-backend"]["charm"] = str(cache_charm)
    if not WITH_S3:
        path = tmp / "bundle.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path, [TEST_OVERLAY]
    integrator = {"endpoint": S3["ENDPOINT"], "bucket": S3["BUCKET"] or "updown-it", "region": S3["REGION"]}
    apps["s3-integrator"]["options"] = {k: v for k, v in integrator.items() if v}
    # cache-backend takes the store (upstream-url, the CA) from updown-app on backend-cache
    path = tmp / "bundle.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, []


def frontend_addresses(juju: Any) -> list[str]:
    units = juju.status().apps["cache-frontend"].units
    return [u.public_address for _, u in sorted(units.items())]


def https(address: str) -> httpx.Client:
    # self-signed-certificates' CA is not ours to trust here; the certificate is checked by the cache charm tests
    return httpx.Client(base_url=f"https://{address}", verify=False, headers={"host": PUBLIC}, timeout=60)


def test_deploy_the_bundle(juju: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, overlays = bundle(Path(tmp))
        juju.deploy(path, overlays=overlays)
    hmac = juju.add_secret("updown-hmac", {KEY_ID: KEY})
    juju.grant_secret(hmac, "updown-app")
    config = {"hmac-keys": str(hmac)}
    juju.config("updown-app", config)
    if WITH_S3:  # the one step bundle.yaml's header gives for the keys
        keys = {"access-key": S3_KEYS["ACCESS_KEY_ID"], "secret-key": S3_KEYS["SECRET_ACCESS_KEY"]}
        juju.run("s3-integrator/leader", "sync-s3-credentials", keys)
    import jubilant

    status = juju.wait(lambda s: jubilant.all_active(s, *APPS), error=jubilant.any_error)
    assert status.apps["updown-app"].app_status.message.endswith("units")


def test_upload_publish_download_through_the_frontend(juju: Any, tmp_path: Path) -> None:
    from updown_app.client import UpdownClient

    payload = tmp_path / "hello.snap"
    payload.write_bytes(os.urandom(256 * 1024))
    first = frontend_addresses(juju)[0]
    # signed API calls go through the frontend straight to the app units (never cached)
    with UpdownClient(f"https://{first}", key_id=KEY_ID, secret=KEY.encode(), verify=False) as client:
        record = client.upload(payload, package="hello", revision="1")
        client.publish(record["id"])
    STATE.update(file_id=record["id"], body=payload.read_bytes())
    with https(first) as web:
        r = web.get("/hello/1/hello.snap")
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == record["sha256"]
        again = web.get("/hello/1/hello.snap")
        assert again.headers.get("x-cache") == "HIT"
        part = web.get("/hello/1/hello.snap", headers={"range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == STATE["body"][100:200]
    with httpx.Client(verify=False, timeout=30) as plain:
        r = plain.get(f"http://{first}/hello/1/hello.snap", headers={"host": PUBLIC})
        assert r.status_code == 308 and r.headers["location"].startswith("https://")


def test_scale_the_tiers(juju: Any) -> None:
    import jubilant

    juju.add_unit("cache-frontend")
    if WITH_S3:
        juju.add_unit("updown-app")  # more app units need a shared object store
    juju.wait(lambda s: jubilant.all_active(s, *APPS), error=jubilant.any_error)
    addresses = frontend_addresses(juju)
    assert len(addresses) == 3
    owners = set()
    for address in addresses:  # any frontend unit answers; each file is cached on one unit whichever is entered
        with https(address) as web:
            r = web.get("/hello/1/hello.snap")
            assert r.status_code == 200 and r.content == STATE["body"]
            owners.add(r.headers.get("x-cache-unit"))
    assert len(owners) == 1


def test_refresh_with_a_canary(juju: Any) -> None:
    import jubilant

    next_charm = os.environ.get("UPDOWN_NEXT_APP_CHARM")
    if not next_charm:
        pytest.skip("set UPDOWN_NEXT_APP_CHARM to updown-app packed with another release (UPDOWN_RELEASE=...)")
    units = sorted(juju.status().apps["updown-app"].units)
    before = juju.status().apps["updown-app"].app_status.message.split()[0]
    juju.refresh("updown-app", path=next_charm)
    if len(units) > 1:
        status = juju.wait(
            lambda s: "paused after" in s.apps["updown-app"].app_status.message, error=jubilant.any_error
        )
        message = status.apps["updown-app"].app_status.message
        canary = max(units, key=lambda u: int(u.rsplit("/", 1)[1]))
        assert f"paused after {canary}" in message and "resume-refresh" in message and "rollback" in message
        running = {u: s.workload_status.message for u, s in status.apps["updown-app"].units.items()}
        assert running[canary] != f"running {before}"
        assert sum(1 for m in running.values() if m == f"running {before}") == len(units) - 1
        with https(frontend_addresses(juju)[0]) as web:  # still serving during the pause
            assert web.get("/hello/1/hello.snap").status_code == 200
        juju.run(f"{units[0].split('/')[0]}/leader", "resume-refresh")
    status = juju.wait(
        lambda s: jubilant.all_active(s, *APPS) and not s.apps["updown-app"].app_status.message.startswith(before),
        error=jubilant.any_error,
    )
    after = status.apps["updown-app"].app_status.message.split()[0]
    assert after != before

    # back to the previous release, installed side by side, without a new charm
    task = juju.run("updown-app/leader", "rollback")
    assert task.status == "completed"
    status = juju.wait(
        lambda s: jubilant.all_active(s, *APPS) and s.apps["updown-app"].app_status.message.startswith(before),
        error=jubilant.any_error,
    )
    with https(frontend_addresses(juju)[0]) as web:
        assert web.get("/hello/1/hello.snap").status_code == 200


def test_unpublish_action_takes_the_file_down_everywhere(juju: Any) -> None:
    task = juju.run("updown-app/leader", "unpublish", {"id": STATE["file_id"]})
    assert task.status == "completed" and "unpublished" in task.results["result"]
    deadline = time.monotonic() + 30
    for address in frontend_addresses(juju):
        with https(address) as web:
            while (code := web.get("/hello/1/hello.snap").status_code) != 404 and time.monotonic() < deadline:
                time.sleep(1)  # the app bans the URL on every frontend unit before it answers; allow a retry
            assert code == 404


def test_show_config_redacts(juju: Any) -> None:
    task = juju.run("updown-app/leader", "show-config")
    assert KEY not in str(task.results) and KEY_ID in task.results["hmac-key-ids"]
