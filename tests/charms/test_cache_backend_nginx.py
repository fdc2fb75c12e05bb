"""The backend role's nginx.conf, checked by the real `nginx -t`, for the charm's layout and the local one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import workload
from models import CacheConfig, CacheState, Origin
from tests.charms.test_cache_rendered_configs import need


def backend_state(**config: object) -> CacheState:
    return CacheState(
        unit_name="updown-cache-backend/0",
        address="10.0.0.1",
        config=CacheConfig(**{"role": "backend", "upstream_url": "https://localhost:8443", **config}),
        origins=tuple(Origin(unit_name=f"updown-app/{i}", address=f"10.1.0.{i + 1}", port=8000) for i in range(2)),
    )


STATES = {
    "defaults": {},
    "own-ca-big-cache": {"cache_size": "2T", "slice_size": "1M", "cache_port": 21080},
    "default-port-upstream": {"upstream_url": "https://localhost"},
}


@pytest.mark.parametrize("name", sorted(STATES))
def test_nginx_accepts_the_rendered_config(tmp_path: Path, tls_pair, name: str) -> None:
    need("nginx")
    config = dict(STATES[name])
    if name == "own-ca-big-cache":
        chain, _ = tls_pair
        config["upstream_ca"] = chain[chain.rindex("-----BEGIN CERTIFICATE-----") :]
    state = backend_state(**config)
    layout = workload.Layout.under(tmp_path)
    # The charm's rendering (user www-data), its files written where the layout says.
    workload.write_files(workload.rendered_backend_files(state, layout))
    workload.backend_dirs(layout)
    result = subprocess.run(workload.nginx_command(layout, "-t"), capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr
    if "upstream_ca" in config:
        assert f"proxy_ssl_trusted_certificate {layout.nginx_ca};" in layout.nginx_conf.read_text()


def test_nginx_refuses_a_broken_ca(tmp_path: Path) -> None:
    """A CA that is PEM-shaped but not a certificate passes the charm's check; nginx -t still refuses it, so
    the charm never reloads into it."""
    need("nginx")
    bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
    state = backend_state(upstream_ca=bogus)
    layout = workload.Layout.under(tmp_path)
    workload.write_files(workload.rendered_backend_files(state, layout))
    workload.backend_dirs(layout)
    result = subprocess.run(workload.nginx_command(layout, "-t"), capture_output=True, text=True, check=False)
    assert result.returncode != 0


def test_local_backend_checks_and_returns_the_foreground_command(tmp_path: Path) -> None:
    need("nginx")
    layout = workload.Layout.under(tmp_path)
    argv = workload.local_backend(backend_state(), layout)
    assert argv[-2:] == ["-g", "daemon off;"] and str(layout.nginx_conf) in argv
    conf = layout.nginx_conf.read_text()
    for inside in (layout.nginx_pid, layout.nginx_cache_dir, layout.nginx_temp_dir, layout.nginx_access_log):
        assert str(inside).startswith(str(tmp_path)) and str(inside) in conf
