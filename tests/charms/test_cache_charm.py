"""The cache charm with ops.testing: Juju state in, Juju state (and the files it would write) out."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from ops import testing
from scripts.throwaway_ca import make_ca, make_tls

import charm as charm_module
import workload
from tests.charms.test_cache_rendered_configs import need

PUBLIC = "updown.test"
PRIVATE = "private.updown.test"
CONFIG = {"public-hostname": PUBLIC, "private-hostname": PRIVATE}


def layout() -> workload.Layout:
    return charm_module.LAYOUT


def haproxy_cfg() -> str:
    return layout().haproxy_cfg.read_text()


def ring_servers() -> list[str]:
    return [line.split()[1] for line in haproxy_cfg().splitlines() if line.strip().startswith("server updown-cache-")]


def app_relation(*units: int) -> testing.Relation:
    return testing.Relation(
        endpoint="app",
        remote_app_name="updown-app",
        remote_units_data={u: {"address": f"10.1.0.{u + 1}", "port": "8000"} for u in units},
    )


def tls_secret(tls_pair: tuple[str, str]) -> testing.Secret:
    chain, key = tls_pair
    return testing.Secret(tracked_content={"certificate": chain, "key": key})


def ready_state(tls_pair: tuple[str, str], *relations: testing.RelationBase, **config: object) -> testing.State:
    secret = tls_secret(tls_pair)
    return testing.State(
        config={**CONFIG, "tls-secret-id": secret.id, **config},
        relations=[testing.PeerRelation("ring"), app_relation(0), *relations],
        secrets=[secret],
        stored_states=[installed("frontend")],
    )


def installed(role: str) -> testing.StoredState:
    return testing.StoredState(owner_path="CacheCharm", content={"installed": True, "role": role})


def test_install_installs_packages_and_waits_for_config(cache_ctx, cache_host):
    out = cache_ctx.run(cache_ctx.on.install(), testing.State())
    install = [c for c in cache_host if c[0] == "apt-get" and "install" in c]
    assert len(install) == 1 and install[0][-3:] == ["haproxy", "varnish", "prometheus-varnish-exporter"]
    # bounded: a stalled mirror fails the hook (Juju retries it) instead of holding the unit for ever
    assert {"Acquire::http::Timeout=30", "Acquire::Retries=3"} <= set(install[0])
    assert out.unit_status.name == "blocked"
    assert "public-hostname is required for role=frontend" in out.unit_status.message
    assert not layout().haproxy_cfg.exists()


def test_install_fixes_the_role(cache_ctx, cache_host):
    out = cache_ctx.run(cache_ctx.on.install(), testing.State(config=CONFIG))
    stored = out.get_stored_state("_stored", owner_path="CacheCharm")
    assert stored.content["role"] == "frontend"


def test_config_changed_renders_and_reloads(cache_ctx, cache_host, tls_pair):
    out = cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair))
    assert out.unit_status == testing.ActiveStatus("frontend: 1 ring units, 1 app units")
    cfg = haproxy_cfg()
    assert "balance uri path-only" in cfg and "hash-type consistent" in cfg
    assert "server updown-cache-0 192.0.2.0:6081 id 1" in cfg
    assert "server updown-app-0 10.1.0.1:8000" in cfg
    assert f"req.hdr(host),field(1,:),lower -m str {PUBLIC}" in cfg
    assert layout().tls_pem.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert (layout().tls_pem.stat().st_mode & 0o777) == 0o600
    vcl = layout().vcl.read_text()
    assert '"10.1.0.1";' in vcl and "set beresp.grace = 3600s;" in vcl
    assert "malloc,1G" in layout().varnish_dropin.read_text()
    assert ["systemctl", "reload-or-restart", "haproxy"] in cache_host
    # the same state again changes nothing and reloads nothing
    cache_host.clear()
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair))
    assert cache_host == []


def test_config_change_reloads_varnish_keeping_its_cache(cache_ctx, cache_host, tls_pair):
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair))
    cache_host.clear()
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair, grace=60))
    assert "set beresp.grace = 60s;" in layout().vcl.read_text()
    assert ["systemctl", "reload", "varnish"] in cache_host
    assert ["systemctl", "restart", "varnish"] not in cache_host
    cache_host.clear()
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair, grace=60, **{"cache-size": "8G"}))
    assert ["systemctl", "restart", "varnish"] in cache_host


# The PATH a hook's commands are found on (Juju's hook environment has the system directories, nothing else).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_every_command_the_charm_runs_is_on_the_system_path(cache_ctx, cache_host, tls_pair):
    """Install, first config, a VCL-only change (a unit joins or drains), a storage change, and the backend role:
    each command is one a unit has on PATH (Debian's varnishreload is not: it crashed the hook)."""
    cache_ctx.run(cache_ctx.on.install(), testing.State(config=CONFIG))
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair))
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair, grace=60))
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair, grace=60, **{"cache-size": "8G"}))
    backend = {"role": "backend", "upstream-url": "https://swift.example.test"}
    cache_ctx.run(cache_ctx.on.install(), testing.State(config=backend))
    cache_ctx.run(
        cache_ctx.on.config_changed(),
        testing.State(config=backend, relations=[app_relation(0)], stored_states=[installed("backend")]),
    )
    programs = {cmd[0] for cmd in cache_host}
    assert {"apt-get", "systemctl", "haproxy", "varnishd", "nginx"} <= programs
    assert {p for p in programs if shutil.which(p, path=SYSTEM_PATH) is None} == set()


