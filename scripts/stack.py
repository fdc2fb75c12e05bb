#!/usr/bin/env python3
"""The whole updown stack on loopback, without Juju: PostgreSQL and Swift (scripts/services/, reused when the test
command already started them), two `updown serve` app units sharing them, two frontend cache units (HAProxy +
Varnish each) and one backend cache unit (nginx), every "unit" on its own ports. The cache units' configs are
rendered by the cache charm's workload code from the same CacheState objects the charm builds; one throwaway CA
signs the certificate of the frontends and of the TLS terminator in front of Swift (the store is reached over
HTTPS). Used by scripts/stack.sh: start | stop | env | add-unit N | remove-unit N."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "charms" / "cache" / "src"), str(ROOT / "charms" / "common")]

import charm_modules  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from throwaway_ca import make_tls  # noqa: E402

import workload  # noqa: E402
from models import CacheConfig, CacheState, Origin, RingMember, Telemetry, TLSMaterial  # noqa: E402
from updown_charms.values import Role  # noqa: E402

# The app units are rendered by the updown-app charm's own code (its `models` and `workload` are other modules
# than the cache charm's of the same names).
_app = charm_modules.load("updown-app", ("models", "workload"))
app_models, app_workload = _app["models"], _app["workload"]

APPS = 2
FRONTENDS = 2
PUBLIC, PRIVATE = "localhost", "private.localhost"
SWIFT_USER, SWIFT_KEY = "test:tester", "testing"  # the tempauth account of scripts/services/swift.sh
SSO_CLIENT_ID = "updown-stack"


def ports(base: int) -> dict[str, int]:
    p = {"sso": base + 5, "store": base + 6, "swift_tls": base + 7, "backend0": base + 50}
    p |= {"nginx_status0": base + 51, "nginx_exporter0": base + 52}
    for i in range(APPS):
        p[f"app{i}"] = base + 2 * i
    for i in range(4):  # frontend units 0..3 (add-unit may add the third and fourth)
        p |= {f"http{i}": base + 10 + 10 * i, f"https{i}": base + 11 + 10 * i, f"cache{i}": base + 12 + 10 * i}
        p[f"admin{i}"] = base + 13 + 10 * i
        # the metrics endpoints the COS agent would scrape on the unit: HAProxy's, the Varnish exporter
        p |= {f"metrics{i}": base + 14 + 10 * i, f"varnish_exporter{i}": base + 15 + 10 * i}
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


def ring_up(admin_socket: Path) -> set[str]:
    """The ring members this HAProxy sees UP (its stats socket)."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(admin_socket))
            sock.sendall(b"show stat\n")
            stat = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    except OSError:
        return set()
    return {line.split(",")[1] for line in stat.splitlines() if line.startswith("ring,updown-cache-") and ",UP" in line}


def wait_ring(admin_socket: Path, members: set[str]) -> None:
    deadline = time.monotonic() + 30
    while ring_up(admin_socket) != members:
        if time.monotonic() > deadline:
            raise SystemExit(f"{admin_socket}: ring is {ring_up(admin_socket)}, expected {members}")
        time.sleep(0.2)


