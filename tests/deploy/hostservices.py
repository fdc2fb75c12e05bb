"""What the rehearsal runs on the host, on the bridge address only: apt-cacher-ng (the machines' apt proxy, its
cache kept between runs next to the base image) and one HAProxy that puts the test PostgreSQL and Swift (which
listen on loopback) on the bridge: PostgreSQL as TCP, Swift as plain HTTP and behind TLS (the store as the backend
caches reach it: https by host name, a certificate from the rehearsal's CA). Ports are picked free at run time.
Every process is started here and stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port(address: str, low: int = 0, high: int = 0) -> int:
    """A port nothing listens on, any (the kernel's pick) or in [low, high]."""
    import random

    candidates = random.sample(range(low, high + 1), high - low + 1) if high else [0]
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind((address, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError(f"no free port on {address} in {low}-{high}")


def wait_port(
    address: str, port: int, proc: subprocess.Popen[bytes], name: str, log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {address}:{port}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class AptProxy:
    def __init__(self, address: str, cache_dir: Path, run_dir: Path) -> None:
        self.address, self.cache_dir, self.run_dir = address, cache_dir, run_dir
        # apt-cacher-ng 3.7 fails to bind ports above 32767 ("Error resolving address for binding"): our block
        self.port = free_port(address, 24600, 24999)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self.run_dir / "apt-cacher-ng.out"
        # Our own configuration: a plain caching proxy for the URLs the machines ask for (the package's default
        # remaps Debian URLs onto a mirror list of its own, which need not be reachable from here).
        conf = self.run_dir / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "acng.conf").write_text("SupportDir: /usr/lib/apt-cacher-ng\n")
        self.proc = subprocess.Popen(
            [
                "apt-cacher-ng",
                "-c",
                str(conf),
                "ForeGround=1",
                f"Port={self.port}",
                f"BindAddress={self.address}",
                f"CacheDir={self.cache_dir}",
                f"LogDir={self.run_dir}",
                f"SocketPath={self.run_dir / 'acng.socket'}",
                f"PidFile={self.run_dir / 'acng.pid'}",
                "ExThreshold=30",  # days an unused file is kept
                "PassThroughPattern=.*:443$",
                "ReportPage=",
            ],
            stdin=subprocess.DEVNULL,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_port(self.address, self.port, self.proc, "apt-cacher-ng", log)

    def stop(self) -> None:
        stop(self.proc)


class Forwarder:
    """HAProxy on the bridge: PostgreSQL (tcp), Swift (http) and Swift behind TLS."""

    def __init__(self, address: str, run_dir: Path, pg: tuple[str, int], swift: tuple[str, int], pem: str) -> None:
        self.address, self.run_dir = address, run_dir
        self.pg_port, self.swift_port, self.swift_tls_port = (free_port(address) for _ in range(3))
        self.pg, self.swift, self.pem = pg, swift, pem
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pem = self.run_dir / "swift-site.pem"
        pem.touch(mode=0o600)
        pem.write_text(self.pem)
        cfg = self.run_dir / "forward.cfg"
        a = self.address
        cfg.write_text(
            "global\n    maxconn 2000\n"
            "defaults\n    timeout connect 5s\n    timeout client 600s\n    timeout server 600s\n"
            f"listen postgres\n    mode tcp\n    bind {a}:{self.pg_port}\n    server pg {self.pg[0]}:{self.pg[1]}\n"
            f"listen swift\n    mode http\n    bind {a}:{self.swift_port}\n"
            f"    server swift {self.swift[0]}:{self.swift[1]}\n"
            f"listen swift_tls\n    mode http\n    bind {a}:{self.swift_tls_port} ssl crt {pem}\n"
            "    http-request set-header X-Forwarded-Proto https\n"
            f"    server swift {self.swift[0]}:{self.swift[1]}\n"
        )
        log = self.run_dir / "forward.out"
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(cfg)], stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        for port in (self.pg_port, self.swift_port, self.swift_tls_port):
            wait_port(a, port, self.proc, "haproxy (forwarder)", log)

    def stop(self) -> None:
        stop(self.proc)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