def test_varnish_reloads_through_its_unit(tls_pair, tmp_path):
    """A VCL change is `systemctl reload varnish`: the drop-in's ExecReload loads our VCL with the distribution's
    varnishreload, which exists and is executable where varnish is installed."""
    need("varnishd")
    layout = workload.Layout.under(tmp_path)
    state = workload_state(tls_pair)
    dropin = workload.render_varnish_dropin(state, layout).splitlines()
    reloads = [line.split("=", 1)[1] for line in dropin if line.startswith("ExecReload=")]
    assert reloads == ["", f"{workload.VARNISHRELOAD} {layout.vcl}"]  # replaces the unit's own ExecReload
    assert os.access(workload.VARNISHRELOAD, os.X_OK)


def workload_state(tls_pair: tuple[str, str]) -> workload.CacheState:
    from tests.charms.test_cache_rendered_configs import make_state

    return make_state(tls_pair, "one-unit")


def test_a_config_haproxy_rejects_is_not_left_on_disk(cache_ctx, cache_host, tls_pair, monkeypatch):
    """A TLS secret whose key does not match its certificate: the real `haproxy -c` refuses it, the previous
    files stay in place and nothing reloads, and the retried hook fails again instead of finding nothing to do."""
    recorded = workload.run

    def run(argv: list[str], **_: object) -> None:
        if argv[:2] == ["haproxy", "-c"]:
            subprocess.run([need("haproxy"), *argv[1:]], check=True, capture_output=True, text=True)
        recorded(argv)

    monkeypatch.setattr(workload, "run", run)
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair))
    before = {p: p.read_text() for p in (layout().haproxy_cfg, layout().tls_pem, layout().vcl)}
    chain, _ = tls_pair
    _, other_key = make_tls("updown.test", ["updown.test"])
    mismatched = (chain, other_key)
    cache_host.clear()
    for _attempt in range(2):  # the hook, then Juju's retry of it
        with pytest.raises(testing.errors.UncaughtCharmError):
            cache_ctx.run(cache_ctx.on.config_changed(), ready_state(mismatched, grace=60))
        assert {p: p.read_text() for p in before} == before
    assert not any(cmd[0] == "systemctl" for cmd in cache_host)


