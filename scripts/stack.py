#!/usr/bin/env python3
"""The caching tier on loopback: one `updown serve` (tls = false, behind the proxies) and two frontend cache
"units", each a real HAProxy + Varnish whose configs are rendered by the cache charm's workload code from the
same CacheState objects the charm builds. Used by scripts/stack.sh (start | stop | env)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "charms" / "cache" / "src")]

from tests.charms.tls import make_tls  # noqa: E402

import workload  # noqa: E402
from models import CacheConfig, CacheState, Origin, RingMember, TLSMaterial  # noqa: E402

UNITS = 2
PUBLIC, PRIVATE = "localhost", "private.localhost"


def ports(base: int) -> dict[str, int]:
    p = {"app": base, "app_redirect": base + 1}
    for i in range(UNITS):
        p |= {f"http{i}": base + 10 + 10 * i, f"https{i}": base + 11 + 10 * i, f"cache{i}": base + 12 + 10 * i}
        p[f"admin{i}"] = base + 13 + 10 * i
    return p


def wait_http(url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
            with urllib.request.urlopen(request, timeout=2, context=context):  # noqa: S310
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not come up: {exc}") from exc
            time.sleep(0.2)


def wait_ring_up(admin_socket: Path, members: int) -> None:
    """Until this HAProxy sees every ring member UP (its stats socket)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(admin_socket))
                sock.sendall(b"show stat\n")
                stat = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
            up = [line for line in stat.splitlines() if line.startswith("ring,updown-cache-") and ",UP," in line]
            if len(up) == members:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the ring did not come up in {admin_socket}")
        time.sleep(0.2)


def unit_states(p: dict[str, int], tls: TLSMaterial) -> list[CacheState]:
    ring = tuple(
        RingMember(unit_name=f"updown-cache/{i}", address="127.0.0.1", port=p[f"cache{i}"]) for i in range(UNITS)
    )
    origins = (Origin(unit_name="updown-app/0", address="127.0.0.1", port=p["app"]),)
    return [
        CacheState(
            unit_name=f"updown-cache/{i}",
            address="127.0.0.1",
            bind_address="127.0.0.1",
            config=CacheConfig(
                public_hostname=PUBLIC,
                private_hostname=PRIVATE,
                http_port=p[f"http{i}"],
                https_port=p[f"https{i}"],
                cache_port=p[f"cache{i}"],
                health_check_interval=1,
                cache_size="64M",
            ),
            ring=ring,
            origins=origins,
            tls=tls,
        )
        for i in range(UNITS)
    ]


