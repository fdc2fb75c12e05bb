"""The ring as the real HAProxy runs it, from configs rendered by the workload: a unit joining takes only its
share of the URLs, a unit leaving gives up only its own (the server ids are the Juju unit numbers)."""

from __future__ import annotations

import collections
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from scripts.throwaway_ca import make_tls

import workload
from models import CacheConfig, CacheState, Origin, RingMember, Telemetry, TLSMaterial
from tests.charms.standins import named_servers
from tests.charms.test_cache_rendered_configs import need
from tests.support.server import free_port

URLS = [f"/pkg{i}/1/file{i}.snap" for i in range(300)]


@pytest.fixture(scope="module")
def members() -> Iterator[dict[int, int]]:
    """Stand-ins for the Varnish of units 0..3: unit number -> port; each answers with its unit name."""
    with named_servers("X-Cache-Unit", [f"updown-cache/{u}" for u in range(4)]) as ports:
        yield {int(name.rsplit("/", 1)[1]): port for name, port in ports.items()}


@pytest.fixture(scope="module")
def tls() -> TLSMaterial:
    chain, key = make_tls("updown.test", ["updown.test"], ["127.0.0.1"])
    return TLSMaterial(chain=chain, key=key)


def owners(tmp: Path, tls: TLSMaterial, members: dict[int, int], ring: list[int]) -> dict[str, str]:
    """Start HAProxy with the ring of `ring` units, map every URL to the unit that answers it."""
    https = free_port()
    state = CacheState(
        unit_name="updown-cache/0",
        address="127.0.0.1",
        bind_address="127.0.0.1",
        config=CacheConfig(
            public_hostname="updown.test", http_port=free_port(), https_port=https, health_check_interval=1
        ),
        ring=tuple(RingMember(unit_name=f"updown-cache/{u}", address="127.0.0.1", port=members[u]) for u in ring),
        origins=(Origin(unit_name="updown-app/0", address="127.0.0.1", port=9),),
        tls=tls,
        telemetry=Telemetry(haproxy=free_port()),  # its metrics frontend too on a port of its own
    )
    layout = workload.Layout.under(tmp)
    workload.write_files(workload.rendered_files(state, layout))
    layout.haproxy_socket.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([need("haproxy"), "-db", "-f", str(layout.haproxy_cfg)], stdout=subprocess.DEVNULL)
    try:
        context = ssl.create_default_context(cafile=None, cadata=tls.chain)
        with httpx.Client(verify=context, headers={"Host": "updown.test"}, timeout=5) as client:
            deadline = time.monotonic() + 20
            while True:  # until HAProxy listens and has seen every member up
                try:
                    seen = {client.get(f"https://127.0.0.1:{https}{u}").headers["X-Cache-Unit"] for u in URLS[:60]}
                    if len(seen) == len(ring):
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "HAProxy did not come up with the whole ring"
                time.sleep(0.3)
            return {u: client.get(f"https://127.0.0.1:{https}{u}").headers["X-Cache-Unit"] for u in URLS}
    finally:
        proc.terminate()
        proc.wait(10)


def test_join_moves_only_the_new_units_share_and_leave_only_the_leavers(tmp_path, tls, members) -> None:
    two = owners(tmp_path / "two", tls, members, [0, 1])
    assert owners(tmp_path / "again", tls, members, [1, 0]) == two  # deterministic, whatever the peer order

    three = owners(tmp_path / "three", tls, members, [0, 1, 2])
    moved = [u for u in URLS if two[u] != three[u]]
    assert all(three[u] == "updown-cache/2" for u in moved)  # URLs only move to the unit that joined
    assert 0.15 * len(URLS) <= len(moved) <= 0.45 * len(URLS), collections.Counter(three.values())

    # unit 1 leaves (from the middle of the list): only its URLs move
    without_1 = owners(tmp_path / "without1", tls, members, [0, 2])
    moved = [u for u in URLS if three[u] != without_1[u]]
    assert moved and all(three[u] == "updown-cache/1" for u in moved)
    assert all(without_1[u] == three[u] for u in URLS if three[u] != "updown-cache/1")