def test_unit_publishes_its_varnish_to_peers_and_app(cache_ctx, cache_host, tls_pair):
    out = cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair))
    ring = out.get_relations("ring")[0]
    assert ring.local_unit_data["address"] == "192.0.2.0" and ring.local_unit_data["port"] == "6081"
    app = out.get_relations("app")[0]
    assert {k: app.local_unit_data[k] for k in ("role", "address", "port")} == {
        "role": "frontend",
        "address": "192.0.2.0",
        "port": "6081",
    }


def test_peer_join_and_depart_change_the_ring(cache_ctx, cache_host, tls_pair):
    peers = testing.PeerRelation(
        "ring",
        peers_data={1: {"address": "10.0.0.2", "port": "6081"}, 2: {"address": "10.0.0.3", "port": "6081"}},
    )
    state = dataclasses.replace(ready_state(tls_pair), relations=[peers, app_relation(0)])
    cache_ctx.run(cache_ctx.on.relation_changed(peers, remote_unit=2), state)
    assert ring_servers() == ["updown-cache-0", "updown-cache-1", "updown-cache-2"]
    assert "server updown-cache-2 10.0.0.3:6081 id 3" in haproxy_cfg()

    # unit 1 leaves: unit 2 keeps its id, so only unit 1's share of the ring moves
    gone = dataclasses.replace(peers, peers_data={2: {"address": "10.0.0.3", "port": "6081"}})
    state = dataclasses.replace(state, relations=[gone, app_relation(0)])
    out = cache_ctx.run(cache_ctx.on.relation_departed(gone, remote_unit=1, departing_unit=1), state)
    assert ring_servers() == ["updown-cache-0", "updown-cache-2"]
    assert "server updown-cache-2 10.0.0.3:6081 id 3" in haproxy_cfg()
    assert out.unit_status == testing.ActiveStatus("frontend: 2 ring units, 1 app units")


def test_peer_without_data_is_not_in_the_ring(cache_ctx, cache_host, tls_pair):
    peers = testing.PeerRelation("ring", peers_data={1: {}})
    state = dataclasses.replace(ready_state(tls_pair), relations=[peers, app_relation(0)])
    cache_ctx.run(cache_ctx.on.relation_joined(peers, remote_unit=1), state)
    assert ring_servers() == ["updown-cache-0"]


def test_origin_join_and_depart(cache_ctx, cache_host, tls_pair):
    app = app_relation(0, 1)
    state = dataclasses.replace(ready_state(tls_pair), relations=[testing.PeerRelation("ring"), app])
    out = cache_ctx.run(cache_ctx.on.relation_joined(app, remote_unit=1), state)
    assert "server updown-app-1 10.1.0.2:8000" in haproxy_cfg()
    assert "origin.add_backend(updown_app_1);" in layout().vcl.read_text()
    assert out.unit_status == testing.ActiveStatus("frontend: 1 ring units, 2 app units")

    app = dataclasses.replace(app, remote_units_data={1: {"address": "10.1.0.2", "port": "8000"}})
    state = dataclasses.replace(state, relations=[testing.PeerRelation("ring"), app])
    cache_ctx.run(cache_ctx.on.relation_departed(app, remote_unit=0, departing_unit=0), state)
    assert "updown-app-0" not in haproxy_cfg()
    vcl = layout().vcl.read_text()
    assert '"10.1.0.1"' not in vcl and '"10.1.0.2";' in vcl  # the departed unit may no longer PURGE


