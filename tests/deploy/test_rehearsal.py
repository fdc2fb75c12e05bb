"""The deployment rehearsal: bundle.yaml (with the test overlay) deployed onto real machines, every hook run by
the packed charms' own `dispatch`, and the stack then checked from outside the units, through the deployed
frontend units, with real clients (the updown client, curl, apt-get). The tests of this module run in order on
one model, like tests/integration (which does the same with a real controller).

What each step proves, and what only a controller can, is listed in tests/deploy/README.md."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from tests.deploy.conftest import KEY_ID, PUBLIC
from tests.deploy.driver import Driver, juju_status_text
from tests.stack.apt_repo import AptClient, build_deb, index_files

APPS = ["updown-app", "cache-frontend", "cache-backend"]
STATE: dict[str, Any] = {}
MiB = 1024 * 1024


# -- clients from outside ----------------------------------------------------------------------------------------


class _Resolve(httpcore.SyncBackend):
    """Connect to one frontend unit's address whatever the URL's host (SNI and Host stay the public name)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return super().connect_tcp(self.address, port, *args, **kwargs)


def https(address: str, ca: Path) -> httpx.Client:
    transport = httpx.HTTPTransport(verify=str(ca))
    transport._pool._network_backend = _Resolve(address)  # httpx has no resolve option
    return httpx.Client(base_url=f"https://{PUBLIC}", transport=transport, timeout=60)


