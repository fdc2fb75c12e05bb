"""The configs the cache charm renders, checked by the real binaries (`haproxy -c`, `varnishd -C`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import workload
from models import CacheConfig, CacheState, Origin, RingMember, TLSMaterial


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        pytest.fail(f"{binary} is not installed (scripts/apt-packages.txt; scripts/install-deps.sh installs it)")
    return path


def ring(n: int) -> tuple[RingMember, ...]:
    return tuple(RingMember(unit_name=f"updown-cache/{i}", address=f"10.0.0.{i + 1}", port=6081) for i in range(n))


def origins(n: int) -> tuple[Origin, ...]:
    return tuple(Origin(unit_name=f"updown-app/{i}", address=f"10.1.0.{i + 1}", port=8000) for i in range(n))


STATES = {
    "one-unit": dict(ring=ring(1), origins=origins(1)),
    "three-units-two-apps": dict(ring=ring(3), origins=origins(2)),
    "no-origin-yet": dict(ring=ring(2), origins=()),
    "no-private-host-odd-ports": dict(
        ring=ring(2),
        origins=origins(1),
        config=dict(private_hostname="", http_port=18080, https_port=18443, cache_port=16081, grace=0),
    ),
}


def make_state(tls_pair: tuple[str, str], name: str) -> CacheState:
    spec = dict(STATES[name])
    config = {"public_hostname": "updown.test", "private_hostname": "private.updown.test", **spec.pop("config", {})}
    chain, key = tls_pair
    return CacheState(
        unit_name="updown-cache/0",
        address="10.0.0.1",
        config=CacheConfig(**config),
        tls=TLSMaterial(chain=chain, key=key),
        **spec,
    )


@pytest.mark.parametrize("name", sorted(STATES))
def test_haproxy_accepts_the_rendered_config(tmp_path: Path, tls_pair, name: str) -> None:
    layout = workload.Layout.under(tmp_path)
    workload.write_files(workload.rendered_files(make_state(tls_pair, name), layout))
    result = subprocess.run(
        [need("haproxy"), "-c", "-f", str(layout.haproxy_cfg)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALERT" not in result.stderr and "WARNING" not in result.stderr, result.stderr


@pytest.mark.parametrize("name", sorted(STATES))
def test_varnish_compiles_the_rendered_vcl(tmp_path: Path, tls_pair, name: str) -> None:
    layout = workload.Layout.under(tmp_path)
    workload.write_files(workload.rendered_files(make_state(tls_pair, name), layout))
    result = subprocess.run(
        # -j none: compile as the current user (pytest's tmp_path is not readable by varnish's jail user)
        [need("varnishd"), "-C", "-j", "none", "-f", str(layout.vcl), "-n", str(tmp_path / "varnish")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_ring_is_identical_on_every_unit(tls_pair) -> None:
    """Each unit renders the same ring, whatever order the peers were seen in: the hash must agree."""
    a = make_state(tls_pair, "three-units-two-apps")
    b = a.model_copy(update={"unit_name": "updown-cache/2", "address": "10.0.0.3"})
    b = CacheState.model_validate({**b.model_dump(), "ring": list(reversed(a.ring))})
    layout = workload.Layout()

    def backend_ring(cfg: str) -> str:
        return cfg[cfg.index("backend ring") : cfg.index("backend app")]

    assert backend_ring(workload.render_haproxy(a, layout)) == backend_ring(workload.render_haproxy(b, layout))


def test_check_configs_as_the_unit_runs_it(tls_pair) -> None:
    """workload.check_configs, unmocked (varnishd in its default jail), on files written by workload.write_files."""
    need("haproxy"), need("varnishd")
    with tempfile.TemporaryDirectory() as root:
        Path(root).chmod(0o755)  # like /etc: readable by varnish's unprivileged user
        layout = workload.Layout.under(Path(root))
        state = make_state(tls_pair, "three-units-two-apps")
        workload.write_files(workload.rendered_files(state, layout), private=frozenset({layout.tls_pem}))
        workload.check_configs(layout)
        assert (layout.tls_pem.stat().st_mode & 0o777) == 0o600 and (layout.vcl.stat().st_mode & 0o777) == 0o644