def test_no_origin_related_blocks(cache_ctx, cache_host, tls_pair):
    state = dataclasses.replace(ready_state(tls_pair), relations=[testing.PeerRelation("ring")])
    out = cache_ctx.run(cache_ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus("no origin: integrate with updown-app (endpoint app)")
    assert not layout().haproxy_cfg.exists()


def test_origin_related_without_data_waits(cache_ctx, cache_host, tls_pair):
    app = testing.Relation(endpoint="app", remote_app_name="updown-app", remote_units_data={0: {}})
    state = dataclasses.replace(ready_state(tls_pair), relations=[testing.PeerRelation("ring"), app])
    out = cache_ctx.run(cache_ctx.on.relation_joined(app, remote_unit=0), state)
    assert out.unit_status == testing.WaitingStatus("waiting for the updown-app units to publish their address")


def test_no_tls_blocks(cache_ctx, cache_host):
    state = testing.State(
        config=CONFIG, relations=[testing.PeerRelation("ring"), app_relation(0)], stored_states=[installed("frontend")]
    )
    out = cache_ctx.run(cache_ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "no TLS certificate: integrate with a certificates provider or set tls-secret-id"
    )
    assert not layout().haproxy_cfg.exists()


def test_invalid_config_blocks(cache_ctx, cache_host, tls_pair):
    out = cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair, **{"cache-size": "lots"}))
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith("invalid config: cache-size:")
    out = cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair, **{"public-hostname": "bad host!"}))
    assert out.unit_status.message.startswith("invalid config: public-hostname:")


def test_role_switch_refused_after_install(cache_ctx, cache_host, tls_pair):
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair))
    cache_host.clear()
    before = haproxy_cfg()
    out = cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair, role="backend"))
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith("role cannot change after deployment (deployed as frontend)")
    assert haproxy_cfg() == before and cache_host == []


def _provider_data(csr_pem: str, ca: x509.Certificate, ca_key) -> dict[str, str]:
    """What a certificates provider writes: our CSR signed by its CA."""
    import datetime as dt

    csr = x509.load_pem_x509_csr(csr_pem.encode())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    entry = {"certificate_signing_request": csr_pem, "certificate": cert_pem, "ca": ca_pem, "chain": [cert_pem, ca_pem]}
    return {"certificates": json.dumps([entry])}


def with_relation(state: testing.State, relation: testing.RelationBase) -> testing.State:
    return dataclasses.replace(state, relations=[*(r for r in state.relations if r.id != relation.id), relation])


def _issue(cache_ctx, state: testing.State, relation: testing.Relation) -> tuple[testing.State, str]:
    """Run relation-created (the library makes a key and a CSR), then sign that CSR as the provider would."""
    out = cache_ctx.run(cache_ctx.on.relation_created(relation), state)
    requested = out.get_relation(relation.id).local_unit_data
    csrs = json.loads(requested["certificate_signing_requests"])
    assert len(csrs) == 1
    return out, csrs[0]["certificate_signing_request"]


def test_certificate_available_and_rotated(cache_ctx, cache_host):
    certs = testing.Relation(endpoint="certificates", remote_app_name="ca")
    state = testing.State(
        config=CONFIG,
        relations=[testing.PeerRelation("ring"), app_relation(0), certs],
        stored_states=[installed("frontend")],
    )
    out, csr = _issue(cache_ctx, state, certs)
    assert out.unit_status == testing.WaitingStatus("waiting for the TLS certificate from the certificates provider")
    assert not layout().haproxy_cfg.exists()

    ca, ca_key = make_ca()
    certs = dataclasses.replace(out.get_relation(certs.id), remote_app_data=_provider_data(csr, ca, ca_key))
    out = cache_ctx.run(cache_ctx.on.relation_changed(certs), with_relation(out, certs))
    assert out.unit_status == testing.ActiveStatus("frontend: 1 ring units, 1 app units")
    pem = layout().tls_pem.read_text()
    assert pem.count("BEGIN CERTIFICATE") == 2 and "PRIVATE KEY" in pem
    leaf = x509.load_pem_x509_certificate(pem.encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {PUBLIC, PRIVATE}

    # rotation: the provider re-signs with a new CA; HAProxy gets the new chain
    cache_host.clear()
    ca2, ca2_key = make_ca()
    certs = dataclasses.replace(out.get_relation(certs.id), remote_app_data=_provider_data(csr, ca2, ca2_key))
    out = cache_ctx.run(cache_ctx.on.relation_changed(certs), with_relation(out, certs))
    assert layout().tls_pem.read_text() != pem
    assert ["systemctl", "reload-or-restart", "haproxy"] in cache_host
