"""The updown-app charm's workload for real: the config it renders is accepted by the app's own Settings and
served by `updown serve` (migrated by `updown db upgrade`, as the leader does), a release installs from a
wheelhouse without an index and `current` flips atomically, the systemd unit passes `systemd-analyze verify`,
and the cache relation schema is the cache charm's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.charms.app_charm import CHARM_DIR, models, workload
from tests.support.server import free_port
from updown_app.caches.units import CacheUnits
from updown_app.settings import Settings

REPO = CHARM_DIR.parents[1]


FRONTENDS = (
    models.CacheUnit(unit_name="cache-frontend/1", role="frontend", address="10.0.0.2", port=6081),
    models.CacheUnit(unit_name="cache-frontend/0", role="frontend", address="10.0.0.1", port=6081),
)
BACKENDS = (models.CacheUnit(unit_name="cache-backend/0", role="backend", address="10.0.1.1", port=8080),)


def make_state(*, database: object = None, port: int = 8000, caches: tuple = FRONTENDS + BACKENDS, **config: object):
    db = database or models.Database(
        host="10.0.0.5", name="updown", username="relation-7", password=SecretStr("p@ss/w")
    )
    return models.AppState(
        unit_name="updown-app/0",
        address="10.1.0.1",
        config=models.AppConfig(
            public_hostname="updown.test", private_hostname="private.updown.test", port=port, **config
        ),
        database=db,
        secrets=models.Secrets(hmac_keys={"store-2024": SecretStr("k1"), "store-2025": SecretStr("k2")}),
        caches=caches,
        workers=2,
    )


def test_rendered_config_is_accepted_by_the_apps_settings(tmp_path: Path) -> None:
    layout = workload.Layout.under(tmp_path)
    state = make_state(storage_backend="s3")
    workload.write_files(workload.rendered_files(state, layout))
    settings = Settings.load(layout.config)
    assert settings.tls is False and settings.port == 8000 and settings.workers == 2
    assert settings.auto_migrate is False
    assert settings.public_host == "updown.test" and settings.private_host == "private.updown.test"
    assert settings.database_url == "postgresql+asyncpg://relation-7:p%40ss%2Fw@10.0.0.5:5432/updown"
    assert settings.trusted_proxies == ["10.0.0.1", "10.0.0.2", "127.0.0.1"]
    assert settings.caches.units_file == layout.cache_units
    workload.write_files({layout.cache_units: workload.render_cache_units(state)})
    units = CacheUnits.from_settings(settings.caches)  # what the running app reads from the file
    assert units.frontends == ["http://10.0.0.1:6081", "http://10.0.0.2:6081"]
    assert units.backends == {"cache-backend/0": "http://10.0.1.1:8080"}
    assert settings.signing_keys() == {"store-2024": b"k1", "store-2025": b"k2"}
    assert settings.data_dir == layout.data_dir
    assert "k1" not in layout.config.read_text()  # the keys live in their own file


def test_rendered_swift_s3_and_private_settings(tmp_path: Path) -> None:
    layout = workload.Layout.under(tmp_path)
    with pytest.raises(ValueError, match="temp-url-key"):
        make_state(storage_backend="swift", swift_auth_url="https://keystone.test/v3", swift_username="updown")
    with pytest.raises(ValueError, match="backend-cache needs"):
        make_state()  # local storage
    swift = make_state(
        caches=FRONTENDS,
        storage_backend="swift",
        swift_auth_url="https://keystone.test/v3",
        swift_username="updown",
        swift_project_name="store",
        sso_mode="jwt",
        sso_jwks_url="https://sso.test/jwks",
        sso_issuer="https://sso.test",
        sso_audience="updown",
        access_check_url="https://store.test/access",
        access_check_key_id="store-2025",
        storage_first_byte_timeout=12.5,
    )
    swift = swift.model_copy(  # model_copy does not validate: the temp-url-key comes with the backends below
        update={
            "caches": FRONTENDS + BACKENDS,
            "secrets": swift.secrets.model_copy(
                update={"swift_password": SecretStr("swiftpw"), "swift_temp_url_key": SecretStr("tuk")}
            ),
        }
    )
    workload.write_files(workload.rendered_files(swift, layout))
    settings = Settings.load(layout.config)
    assert settings.storage.backend == "swift" and settings.storage.swift is not None
    assert settings.storage.swift.password.get_secret_value() == "swiftpw"
    assert settings.storage.swift.first_byte_timeout == 12.5
    assert settings.private.enabled and settings.private.sso.jwt is not None
    assert settings.private.access_check.key_id == "store-2025"

    s3 = make_state(storage_backend="s3", s3_bucket="pkgs", s3_endpoint_url="https://s3.test")
    s3 = s3.model_copy(
        update={
            "secrets": s3.secrets.model_copy(
                update={"s3_access_key_id": SecretStr("AKIA1"), "s3_secret_access_key": SecretStr("sek")}
            )
        }
    )
    workload.write_files(workload.rendered_files(s3, layout))
    settings = Settings.load(layout.config)
    assert settings.storage.s3 is not None and settings.storage.s3.bucket == "pkgs"
    assert "sek" not in layout.config.read_text()
    assert 'AWS_SECRET_ACCESS_KEY="sek"' in layout.environment.read_text()


def test_secret_files_are_private(tmp_path: Path) -> None:
    layout = workload.Layout.under(tmp_path)
    state = make_state(storage_backend="s3")
    workload.write_files(workload.rendered_files(state, layout), private=layout.secret_files)
    # the set the charm writes with: every rendered file that holds a secret is 0640
    for path in (layout.config, layout.hmac_keys, layout.environment):
        assert (path.stat().st_mode & 0o777) == 0o640, path
    assert (layout.unit_file.stat().st_mode & 0o777) == 0o644


def test_failed_commands_output_is_scrubbed_of_secrets() -> None:
    state = make_state(caches=FRONTENDS)
    stderr = f"bad url {state.database.url()} and key k2"
    text = workload.scrubbed_stderr(subprocess.CalledProcessError(1, ["updown"], stderr=stderr), state)
    assert "p@ss/w" not in text and "p%40ss%2Fw" not in text and "k2" not in text
    assert text == "bad url postgresql+asyncpg://relation-7:<redacted>@10.0.0.5:5432/updown and key <redacted>"
    shown = workload.shown_settings(state, workload.Layout())
    assert shown["database_url"] == "postgresql+asyncpg://relation-7:<redacted>@10.0.0.5:5432/updown"


@pytest.fixture
def running(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Any, Any, str, subprocess.Popen[bytes]]]:
    """`updown db upgrade` then `updown serve`, both with the config the charm renders, on the test PostgreSQL."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    db = models.Database(
        host=url.host, port=url.port or 5432, name=url.database, username=url.username, password=SecretStr("")
    )
    port = free_port()
    state = make_state(database=db, port=port, caches=FRONTENDS)  # local storage: no backend caches
    state = state.model_copy(update={"bind_address": "127.0.0.1", "workers": 1})
    layout = workload.Layout.under(tmp_path)
    workload.write_files(workload.rendered_files(state, layout))
    updown = [sys.executable, "-m", "updown_app"]
    out = subprocess.run([*updown, "db", "upgrade", "--config", str(layout.config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*updown, "serve", "--config", str(layout.config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        ok, detail = workload.health_check(workload.health_url(state), timeout=30, interval=0.2)
        assert ok, detail + (tmp_path / "serve.log").read_text()
        yield state, layout, f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.postgres
def test_serve_answers_with_the_rendered_config(running, tmp_path: Path) -> None:
    _, _, base, _ = running
    from updown_app.client import UpdownClient

    payload = tmp_path / "hello.txt"
    payload.write_bytes(b"hello from the charm's config\n")
    with UpdownClient(base, key_id="store-2025", secret=b"k2") as client:
        record = client.upload(payload, package="hello", revision="1")
        client.publish(record["id"])
    # as the frontend would ask: public host, forwarded as HTTPS by a trusted proxy (the unit itself here)
    r = httpx.get(f"{base}/hello/1/hello.txt", headers={"host": "updown.test", "x-forwarded-proto": "https"})
    assert r.status_code == 200 and r.content == payload.read_bytes()
    r = httpx.get(f"{base}/hello/1/hello.txt", headers={"host": "updown.test"})
    assert r.status_code == 308  # plain HTTP without the proxy's word is redirected


@pytest.mark.postgres
def test_unpublish_through_the_local_api(running, tmp_path: Path) -> None:
    """The `unpublish` action's command, for real: the CLI, the key in the environment, the unit's own API."""
    state, layout, base, _ = running
    from updown_app.client import UpdownClient

    payload = tmp_path / "bad.txt"
    payload.write_bytes(b"take me down\n")
    with UpdownClient(base, key_id="store-2024", secret=b"k1") as client:
        file_id = client.upload(payload, package="bad", revision="1")["id"]
        client.publish(file_id)
    # the charm runs <current release>/bin/updown and python; here the test venv is the current release
    layout.current.parent.mkdir(parents=True, exist_ok=True)
    layout.current.symlink_to(sys.prefix)
    assert workload.find_published(layout, "/bad/1/bad.txt") == file_id  # the action's lookup by name
    assert workload.find_published(layout, "/bad/1/other.txt") is None
    with pytest.raises(ValueError):
        workload.find_published(layout, "/bad/1")
    out = workload.unpublish(state, layout, file_id)
    assert '"state": "unpublished"' in out
    r = httpx.get(f"{base}/bad/1/bad.txt", headers={"host": "updown.test", "x-forwarded-proto": "https"})
    assert r.status_code == 404
    assert workload.find_published(layout, "/bad/1/bad.txt") is None  # published files only


@pytest.mark.postgres
def test_a_stopping_unit_finishes_its_downloads(running, tmp_path: Path) -> None:
    """What a restart relies on (systemd sends SIGTERM, TimeoutStopSec bounds it): a download in flight is
    finished, while new connections are refused."""
    import signal
    import time

    _, _, base, proc = running
    from updown_app.client import UpdownClient

    payload = tmp_path / "big.bin"
    payload.write_bytes(os.urandom(24 * 1024 * 1024))
    with UpdownClient(base, key_id="store-2024", secret=b"k1") as client:
        client.publish(client.upload(payload, package="big", revision="1")["id"])
    headers = {"host": "updown.test", "x-forwarded-proto": "https"}
    received = bytearray()
    with httpx.Client(timeout=30) as slow, slow.stream("GET", f"{base}/big/1/big.bin", headers=headers) as r:
        assert r.status_code == 200
        chunks = r.iter_bytes(256 * 1024)
        received += next(chunks)
        proc.send_signal(signal.SIGTERM)  # the unit is stopping with this download in flight
        time.sleep(0.5)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/readyz", timeout=2)  # no new connections
        for chunk in chunks:
            received += chunk
            time.sleep(0.001)  # a slow client
    assert bytes(received) == payload.read_bytes()
    assert proc.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done; systemd counts it clean


def test_health_check_reports_what_failed(tmp_path: Path) -> None:
    ok, detail = workload.health_check(f"http://127.0.0.1:{free_port()}/readyz", timeout=0.5, interval=0.1)
    assert not ok and detail == "not answering"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    layout = workload.Layout.under(tmp_path)
    # ExecStart must name an executable file: stand in for an installed release
    release = layout.releases / "1.0.0" / "bin"
    release.mkdir(parents=True)
    (release / "updown").write_text("#!/bin/sh\n")
    (release / "updown").chmod(0o755)
    (layout.releases / "1.0.0" / ".installed").write_text("1.0.0\n")
    workload.activate("1.0.0", layout)
    unit = tmp_path / "updown.service"
    unit.write_text(workload.render_unit(make_state(storage_backend="s3"), layout, user="root"))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, env={**os.environ})
    problems = [line for line in result.stderr.splitlines() if "updown.service" in line]
    assert result.returncode == 0 and not problems, result.stderr
    assert "TimeoutStopSec=300" in unit.read_text()


def test_the_cache_relation_schema_roles_match_the_app_charms() -> None:
    """The relation schema is the cache charm's file (pack.sh copies it in); its `Role` comes from the models of
    whichever charm imports it, so both charms' roles must agree."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cache_models", REPO / "charms" / "cache" / "src" / "models.py")
    assert spec is not None and spec.loader is not None
    cache_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache_models)
    assert {r.value for r in cache_models.Role} == {r.value for r in models.Role}


def test_workers_are_sized_to_the_machine() -> None:
    assert workload.workers_for(None) == 1
    assert workload.workers_for(4) == 4
    assert workload.workers_for(128) == workload.MAX_WORKERS
