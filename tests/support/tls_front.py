"""HAProxy terminating TLS in front of plain-HTTP test services (Swift, Keystone), with a throwaway CA's
certificate for localhost: the services as a deployment behind a private CA reaches them."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from scripts.throwaway_ca import make_tls

from tests.support.server import free_port


@dataclass(frozen=True)
class TlsFront:
    urls: tuple[str, ...]  # https://localhost:<port>, one per backend, in order
    ca: str  # the CA's PEM (not in any system bundle)


@contextmanager
def tls_front(root: Path, *backends: str, probe: str = "/") -> Iterator[TlsFront]:
    """One HAProxy with a TLS frontend per `backends` URL (http://host:port); ready once each answers `probe`."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (scripts/apt-packages.txt)")
    root.mkdir(parents=True, exist_ok=True)
    chain, key = make_tls("localhost", ["localhost"])
    (root / "front.pem").write_text(chain + key)
    ports = [free_port() for _ in backends]
    cfg = ["defaults", "    mode http", "    timeout connect 5s", "    timeout client 60s", "    timeout server 60s"]
    for i, (port, backend) in enumerate(zip(ports, backends, strict=True)):
        target = urlsplit(backend)
        cfg += [
            f"frontend front{i}",
            f"    bind 127.0.0.1:{port} ssl crt {root / 'front.pem'}",
            f"    default_backend back{i}",
            f"backend back{i}",
            f"    server back{i} {target.hostname}:{target.port or 80}",
        ]
    (root / "haproxy.cfg").write_text("\n".join(cfg) + "\n")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(root / "haproxy.cfg")], stderr=subprocess.DEVNULL)
    front = TlsFront(tuple(f"https://localhost:{port}" for port in ports), chain[chain.rindex("-----BEGIN") :].strip())
    try:
        for url in front.urls:
            for _ in range(100):
                try:
                    httpx.get(f"{url}{probe}", verify=False, timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
        yield front
    finally:
        proc.terminate()
        proc.wait(10)
