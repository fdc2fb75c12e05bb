"""The rehearsal's world: a bridge and its addresses, the host services on it (apt proxy, PostgreSQL and Swift
forwarded), the model server the hook tools talk to, the stand-in applications, and the driver that deploys
bundle.yaml onto machines. It needs root, systemd-nspawn, debootstrap and apt-cacher-ng (scripts/apt-packages.txt),
the test PostgreSQL and Swift (scripts/test.sh starts them) and the packed charms.

Environment:
  UPDOWN_TEST_CHARMS_DIR     directory with updown-app_amd64.charm and updown-cache_amd64.charm (scripts/test.sh
                             packs them there); default: packed by scripts/pack-charms.sh into the work directory.
                             The second release for the staged refresh (updown-app carrying the service as
                             version <current>.post1) is packed next to the work directory each run, or taken from
                             UPDOWN_DEPLOY_NEXT_APP_CHARM.
  UPDOWN_DEPLOY_SUBNET       the bridge's subnet (default 10.231.47.0/24): the host takes .1, units .10 on
  UPDOWN_DEPLOY_CACHE        base image and apt cache, kept between runs (default /var/cache/updown-deploy)
  UPDOWN_DEPLOY_KEEP=1       leave the work directory (machines' files, debug-log.txt) after the run
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scripts.throwaway_ca import make_ca, make_tls

REPO = Path(__file__).resolve().parents[2]
PUBLIC = "updown.example.com"
PRIVATE = "private.updown.example.com"
SWIFT_HOST = "swift.rehearsal.test"
KEY_ID = "store-rehearsal"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the rehearsal needs root (network namespaces, mounts, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap", "apt-cacher-ng", "haproxy", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-deps.sh installs it)"
    for var in ("UPDOWN_TEST_POSTGRES_URL", "UPDOWN_TEST_SWIFT_URL"):
        if not os.environ.get(var):
            return f"{var} is not set: run through scripts/test.sh, which starts PostgreSQL and Swift"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if "tests/deploy" in str(i.path)]
    reason = _missing() if mine else None
    if reason is None:
        return
    if os.environ.get("UPDOWN_REQUIRE_SERVICES") == "1":
        for item in mine:
            item.add_marker(pytest.mark.xfail(reason=reason, run=False, strict=True))
        raise pytest.UsageError(f"tests/deploy cannot run: {reason}")
    for item in mine:
        item.add_marker(pytest.mark.skip(reason=reason))


def packed_charms(work: Path) -> Path:
    given = os.environ.get("UPDOWN_TEST_CHARMS_DIR")
    if given and (Path(given) / "updown-app_amd64.charm").is_file():
        return Path(given)
    out = work / "charms"
    subprocess.run([str(REPO / "scripts" / "pack-charms.sh"), str(out)], check=True, cwd=REPO)
    return out


def next_release_charm(work: Path) -> Path:
    """updown-app packed again carrying another version of the service: what `juju refresh` moves to."""
    given = os.environ.get("UPDOWN_DEPLOY_NEXT_APP_CHARM")
    if given:
        return Path(given)
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    out = work / "charms-next"
    env = os.environ | {"UPDOWN_RELEASE": f"{version}.post1"}
    subprocess.run([str(REPO / "scripts" / "pack-charms.sh"), str(out), "updown-app"], check=True, cwd=REPO, env=env)
    return out / "updown-app_amd64.charm"


def swift_url() -> tuple[str, int]:
    from urllib.parse import urlsplit

    u = urlsplit(os.environ["UPDOWN_TEST_SWIFT_URL"])
    return u.hostname or "127.0.0.1", u.port or 80


def pg_address() -> tuple[str, int]:
    from urllib.parse import urlsplit

    u = urlsplit(os.environ["UPDOWN_TEST_POSTGRES_URL"].replace("postgresql+asyncpg://", "postgresql://"))
    return u.hostname or "127.0.0.1", u.port or 5432


def overlay(world: dict[str, Any]) -> dict[str, Any]:
    """The test overlay: one unit per tier but two app units (the refresh canary), no storage option (the store
    is s3-integrator's, a stand-in: Swift's s3api over HTTPS by host name with the rehearsal's CA). No upstream
    option on the backend caches: they read the store updown-app publishes on backend-cache (the integrator's
    endpoint and its tls-ca-chain), as `juju deploy ./bundle.yaml` alone has them do."""
    return {
        "applications": {
            "updown-app": {
                "num_units": 2,
                "options": {
                    "s3-bucket": "updown-rehearsal-" + secrets.token_hex(4),
                    "health-check-timeout": 90,
                    "drain-timeout": 30,
                },
            },
            "cache-frontend": {"num_units": 1},
            "cache-backend": {"num_units": 1},
        }
    }


def merged_bundle(charms: Path, extra: dict[str, Any]) -> dict[str, Any]:
    spec = yaml.safe_load((REPO / "bundle.yaml").read_text())
    apps = spec["applications"]
    apps["updown-app"]["charm"] = str(charms / "updown-app_amd64.charm")
    apps["cache-frontend"]["charm"] = apps["cache-backend"]["charm"] = str(charms / "updown-cache_amd64.charm")
    for name, over in extra["applications"].items():
        if "num_units" in over:
            apps[name]["num_units"] = over["num_units"]
        apps[name].setdefault("options", {}).update(over.get("options", {}))
    return spec


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    from cryptography.hazmat.primitives import serialization
    from tests.deploy.hostservices import AptProxy, Forwarder
    from tests.deploy.machines import Bridge, base_image, nspawn_tmpfs

    cache = Path(os.environ.get("UPDOWN_DEPLOY_CACHE", "/var/cache/updown-deploy"))
    run_root = Path(os.environ.get("UPDOWN_RUN_DIR", tempfile.gettempdir()))
    work = Path(tempfile.mkdtemp(prefix="rehearsal-", dir=run_root))
    image = base_image()
    nspawn_tmpfs()
    subnet = ipaddress.ip_network(os.environ.get("UPDOWN_DEPLOY_SUBNET", "10.231.47.0/24"))
    bridge = Bridge(f"udr{os.getpid() % 100000}", subnet)
    bridge.create()
    ca, ca_key = make_ca()
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    chain, key = make_tls(SWIFT_HOST, [SWIFT_HOST], signer=(ca, ca_key))
    apt = AptProxy(bridge.host, cache / "apt-cacher-ng", work / "apt-cacher-ng")
    fwd = Forwarder(bridge.host, work / "forward", pg_address(), swift_url(), chain + key)
    from concurrent.futures import ThreadPoolExecutor

    packer = ThreadPoolExecutor(max_workers=1)
    next_charm = packer.submit(next_release_charm, work)
    try:
        apt.start()
        fwd.start()
        yield {
            "work": work,
            "image": image,
            "bridge": bridge,
            "apt": apt,
            "forwarder": fwd,
            "ca": ca,
            "ca_key": ca_key,
            "ca_pem": ca_pem,
            "charms": packed_charms(work),
            # packed while the bundle deploys (the refresh step waits for it): ~3 minutes of charmcraft
            "next_app_charm": next_charm,
        }
    finally:
        packer.shutdown(wait=True)
        fwd.stop()
        apt.stop()
        bridge.delete()
        if os.environ.get("UPDOWN_DEPLOY_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failed step shows the units' journals: the services' own logs say why a request failed."""
    report = yield
    driver = getattr(item, "funcargs", {}).get("juju")
    if report.failed and call.when == "call" and driver is not None:
        report.sections.append(("units' journals", driver.journals()))
    return report


@pytest.fixture(scope="module")
def juju(world: dict[str, Any]) -> Iterator[Any]:
    """The deployed model: the driver, after `juju deploy ./bundle.yaml --overlay <test overlay>`, the HMAC
    secret added, granted and configured and s3-integrator's `sync-s3-credentials`, as a user does. The
    statuses just before that sync are kept as `driver.before_sync`."""
    from tests.deploy.driver import Driver, Standin
    from tests.deploy.model import Model, ModelServer
    from tests.deploy.standins import CertificatesProvider, PostgresProvider, S3IntegratorProvider

    bridge = world["bridge"]
    model = Model("rehearsal")
    fwd = world["forwarder"]
    pg = PostgresProvider(os.environ["UPDOWN_TEST_POSTGRES_URL"], f"{bridge.host}:{fwd.pg_port}")
    ca = CertificatesProvider(world["ca"], world["ca_key"])
    swift = (os.environ["UPDOWN_TEST_SWIFT_URL"], os.environ["UPDOWN_TEST_SWIFT_USER"])
    s3 = S3IntegratorProvider(
        f"https://{SWIFT_HOST}:{fwd.swift_tls_port}", world["ca_pem"], *swift, os.environ["UPDOWN_TEST_SWIFT_KEY"]
    )
    standins = {
        "postgresql": Standin("postgresql", "database", pg.react),
        "self-signed-certificates": Standin("self-signed-certificates", "certificates", ca.react),
        "s3-integrator": Standin("s3-integrator", "s3-credentials", s3.react),
    }
    with ModelServer(model, bridge.host) as server:
        driver = Driver(
            model,
            bridge,
            server.address,
            world["work"],
            world["image"],
            world["apt"].url,
            world["ca_pem"],
            {SWIFT_HOST: bridge.host},
        )
        hmac_key = secrets.token_urlsafe(32)
        try:
            extra = overlay(world)
            bundle = merged_bundle(world["charms"], extra)
            # `juju add-secret` + `juju grant-secret` before the deploy's config names it (the overlay would)
            hmac = model.add_secret("model", {KEY_ID: hmac_key})
            hmac.granted.add("updown-app")
            bundle["applications"]["updown-app"]["options"]["hmac-keys"] = hmac.id
            driver.deploy_bundle(bundle, standins)
            driver.before_sync = driver.status()  # type: ignore[attr-defined]
            # s3api's keys with tempauth: the account:user and its key
            s3.sync(driver, os.environ["UPDOWN_TEST_SWIFT_USER"], os.environ["UPDOWN_TEST_SWIFT_KEY"])
            driver.hmac_key = hmac_key  # type: ignore[attr-defined]
            yield driver
        finally:
            log = world["work"] / "debug-log.txt"
            if log.exists() and os.environ.get("UPDOWN_DEPLOY_KEEP") == "1":
                print(f"rehearsal debug log: {log}")
            driver.close()
            pg.drop()