class Stack:
    """The stack's state directory: ports, PID files (pids.json), the units' states."""

    def __init__(self, run: Path, base: int) -> None:
        self.run = run
        self.p = ports(base)
        self.pids: list[tuple[str, str]] = (
            json.loads((run / "pids.json").read_text()) if (run / "pids.json").exists() else []
        )

    def record(self, name: str, pid_file: Path) -> None:
        self.pids = [(n, f) for n, f in self.pids if n != name] + [(name, str(pid_file))]
        (self.run / "pids.json").write_text(json.dumps(self.pids))

    def unit_dir(self, i: int) -> Path:
        return self.run / f"unit{i}"

    def layout(self, i: int) -> workload.Layout:
        return workload.Layout.under(self.unit_dir(i))

    @property
    def members(self) -> list[int]:
        """The frontend units currently in the ring."""
        members: list[int] = json.loads((self.run / "members.json").read_text())
        return members

    @members.setter
    def members(self, value: list[int]) -> None:
        (self.run / "members.json").write_text(json.dumps(sorted(value)))

    def cache_units(self, frontends: set[int]) -> tuple[Any, ...]:
        """The cache units the app units know (what the updown-app charm reads from its cache relations)."""
        units = [
            app_models.CacheUnit(
                unit_name=f"updown-cache/{i}", role=Role.FRONTEND, address="127.0.0.1", port=self.p[f"cache{i}"]
            )
            for i in sorted(frontends)
        ]
        backend = app_models.CacheUnit(
            unit_name="updown-cache-backend/0", role=Role.BACKEND, address="127.0.0.1", port=self.p["backend0"]
        )
        return (*units, backend)

    def app_layout(self, i: int) -> Any:
        return app_workload.Layout.under(self.run / f"app{i}")

    def write_cache_units(self, frontends: set[int]) -> None:
        """caches.units_file of each app unit, as the updown-app charm writes it when cache units come and go:
        the running apps re-read it (purges reach a joining unit without an app restart)."""
        rendered = app_workload.render_cache_units(self.cache_units(frontends))
        for i in range(APPS):
            app_workload.write_files({self.app_layout(i).cache_units: rendered})

    def states(self, members: list[int], tls: TLSMaterial) -> dict[int, CacheState]:
        p = self.p
        ring = tuple(
            RingMember(unit_name=f"updown-cache/{i}", address="127.0.0.1", port=p[f"cache{i}"]) for i in members
        )
        origins = self.origins()
        return {
            i: CacheState(
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
                    cache_size="256M",
                ),
                ring=ring,
                origins=origins,
                tls=tls,
                telemetry=Telemetry(haproxy=p[f"metrics{i}"], varnish_exporter=p[f"varnish_exporter{i}"]),
            )
            for i in members
        }

    def tls(self) -> TLSMaterial:
        return TLSMaterial(chain=(self.run / "ca.pem").read_text(), key=(self.run / "tls.key").read_text())

    # -- processes ---------------------------------------------------------------------------------------------

    def start_varnish(self, i: int, state: CacheState) -> None:
        unit, layout = self.unit_dir(i), self.layout(i)
        workload.write_files(workload.rendered_files(state, layout), private=frozenset({layout.tls_pem}))
        (unit / "state.json").write_text(state.model_dump_json(indent=2, exclude={"tls"}))
        layout.haproxy_socket.parent.mkdir(parents=True, exist_ok=True)
        pid_file = unit / "varnishd.pid"
        subprocess.run(
            ["varnishd", "-j", "none", "-n", str(unit / "varnish"), "-T", f"127.0.0.1:{self.p[f'admin{i}']}",
             "-S", "none", "-P", str(pid_file), *workload.varnishd_args(state, layout.vcl)],
            check=True,
        )  # fmt: skip
        self.record(f"varnish{i}", pid_file)
        wait_http(f"http://127.0.0.1:{self.p[f'cache{i}']}{workload.CACHE_HEALTH_PATH}")
        argv = [
            exporter(workload.VARNISH_EXPORTER),
            "-n",
            str(unit / "varnish"),
            *workload.varnish_exporter_args(state.telemetry),
        ]
        self.spawn(f"varnish_exporter{i}", argv)
        wait_http(f"http://127.0.0.1:{self.p[f'varnish_exporter{i}']}/metrics")

    def spawn(self, name: str, argv: list[str]) -> None:
        """A process of the stack in the foreground of its own session, its output in <name>.log."""
        log = (self.run / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        (self.run / f"{name}.pid").write_text(str(process.pid))
        self.record(name, self.run / f"{name}.pid")

    def start_or_reload_haproxy(self, i: int, state: CacheState) -> None:
        """Render this unit's files again (the ring changed) and start HAProxy, or hand over to a new process
        (-sf: the old one finishes its connections), as `systemctl reload` does on a unit."""
        layout = self.layout(i)
        workload.write_files(workload.rendered_files(state, layout), private=frozenset({layout.tls_pem}))
        pid_file = self.unit_dir(i) / "haproxy.pid"
        old = pid_file.read_text().split() if pid_file.exists() else []
        subprocess.run(
            ["haproxy", "-D", "-p", str(pid_file), "-f", str(layout.haproxy_cfg), *(["-sf", *old] if old else [])],
            check=True,
        )
        self.record(f"haproxy{i}", pid_file)

    def start_backend(self) -> None:
        """The backend cache unit (nginx): the app units read objects through it, it reads Swift over HTTPS."""
        state = CacheState(
            unit_name="updown-cache-backend/0",
            address="127.0.0.1",
            bind_address="127.0.0.1",
            config=CacheConfig(
                role=Role.BACKEND,
                # A hostname: nginx checks the store's certificate against its DNS names only.
                upstream_url=f"https://localhost:{self.p['swift_tls']}",
                upstream_ca=(self.run / "ca.pem").read_text(),
                cache_port=self.p["backend0"],
                slice_size="8M",
                cache_size="2G",
            ),
            origins=self.origins(),
            telemetry=Telemetry(nginx_status=self.p["nginx_status0"], nginx_exporter=self.p["nginx_exporter0"]),
        )
        argv = workload.local_backend(state, workload.Layout.under(self.run / "backend0"))
        log = (self.run / "backend0.log").open("ab")
        nginx = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        (self.run / "backend0.pid").write_text(str(nginx.pid))
        self.record("backend0", self.run / "backend0.pid")
        wait_http(f"http://127.0.0.1:{self.p['backend0']}{workload.CACHE_HEALTH_PATH}")
        self.spawn(
            "nginx_exporter0", [exporter(workload.NGINX_EXPORTER), *workload.nginx_exporter_args(state.telemetry)]
        )
        wait_http(f"http://127.0.0.1:{self.p['nginx_exporter0']}/metrics")

    def origins(self) -> tuple[Origin, ...]:
        return tuple(
            Origin(unit_name=f"updown-app/{i}", address="127.0.0.1", port=self.p[f"app{i}"]) for i in range(APPS)
        )

    def stop_pid_file(self, name: str) -> None:
        for n, pid_file in list(self.pids):
            if n == name:
                stop_pid(n, Path(pid_file))
        self.pids = [(n, f) for n, f in self.pids if n != name]
        (self.run / "pids.json").write_text(json.dumps(self.pids))


def exporter(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed (scripts/apt-packages.txt; scripts/install-deps.sh installs it)")
    return found


def stop_pid(name: str, path: Path) -> None:
    if not path.exists():
        return
    for word in path.read_text().split():
        pid = int(word)
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


# -- start ---------------------------------------------------------------------------------------------------------


def service(run: Path, name: str, env_var: str) -> None:
    """PostgreSQL/Swift: reuse what the test command started, else start it here (and stop it on `stop`)."""
    if os.environ.get(env_var):
        return
    env = os.environ | {"UPDOWN_RUN_DIR": str(run / "services")}
    subprocess.run([str(ROOT / "scripts" / "services" / f"{name}.sh"), "start"], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    started = json.loads((run / "services.json").read_text()) if (run / "services.json").exists() else []
    (run / "services.json").write_text(json.dumps([*started, name]))


def postgres_url(run: Path) -> str:
    if os.environ.get("UPDOWN_TEST_POSTGRES_URL"):
        return os.environ["UPDOWN_TEST_POSTGRES_URL"]
    out = subprocess.run(
        [str(ROOT / "scripts" / "services" / "postgres.sh"), "url"],
        env=os.environ | {"UPDOWN_RUN_DIR": str(run / "services")},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def fresh_database(admin_url: str, name: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    async def run() -> None:
        conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    return admin_url.rpartition("/")[0] + "/" + name


def swift_tls_config(stack: Stack, swift_port: int) -> Path:
    """HAProxy terminating TLS in front of the plain-HTTP test Swift: the store as a deployment reaches it."""
    cfg = stack.run / "swift-tls" / "haproxy.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    (cfg.parent / "site.pem").write_text(stack.tls().as_haproxy_pem())
    cfg.write_text(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 300s\n    timeout server 300s\n"
        f"frontend swift_tls\n    bind 127.0.0.1:{stack.p['swift_tls']} ssl crt {cfg.parent / 'site.pem'}\n"
        "    http-request set-header X-Forwarded-Proto https\n    default_backend swift\n"
        f"backend swift\n    server swift 127.0.0.1:{swift_port}\n"
    )
    return cfg


def app_state(stack: Stack, i: int, database_url: str, container: str, key_id: str, secret: str) -> Any:
    """App unit i as the updown-app charm would see it: its config options, secrets, database and caches."""
    p, run = stack.p, stack.run
    store = f"https://127.0.0.1:{p['swift_tls']}"
    db = urlsplit(database_url)
    config = app_models.AppConfig(
        public_hostname=PUBLIC,
        private_hostname=PRIVATE,
        port=p[f"app{i}"],
        max_upload_size=1024**3,
        storage_backend="swift",
        swift_auth="tempauth",
        swift_auth_url=f"{store}/auth/v1.0",
        swift_storage_url=f"{store}/v1/AUTH_test",
        swift_username=SWIFT_USER,
        swift_container=container,
        # the store's certificate comes from the throwaway CA: trusted as the charm's storage-ca option has it
        storage_ca=(run / "ca.pem").read_text(),
        # Private downloads: the SSO and the store are deployer-provided; the stack tests run stand-ins there.
        sso_mode="introspection",
        sso_introspection_url=f"http://127.0.0.1:{p['sso']}/introspect",
        sso_client_id=SSO_CLIENT_ID,
        sso_timeout=2,
        access_check_url=f"http://127.0.0.1:{p['store']}/api/v1/access-check",
        access_check_timeout=2,
        trusted_networks="",
    )
    return app_models.AppState(
        unit_name=f"updown-app/{i}",
        address="127.0.0.1",
        config=config,
        database=app_models.Database(
            host=db.hostname or "127.0.0.1",
            port=db.port or 5432,
            name=db.path.lstrip("/"),
            username=db.username or "postgres",
            password=SecretStr(db.password or ""),
        ),
        secrets=app_models.Secrets(
            hmac_keys={key_id: SecretStr(secret)},
            swift_password=SecretStr(SWIFT_KEY),
            swift_temp_url_key=SecretStr((run / "temp-url-key").read_text()),
            sso_client_secret=SecretStr((run / "sso-client-secret").read_text()),
        ),
        caches=stack.cache_units(set(range(FRONTENDS))),  # where start() begins
        workers=1,
    )


def write_app_unit(stack: Stack, state: Any) -> tuple[Path, dict[str, str]]:
    """Render app unit files with the charm's workload code; returns its config file and the environment
    `updown` runs with there."""
    i = int(state.unit_name.rsplit("/", 1)[1])
    layout = stack.app_layout(i)
    # The test Swift's temp URL key is a container key; the charm's deployments set an account key.
    settings = app_workload.render_settings(state, layout)
    settings["storage"]["swift"]["temp_url_key_scope"] = "container"
    files = {
        layout.config: tomli_w.dumps(settings),
        layout.hmac_keys: app_workload.render_hmac_keys(state),
        layout.cache_units: app_workload.render_cache_units(state.caches),
        layout.store_ca: state.store_ca,
    }
    app_workload.write_files(files, private=layout.secret_files)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    return layout.config, os.environ | {"UPDOWN_CONFIG": str(layout.config)}


def start(run: Path, base: int) -> None:
    if (run / "pids.json").exists():
        raise SystemExit(f"a stack is already running in {run} (scripts/stack.sh stop)")
    for old in run.glob("unit*"):  # a previous run's configs and PID files
        shutil.rmtree(old)
    run.mkdir(parents=True, exist_ok=True)
    stack = Stack(run, base)
    p = stack.p

    service(run, "postgres", "UPDOWN_TEST_POSTGRES_URL")
    service(run, "swift", "UPDOWN_TEST_SWIFT_URL")
    swift_port = int(os.environ.get("UPDOWN_TEST_SWIFT_URL", "http://127.0.0.1:18080").rsplit(":", 1)[1])

    chain, key = make_tls(PUBLIC, [PUBLIC, PRIVATE], ["127.0.0.1"])
    (run / "ca.pem").write_text(chain)
    (run / "tls.key").write_text(key)
    (run / "tls.key").chmod(0o600)
    for name in ("temp-url-key", "sso-client-secret"):
        (run / name).write_text(secrets.token_hex(24))
    key_id, secret = "stack", secrets.token_hex(32)

    cfg = swift_tls_config(stack, swift_port)
    pid_file = cfg.parent / "haproxy.pid"
    subprocess.run(["haproxy", "-D", "-p", str(pid_file), "-f", str(cfg)], check=True)
    stack.record("swift-tls", pid_file)
    context = ssl.create_default_context(cafile=str(run / "ca.pem"))
    wait_http(f"https://127.0.0.1:{p['swift_tls']}/healthcheck", context=context)

    stack.start_backend()
    database_url = fresh_database(postgres_url(run), f"updown_stack_{base}")  # one per stack on a shared server
    container = "stack-" + secrets.token_hex(4)
    units = [write_app_unit(stack, app_state(stack, i, database_url, container, key_id, secret)) for i in range(APPS)]
    # migrated once before the units start, as the charm's leader does (the units never auto-migrate)
    config0, env0 = units[0]
    subprocess.run([sys.executable, "-m", "updown_app", "db", "upgrade", "--config", str(config0)], env=env0,
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    for i, (config, env) in enumerate(units):
        log = (run / f"app{i}.log").open("ab")
        app = subprocess.Popen(
            [sys.executable, "-m", "updown_app", "serve", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        (run / f"app{i}.pid").write_text(str(app.pid))
        stack.record(f"app{i}", run / f"app{i}.pid")
        wait_http(f"http://127.0.0.1:{p[f'app{i}']}/readyz", headers={"X-Forwarded-Proto": "https"})

    members = list(range(FRONTENDS))
    stack.members = members
    states = stack.states(members, stack.tls())
    # Every Varnish first, then every HAProxy: a ring member seen down at start-up stays out of the ring until
    # `rise` checks pass, and the two units would disagree about owners meanwhile.
    for i in members:
        stack.start_varnish(i, states[i])
    for i in members:
        stack.start_or_reload_haproxy(i, states[i])
    expected = {m.server_name for m in states[members[0]].ring}
    for i in members:
        wait_ring(stack.layout(i).haproxy_socket, expected)
    for i in members:
        wait_http(f"https://{PUBLIC}:{p[f'https{i}']}/healthz", context=context)

    def urls(kind: str, scheme: str) -> str:
        return ",".join(f"{scheme}://{PUBLIC}:{p[f'{kind}{i}']}" for i in members)

    caches = ",".join(f"updown-cache/{i}=http://127.0.0.1:{p[f'cache{i}']}" for i in members)
    apps = ",".join(f"http://127.0.0.1:{p[f'app{i}']}" for i in range(APPS))
    app_pids = ",".join((run / f"app{i}.pid").read_text() for i in range(APPS))
    (run / "stack.env").write_text(
        f"UPDOWN_TEST_STACK_FRONTENDS={urls('https', 'https')}\n"
        f"UPDOWN_TEST_STACK_HTTP={urls('http', 'http')}\n"
        f"UPDOWN_TEST_STACK_CACHES={caches}\n"
        f"UPDOWN_TEST_STACK_CA={run / 'ca.pem'}\n"
        f"UPDOWN_TEST_STACK_KEY_ID={key_id}\n"
        f"UPDOWN_TEST_STACK_KEY={secret}\n"
        f"UPDOWN_TEST_STACK_APPS={apps}\n"
        f"UPDOWN_TEST_STACK_APP_PIDS={app_pids}\n"
        f"UPDOWN_TEST_STACK_SSO_PORT={p['sso']}\n"
        f"UPDOWN_TEST_STACK_SSO_CLIENT={SSO_CLIENT_ID}:{(run / 'sso-client-secret').read_text()}\n"
        f"UPDOWN_TEST_STACK_STORE_PORT={p['store']}\n"
        f"UPDOWN_TEST_STACK_SCRIPT={ROOT / 'scripts' / 'stack.sh'}\n"
        f"UPDOWN_TEST_STACK_SPARE_FRONTEND=https://{PUBLIC}:{p[f'https{FRONTENDS}']}\n"
        f"UPDOWN_TEST_STACK_RUN={run}\n"
        f"UPDOWN_TEST_STACK_BACKEND=http://127.0.0.1:{p['backend0']}\n"
        f"UPDOWN_TEST_STACK_METRICS={metrics_endpoints(stack, members)}\n"
    )
    print(f"stack up: frontends {urls('https', 'https')}; env in {run / 'stack.env'}")


def metrics_endpoints(stack: Stack, members: list[int]) -> str:
    """name=url of every endpoint the COS agents of the units would scrape (the charms' scrape jobs)."""
    p = stack.p
    found = [f"app{i}=http://127.0.0.1:{p[f'app{i}']}/metrics" for i in range(APPS)]
    for i in members:
        found += [
            f"haproxy{i}=http://127.0.0.1:{p[f'metrics{i}']}{workload.HAPROXY_METRICS_PATH}",
            f"haproxy-tls{i}=http://127.0.0.1:{p[f'metrics{i}']}{workload.TLS_METRICS_PATH}",
            f"varnish{i}=http://127.0.0.1:{p[f'varnish_exporter{i}']}/metrics",
        ]
    return ",".join([*found, f"nginx0=http://127.0.0.1:{p['nginx_exporter0']}/metrics"])


# -- scaling the frontend ring (what `juju add-unit` / `juju remove-unit` do to the peers) ----------------------------


def change_ring(run: Path, base: int, *, add: int | None = None, remove: int | None = None) -> None:
    stack = Stack(run, base)
    members = set(stack.members)
    if add is not None:
        members.add(add)
    if remove is not None:
        members.discard(remove)
    states = stack.states(sorted(members), stack.tls())
    if add is not None and add not in stack.members:
        stack.start_varnish(add, states[add])
        stack.write_cache_units(members)  # purged from before it takes its first request
    if remove is not None:  # the departing unit stops taking requests first, then goes away
        stack.stop_pid_file(f"haproxy{remove}")
    for i in sorted(members):
        stack.start_or_reload_haproxy(i, states[i])
    if remove is not None:
        stack.stop_pid_file(f"varnish_exporter{remove}")
        stack.stop_pid_file(f"varnish{remove}")
        stack.write_cache_units(members)
    stack.members = sorted(members)
    expected = {m.server_name for m in next(iter(states.values())).ring}
    for i in members:
        wait_ring(stack.layout(i).haproxy_socket, expected)


def stop(run: Path) -> None:
    listing = run / "pids.json"
    if listing.exists():
        for name, pid_file in reversed(json.loads(listing.read_text())):
            stop_pid(name, Path(pid_file))
        listing.unlink()
    services = run / "services.json"
    if services.exists():
        for name in reversed(json.loads(services.read_text())):
            env = os.environ | {"UPDOWN_RUN_DIR": str(run / "services")}
            subprocess.run([str(ROOT / "scripts" / "services" / f"{name}.sh"), "stop"], env=env, check=False)
        services.unlink()


if __name__ == "__main__":
    command, run_dir = sys.argv[1], Path(sys.argv[2]).resolve()  # the exporters' -n needs an absolute path
    port_base = int(os.environ.get("UPDOWN_STACK_PORT", "17000"))
    if command == "start":
        try:
            start(run_dir, port_base)
        except BaseException:
            stop(run_dir)
            raise
    elif command == "stop":
        stop(run_dir)
    elif command == "add-unit":
        change_ring(run_dir, port_base, add=int(sys.argv[3]))
    elif command == "remove-unit":
        change_ring(run_dir, port_base, remove=int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")