def start(run: Path, base: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    p = ports(base)
    pids: list[tuple[str, Path]] = []

    def record() -> None:
        (run / "pids.json").write_text(json.dumps([(name, str(path)) for name, path in pids]))

    chain, key = make_tls(PUBLIC, [PUBLIC, PRIVATE], ["127.0.0.1"])
    (run / "ca.pem").write_text(chain)
    key_id, secret = "stack", secrets.token_hex(32)
    env = os.environ | {
        "UPDOWN_DATA_DIR": str(run / "app"),
        "UPDOWN_TLS": "false",
        "UPDOWN_BIND": "127.0.0.1",
        "UPDOWN_PORT": str(p["app"]),
        "UPDOWN_HTTP_PORT": str(p["app_redirect"]),
        "UPDOWN_TRUSTED_PROXIES": json.dumps(["127.0.0.1"]),
        "UPDOWN_PUBLIC_HOST": PUBLIC,
        "UPDOWN_PRIVATE_HOST": PRIVATE,
        "UPDOWN_HMAC_KEYS": json.dumps({key_id: secret}),
        "UPDOWN_LOOKUP_CACHE_TTL": "0",
    }
    log = (run / "app.log").open("ab")
    app = subprocess.Popen(
        [sys.executable, "-m", "updown_app", "serve"], env=env, stdout=log, stderr=log, start_new_session=True
    )
    (run / "app.pid").write_text(str(app.pid))
    pids.append(("app", run / "app.pid"))
    record()
    wait_http(f"http://127.0.0.1:{p['app']}/healthz", headers={"X-Forwarded-Proto": "https"})

    tls = TLSMaterial(chain=chain, key=key)
    states = unit_states(p, tls)
    layouts = [workload.Layout.under(run / f"unit{i}") for i in range(UNITS)]
    # Every Varnish first, then every HAProxy: a ring member seen down at start-up stays out of the ring until
    # `rise` checks pass, and the two units would disagree about owners meanwhile.
    for i, (state, layout) in enumerate(zip(states, layouts, strict=True)):
        unit = run / f"unit{i}"
        workload.write_files(workload.rendered_files(state, layout), private=frozenset({layout.tls_pem}))
        (unit / "state.json").write_text(state.model_dump_json(indent=2, exclude={"tls"}))
        layout.haproxy_socket.parent.mkdir(parents=True, exist_ok=True)
        varnish_pid = unit / "varnishd.pid"
        subprocess.run(
            ["varnishd", "-j", "none", "-n", str(unit / "varnish"), "-T", f"127.0.0.1:{p[f'admin{i}']}", "-S", "none",
             "-P", str(varnish_pid), *workload.varnishd_args(state, layout.vcl)],
            check=True,
        )  # fmt: skip
        pids.append((f"varnish{i}", varnish_pid))
        record()
        wait_http(f"http://127.0.0.1:{p[f'cache{i}']}{workload.CACHE_HEALTH_PATH}")
    for i, layout in enumerate(layouts):
        haproxy_pid = run / f"unit{i}" / "haproxy.pid"
        subprocess.run(["haproxy", "-D", "-p", str(haproxy_pid), "-f", str(layout.haproxy_cfg)], check=True)
        pids.append((f"haproxy{i}", haproxy_pid))
        record()
    for layout in layouts:
        wait_ring_up(layout.haproxy_socket, UNITS)

    context = ssl.create_default_context(cafile=str(run / "ca.pem"))
    for i in range(UNITS):
        wait_http(f"https://{PUBLIC}:{p[f'https{i}']}/healthz", context=context)
    frontends = ",".join(f"https://{PUBLIC}:{p[f'https{i}']}" for i in range(UNITS))
    plain = ",".join(f"http://{PUBLIC}:{p[f'http{i}']}" for i in range(UNITS))
    caches = ",".join(f"updown-cache/{i}=http://127.0.0.1:{p[f'cache{i}']}" for i in range(UNITS))
    (run / "stack.env").write_text(
        f"UPDOWN_TEST_STACK_FRONTENDS={frontends}\n"
        f"UPDOWN_TEST_STACK_HTTP={plain}\n"
        f"UPDOWN_TEST_STACK_CACHES={caches}\n"
        f"UPDOWN_TEST_STACK_CA={run / 'ca.pem'}\n"
        f"UPDOWN_TEST_STACK_KEY_ID={key_id}\n"
        f"UPDOWN_TEST_STACK_KEY={secret}\n"
        f"UPDOWN_TEST_STACK_APP=http://127.0.0.1:{p['app']}\n"
        f"UPDOWN_TEST_STACK_APP_PID={app.pid}\n"
    )
    print(f"stack up: frontends {frontends}; env in {run / 'stack.env'}")


def stop(run: Path) -> None:
    listing = run / "pids.json"
    if not listing.exists():
        return
    for name, pid_file in reversed(json.loads(listing.read_text())):
        path = Path(pid_file)
        if not path.exists():
            continue
        pid = int(path.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            print(f"{name} ({pid}) did not stop on SIGTERM; killing it", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)
    listing.unlink()


if __name__ == "__main__":
    command, run_dir = sys.argv[1], Path(sys.argv[2])
    if command == "start":
        try:
            start(run_dir, int(os.environ.get("UPDOWN_STACK_PORT", "17000")))
        except BaseException:
            stop(run_dir)
            raise
    elif command == "stop":
        stop(run_dir)
    else:
        raise SystemExit(f"unknown command {command!r}")
