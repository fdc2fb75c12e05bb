"""HAProxy's request log, as the real HAProxy writes it from the rendered config: no link token and no query
string (a TempURL signature, a token a client put there) ever reaches it; COS forwards these logs."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import httpx
from scripts.throwaway_ca import make_tls

import workload
from models import CacheConfig, CacheState, Origin, RingMember, Telemetry, TLSMaterial
from tests.charms.standins import named_servers
from tests.charms.test_cache_rendered_configs import need
from tests.support.server import free_port

SECRETS = ("linktoken0123456789", "querysecret0123456789", "plainquerysecret42")


def test_the_request_log_has_paths_without_link_tokens_or_queries(tmp_path: Path) -> None:
    chain, key = make_tls("updown.test", ["updown.test"], ["127.0.0.1"])
    https, http = free_port(), free_port()
    with named_servers("X-Cache-Unit", ["updown-cache/0", "updown-app/0"]) as ports:
        state = CacheState(
            unit_name="updown-cache/0",
            address="127.0.0.1",
            bind_address="127.0.0.1",
            config=CacheConfig(public_hostname="updown.test", http_port=http, https_port=https),
            ring=(RingMember(unit_name="updown-cache/0", address="127.0.0.1", port=ports["updown-cache/0"]),),
            origins=(Origin(unit_name="updown-app/0", address="127.0.0.1", port=ports["updown-app/0"]),),
            tls=TLSMaterial(chain=chain, key=key),
            telemetry=Telemetry(haproxy=free_port()),
        )
        layout = workload.Layout.under(tmp_path)
        workload.write_files(workload.rendered_files(state, layout))
        layout.haproxy_socket.parent.mkdir(parents=True, exist_ok=True)
        log_path = tmp_path / "haproxy.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([need("haproxy"), "-db", "-f", str(layout.haproxy_cfg)], stdout=log, stderr=log)
        try:
            context = ssl.create_default_context(cadata=chain)
            with httpx.Client(verify=context, headers={"Host": "updown.test"}, timeout=5) as client:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        client.get(f"https://127.0.0.1:{https}/up/1/probe.deb")
                        break
                    except httpx.HTTPError:
                        assert time.monotonic() < deadline, log_path.read_text()
                        time.sleep(0.2)
                client.get(f"https://127.0.0.1:{https}/-/link/{SECRETS[0]}/pkg/1/f.deb?temp_url_sig={SECRETS[1]}")
                client.get(f"https://127.0.0.1:{https}/pkg/1/f.deb?token={SECRETS[1]}")
                client.get(f"http://127.0.0.1:{http}/-/link/{SECRETS[0]}/pkg/1/f.deb?x={SECRETS[2]}")
                time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(10)
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if "/pkg/1/f.deb" in line]
    assert len(lines) == 3, text
    assert not any(secret in text for secret in SECRETS), text
    assert sum("GET /-/link/-/pkg/1/f.deb" in line for line in lines) == 2, lines
    assert any(" 200 " in line and "GET /pkg/1/f.deb HTTP/1.1" in line for line in lines), lines
