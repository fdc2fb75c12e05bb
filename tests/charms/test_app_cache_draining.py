"""A draining updown-app unit (staged rollouts) as the cache charm renders it: the real HAProxy sends it no new
requests, Varnish's director leaves it out, and it may still purge. Uses the cache charm's modules (conftest)."""

from __future__ import annotations

import collections
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ops import testing
from scripts.throwaway_ca import make_tls

import charm as cache_charm_module
import workload
from models import CacheConfig, CacheState, Origin, RingMember, TLSMaterial
from tests.charms.standins import named_servers
from tests.charms.test_cache_rendered_configs import need
from tests.support.server import free_port


@pytest.fixture
def origins() -> Iterator[dict[str, int]]:
    """Two stand-in app units answering their own name (and /readyz), by unit name -> port."""
    with named_servers("X-Origin", ["updown-app/0", "updown-app/1"]) as ports:
        yield ports


def state(
    origins: dict[str, int],
    draining: set[str],
    tls: TLSMaterial | None = None,
    addresses: dict[str, str] | None = None,
    **config: object,
) -> CacheState:
    return CacheState(
        unit_name="updown-cache/0",
        address="127.0.0.1",
        bind_address="127.0.0.1",
        config=CacheConfig(public_hostname="updown.test", health_check_interval=1, **config),  # type: ignore[arg-type]
        ring=(RingMember(unit_name="updown-cache/0", address="127.0.0.1", port=6081),),
        origins=tuple(
            Origin(unit_name=u, address=(addresses or {}).get(u, "127.0.0.1"), port=p, draining=u in draining)
            for u, p in origins.items()
        ),
        tls=tls,
    )


def test_rendered_draining_origin(tmp_path: Path) -> None:
    chain, key = make_tls("updown.test", ["updown.test"])
    origins = {"updown-app/0": 8000, "updown-app/1": 8001}
    addresses = {"updown-app/0": "10.1.0.1", "updown-app/1": "10.1.0.2"}
    tls = TLSMaterial(chain=chain, key=key)
    s = state(origins, {"updown-app/1"}, tls, addresses, private_hostname="private.updown.test")
    layout = workload.Layout.under(tmp_path)
    workload.write_files(workload.rendered_files(s, layout))
    cfg = layout.haproxy_cfg.read_text()
    assert "server updown-app-1 10.1.0.2:8001 disabled" in cfg
    assert "server updown-app-0 10.1.0.1:8000\n" in cfg
    vcl = layout.vcl.read_text()
    assert "origin.add_backend(updown_app_0);" in vcl and "updown_app_1" not in vcl
    assert '"10.1.0.2";' in vcl  # a draining unit may still PURGE and BAN

    result = subprocess.run([need("haproxy"), "-c", "-f", str(layout.haproxy_cfg)], capture_output=True, text=True)
    assert result.returncode == 0 and "WARNING" not in result.stderr, result.stdout + result.stderr
    result = subprocess.run(
        [need("varnishd"), "-C", "-j", "none", "-f", str(layout.vcl), "-n", str(tmp_path / "varnish")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # every origin draining: Varnish still gets a (sick) placeholder backend and compiles
    workload.write_files({layout.vcl: workload.render_vcl(state(origins, set(origins)))})
    assert "no_origin" in layout.vcl.read_text()
    result = subprocess.run(
        [need("varnishd"), "-C", "-j", "none", "-f", str(layout.vcl), "-n", str(tmp_path / "varnish2")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _served_by(tmp: Path, s: CacheState, https: int, count: int) -> collections.Counter[str]:
    layout = workload.Layout.under(tmp)
    workload.write_files(workload.rendered_files(s, layout))
    layout.haproxy_socket.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([need("haproxy"), "-db", "-f", str(layout.haproxy_cfg)], stdout=subprocess.DEVNULL)
    try:
        assert s.tls is not None
        context = ssl.create_default_context(cadata=s.tls.chain)
        with httpx.Client(verify=context, headers={"Host": "updown.test"}, timeout=5) as client:
            deadline = time.monotonic() + 20
            while True:  # until HAProxy listens and its health checks saw the serving origins up
                try:
                    if client.get(f"https://127.0.0.1:{https}/v1/ping").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "HAProxy did not come up"
                time.sleep(0.2)
            time.sleep(2.5)  # both origins' rise (2 checks of 1 s)
            return collections.Counter(
                client.get(f"https://127.0.0.1:{https}/v1/ping").headers["X-Origin"] for _ in range(count)
            )
    finally:
        proc.terminate()
        proc.wait(10)


def test_haproxy_sends_a_draining_origin_no_requests(tmp_path: Path, origins: dict[str, int]) -> None:
    chain, key = make_tls("updown.test", ["updown.test"], ["127.0.0.1"])
    tls = TLSMaterial(chain=chain, key=key)
    https = free_port()
    ports = dict(http_port=free_port(), https_port=https, cache_port=free_port())
    both = _served_by(tmp_path / "both", state(origins, set(), tls, **ports), https, 20)
    assert set(both) == {"updown-app/0", "updown-app/1"}  # round robin over both while neither drains
    drained = _served_by(tmp_path / "drained", state(origins, {"updown-app/1"}, tls, **ports), https, 20)
    assert drained == {"updown-app/0": 20}


def test_cache_charm_carries_the_draining_flag(cache_ctx, cache_host, tls_pair) -> None:
    chain, key = tls_pair
    secret = testing.Secret(tracked_content={"certificate": chain, "key": key})
    # what the updown-app charm writes (the schema both charms carry)
    from updown_charms import interface as app_interface

    bags: dict[int, dict[str, str]] = {0: {}, 1: {}}
    app_interface.AppUnitData(address="10.1.0.1", port=8000, draining=False).dump(bags[0])
    app_interface.AppUnitData(address="10.1.0.2", port=8000, draining=True).dump(bags[1])
    app = testing.Relation(endpoint="app", remote_app_name="updown-app", remote_units_data=bags)
    out = cache_ctx.run(
        cache_ctx.on.relation_changed(app, remote_unit=1),
        testing.State(
            config={"public-hostname": "updown.test", "tls-secret-id": secret.id},
            relations=[testing.PeerRelation("ring"), app],
            secrets=[secret],
            stored_states=[
                testing.StoredState(owner_path="CacheCharm", content={"installed": True, "role": "frontend"})
            ],
        ),
    )
    assert out.unit_status.name == "active"
    layout = cache_charm_module.LAYOUT
    cfg = layout.haproxy_cfg.read_text()
    assert "server updown-app-1 10.1.0.2:8000 disabled" in cfg and "server updown-app-0 10.1.0.1:8000\n" in cfg
    assert "updown_app_1" not in layout.vcl.read_text()