def curl(address: str, ca: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["curl", "-sS", "--fail", "--cacert", str(ca), "--resolve", f"{PUBLIC}:443:{address}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def frontends(juju: Driver) -> list[str]:
    units = juju.status()["applications"]["cache-frontend"]["units"]
    return [u["public-address"] for _, u in sorted(units.items())]


SERVICES = {"updown-app": ["updown"], "cache-frontend": ["haproxy", "varnish"], "cache-backend": ["nginx"]}


def assert_all_active(juju: Driver) -> dict[str, Any]:
    """`juju status` shows every unit and application active; if not, what it shows and the journal of the
    services on the units that are not (what an operator would look at next)."""
    juju.update_status()
    status = juju.status()
    problems = []
    for app in APPS:
        a = status["applications"][app]
        if a["application-status"]["current"] != "active":
            problems.append(app)
        for name, u in a["units"].items():
            if u["workload-status"]["current"] != "active":
                problems.append(name)
                units = " ".join(f"-u {s}" for s in SERVICES[app])
                journal = juju.machines[name].run(["sh", "-c", f"journalctl --no-pager -n 12 {units}"], check=False)
                problems.append(journal.stdout)
    assert not problems, juju_status_text(status) + "\n" + "\n".join(problems)
    return status


def service_pids(juju: Driver, unit: str, *services: str) -> dict[str, str]:
    m = juju.machines[unit]
    return {s: m.run(["systemctl", "show", "-p", "MainPID", "--value", s]).stdout.strip() for s in services}


def wait_routed(juju: Driver, ca: Path, timeout: float = 60) -> None:
    """Until every frontend sends requests to an app unit, both ways: the API (HAProxy straight to the app) and a
    download (Varnish; a file nobody published answers 404 from the app). `juju status` is all active as soon as
    each app unit passed its own health check; HAProxy's and Varnish's probes take their seconds after that, and
    meanwhile the frontend answers 503 with Retry-After."""
    deadline = time.monotonic() + timeout
    for address in frontends(juju):
        with https(address, ca) as http:
            for path in ("/v1/files/0", "/rehearsal/0/nothing.bin"):
                while True:
                    try:
                        if http.get(path).status_code not in (502, 503, 504):
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, f"frontend {address} does not route {path} to the app"
                    time.sleep(0.5)


@pytest.fixture(scope="module")
def ca(world: dict[str, Any]) -> Path:
    path = world["work"] / "ca.pem"
    path.write_text(world["ca_pem"])
    return path


@pytest.fixture(scope="module")
def client(juju: Driver, ca: Path) -> Iterator[Any]:
    from updown_app.client import UpdownClient

    c = UpdownClient(f"https://{PUBLIC}", key_id=KEY_ID, secret=juju.hmac_key.encode(), verify=str(ca))  # type: ignore[attr-defined]
    wait_routed(juju, ca)
    c.http = https(frontends(juju)[0], ca)
    c.http.headers.update({"user-agent": "updown-rehearsal"})
    yield c
    c.http.close()


# -- the steps ---------------------------------------------------------------------------------------------------


def test_deploy_the_bundle_all_units_active(juju: Driver) -> None:
    before = juju.before_sync["applications"]["updown-app"]["units"]  # type: ignore[attr-defined]
    for u in before.values():  # until s3-integrator had keys: blocked, saying the one command to run
        assert u["workload-status"]["current"] == "blocked"
        assert u["workload-status"]["message"].startswith(
            "waiting for s3-integrator credentials (juju run s3-integrator/leader sync-s3-credentials"
        )
    status = assert_all_active(juju)
    apps = status["applications"]
    app_msg = apps["updown-app"]["application-status"]["message"]
    release = app_msg.split()[0]
    assert app_msg == f"{release} on 2 units", juju_status_text(status)
    for u in apps["updown-app"]["units"].values():
        assert u["workload-status"]["message"] == f"running {release}"
    fe = next(iter(apps["cache-frontend"]["units"].values()))
    assert fe["workload-status"]["message"] == "frontend: 1 ring units, 2 app units"
    be = next(iter(apps["cache-backend"]["units"].values()))
    assert be["workload-status"]["message"].startswith("backend: 2 app units, upstream ")
    STATE["release"] = release


def test_signed_upload_publish_and_download_with_curl(juju: Driver, client: Any, ca: Path, tmp_path: Path) -> None:
    payload = tmp_path / "hello.snap"
    payload.write_bytes(os.urandom(3 * MiB))
    record = client.upload(payload, package="hello", revision="1")
    client.publish(record["id"])
    STATE.update(file_id=record["id"], body=payload.read_bytes(), path="/hello/1/hello.snap")
    first = frontends(juju)[0]
    out = tmp_path / "got.snap"
    r = curl(first, ca, "-D", "-", "-o", str(out), f"https://{PUBLIC}/hello/1/hello.snap")
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == record["sha256"]
    again = curl(first, ca, "-D", "-", "-o", "/dev/null", f"https://{PUBLIC}/hello/1/hello.snap")
    assert "x-cache: HIT" in again.stdout.lower().replace("x-cache: hit", "x-cache: HIT"), again.stdout
    plain = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-H", f"host: {PUBLIC}",
         f"http://{first}/hello/1/hello.snap"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    code, location = plain.stdout.split(" ", 1)
    assert code == "308" and location.startswith("https://"), plain.stdout


def test_curl_resumes_a_download(juju: Driver, ca: Path, tmp_path: Path) -> None:
    first = frontends(juju)[0]
    out = tmp_path / "part.snap"
    url = f"https://{PUBLIC}{STATE['path']}"
    assert curl(first, ca, "--range", f"0-{MiB - 1}", "-o", str(out), url).returncode == 0  # an interrupted one
    assert out.stat().st_size == MiB
    r = curl(first, ca, "-C", "-", "-o", str(out), url)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == STATE["body"]


def test_apt_get_installs_a_published_deb(juju: Driver, client: Any, ca: Path, tmp_path: Path) -> None:
    deb = build_deb(tmp_path, "updown-hello", "1.0", secrets.token_bytes(5000))
    package = "apt" + secrets.token_hex(3)
    for f in [deb, *index_files(tmp_path, [deb])]:
        record = client.upload(f, package=package, revision="1", visibility="public")
        client.publish(record["id"])
    first = frontends(juju)[0]
    apt = AptClient(tmp_path / "apt", f"deb [trusted=yes] https://{PUBLIC}/{package}/1/ ./", str(ca))
    resolve = ["-o", f"Acquire::https::{PUBLIC}::Verify-Host=true"]
    env_hosts = tmp_path / "hosts"
    env_hosts.write_text(f"{first} {PUBLIC}\n")
    # apt resolves with the system resolver: give it the unit's address through a private hosts file
    result = _apt_with_hosts(apt, env_hosts, *resolve, "update")
    assert result.returncode == 0 and "Err:" not in result.stdout, result.stdout + result.stderr
    install = _apt_with_hosts(apt, env_hosts, "install", "-y", "--no-install-recommends", "updown-hello")
    assert install.returncode == 0, install.stdout + install.stderr
    assert (apt.root / "usr/share/updown-hello/payload.bin").stat().st_size == 5000


def _apt_with_hosts(apt: AptClient, hosts: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """apt-get in a private mount namespace where /etc/hosts names the frontend unit (the system's is untouched)."""
    import shlex

    inner = " ".join(shlex.quote(a) for a in _apt_argv(apt, *args))
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && exec {inner}"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _apt_argv(apt: AptClient, *args: str) -> list[str]:
    captured: list[list[str]] = []
    real = subprocess.run

    def fake(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        captured.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    subprocess.run = fake  # type: ignore[assignment]
    try:
        apt.run(*args)
    finally:
        subprocess.run = real
    return captured[0]


def test_add_unit_of_a_frontend_changes_the_ring_without_restarting(juju: Driver, ca: Path) -> None:
    fe0 = "cache-frontend/0"
    before = service_pids(juju, fe0, "haproxy", "varnish")
    app_before = {u: service_pids(juju, u, "updown")["updown"] for u in juju.model.apps["updown-app"].units}
    juju.add_unit("cache-frontend")
    status = assert_all_active(juju)
    units = status["applications"]["cache-frontend"]["units"]
    assert [u["workload-status"]["message"] for _, u in sorted(units.items())] == [
        "frontend: 2 ring units, 2 app units"
    ] * 2
    assert service_pids(juju, fe0, "haproxy", "varnish") == before  # reloaded, not restarted
    assert {u: service_pids(juju, u, "updown")["updown"] for u in app_before} == app_before
    owners = set()
    for address in frontends(juju):  # any unit answers; each file is cached on one unit whichever is entered
        with https(address, ca) as web:
            r = web.get(STATE["path"])
            assert r.status_code == 200 and r.content == STATE["body"]
            owners.add(r.headers.get("x-cache-unit"))
    assert len(owners) == 1, owners


def test_unpublish_is_404_at_once_on_every_frontend(juju: Driver, client: Any, ca: Path) -> None:
    addresses = frontends(juju)
    assert len(addresses) == 2
    for address in addresses:  # cached on its owner, reached through both
        with https(address, ca) as web:
            assert web.get(STATE["path"]).status_code == 200
    client.unpublish(STATE["file_id"])
    for address in addresses:
        with https(address, ca) as web:
            assert web.get(STATE["path"]).status_code == 404


def test_staged_refresh_pauses_after_the_canary_resumes_and_rolls_back(
    juju: Driver, world: dict[str, Any], client: Any, ca: Path, tmp_path: Path
) -> None:
    next_charm = world["next_app_charm"].result(timeout=900)
    payload = tmp_path / "during.snap"
    payload.write_bytes(os.urandom(64 * 1024))
    record = client.upload(payload, package="during", revision="1")
    client.publish(record["id"])
    before = STATE["release"]
    juju.refresh("updown-app", next_charm)
    juju.update_status(["updown-app"])
    status = juju.status()["applications"]["updown-app"]
    message = status["application-status"]["message"]
    canary = "updown-app/1"
    assert f"paused after {canary}" in message and "resume-refresh" in message and "rollback" in message, message
    running = {u: s["workload-status"]["message"] for u, s in status["units"].items()}
    assert running[canary] != f"running {before}" and running[canary].startswith("running "), running
    assert running["updown-app/0"] == f"refresh to {running[canary].split()[1]} paused: waiting for resume-refresh"
    with https(frontends(juju)[0], ca) as web:  # still serving during the pause
        assert web.get(record["path"]).status_code == 200
    task = juju.run_action("updown-app/leader", "resume-refresh")
    assert task.status == "completed", task
    status = assert_all_active(juju)
    after = status["applications"]["updown-app"]["application-status"]["message"].split()[0]
    assert after != before
    task = juju.run_action("updown-app/leader", "rollback")
    assert task.status == "completed" and before in task.results["result"], task
    status = assert_all_active(juju)
    assert status["applications"]["updown-app"]["application-status"]["message"].startswith(before)
    with https(frontends(juju)[0], ca) as web:
        assert web.get(record["path"]).status_code == 200


def test_remove_unit_of_a_frontend(juju: Driver, client: Any, ca: Path, tmp_path: Path) -> None:
    juju.remove_unit("cache-frontend/1")
    status = assert_all_active(juju)
    units = status["applications"]["cache-frontend"]["units"]
    assert list(units) == ["cache-frontend/0"]
    assert units["cache-frontend/0"]["workload-status"]["message"] == "frontend: 1 ring units, 2 app units"
    payload = tmp_path / "after.snap"
    payload.write_bytes(os.urandom(1000))
    record = client.upload(payload, package="after", revision="1")
    client.publish(record["id"])
    with https(frontends(juju)[0], ca) as web:
        assert web.get(record["path"]).status_code == 200
    app_units = juju.model.apps["updown-app"].units
    cache_units = juju.machines[app_units[0]].run(["cat", "/etc/updown/cache-units.json"]).stdout
    assert "cache-frontend" not in cache_units or cache_units.count("http://") == 2, cache_units
