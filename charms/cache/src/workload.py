"""The cache unit's workload: render haproxy.cfg and the VCL from a CacheState, write them, install and reload
the services. No Juju imports: the charm, the local stack (scripts/stack.sh) and the tests call the same code."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models import CacheState

logger = logging.getLogger(__name__)

PACKAGES = ("haproxy", "varnish")
# Answered by Varnish itself (never the app): HAProxy's health check of each ring member.
CACHE_HEALTH_PATH = "/_cache/health"
# Response headers telling which unit served a request and whether it was a cache hit.
SERVED_BY_HEADER = "X-Cache-Unit"
CACHE_STATUS_HEADER = "X-Cache"


@dataclass(frozen=True)
class Layout:
    """Where a unit's files live. `under(root)` relocates everything (the stack, the tests)."""

    haproxy_cfg: Path = Path("/etc/haproxy/haproxy.cfg")
    tls_pem: Path = Path("/etc/haproxy/certs/updown.pem")
    haproxy_socket: Path = Path("/run/haproxy/admin.sock")
    vcl: Path = Path("/etc/varnish/updown.vcl")
    varnish_dropin: Path = Path("/etc/systemd/system/varnish.service.d/updown.conf")

    @classmethod
    def under(cls, root: Path) -> Layout:
        base = cls()
        return cls(
            **{name: root / str(getattr(base, name)).lstrip("/") for name in cls.__dataclass_fields__}  # type: ignore[arg-type]
        )


def _q(value: str) -> str:
    """A VCL/HAProxy string literal (our values are validated hostnames/paths; refuse anything else)."""
    if any(c in value for c in '"\\\n\r{}'):
        raise ValueError(f"refusing to render {value!r}")
    return value


def render_haproxy(state: CacheState, layout: Layout) -> str:
    cfg = state.config
    bind = state.bind_address
    if cfg.https_port == 443:
        redirect = "http-request redirect scheme https code 308"
    else:  # a non-standard port must be spelled out: `redirect scheme` would keep the plain-HTTP port
        redirect = (
            f"http-request redirect location https://%[req.hdr(host),field(1,:)]:{cfg.https_port}%[capture.req.uri]"
            " code 308"
        )
    interval = f"{cfg.health_check_interval}s"
    lines = [
        "# Rendered by the updown-cache charm (workload.render_haproxy); do not edit.",
        "global",
        "    log stdout format short local0 info",
        f"    stats socket {layout.haproxy_socket} mode 600 level admin",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets",
        "    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option http-keep-alive",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 300s",
        "    timeout http-request 30s",
        "",
        "frontend http_in",
        f"    bind {bind}:{cfg.http_port}",
        f"    {redirect}",
        "",
        "frontend https_in",
        f"    bind {bind}:{cfg.https_port} ssl crt {layout.tls_pem} alpn h2,http/1.1",
        f'    http-response set-header Strict-Transport-Security "max-age={cfg.hsts_max_age}"',
        "    http-request set-header X-Forwarded-Proto https",
        "    option forwardfor",
        "    acl cacheable_method method GET HEAD",
        "    acl api path_beg /v1/",
        f"    acl public_host req.hdr(host),field(1,:),lower -m str {_q(cfg.public_hostname)}",
        "    use_backend app if api",
        "    use_backend ring if public_host cacheable_method",
        # Anything else (the private hostname, unknown hosts, non-GET/HEAD): straight to the app, never cached.
        "    default_backend app",
        "",
        "backend ring",
        "    # Every frontend unit renders the same list with the same ids (the Juju unit number): a server's place",
        "    # on the consistent-hash ring depends on its id, so adding or removing a unit only moves its share.",
        "    # path-only: HTTP/2 requests carry an absolute URI; without it h1 and h2 would hash differently.",
        "    balance uri path-only",
        "    hash-type consistent",
        f"    option httpchk GET {CACHE_HEALTH_PATH}",
        f"    default-server check inter {interval} fall 3 rise 2",
    ]
    lines += [f"    server {m.server_name} {m.address}:{m.port} id {m.unit_number + 1}" for m in state.ring]
    lines += [
        "",
        "backend app",
        "    balance roundrobin",
        f"    default-server check inter {interval} fall 3 rise 2",
    ]
    if state.origins:
        lines.append(f"    option httpchk GET {_q(state.origins[0].health_path)}")
        lines.append(f"    http-check send hdr Host {_q(cfg.public_hostname)} hdr X-Forwarded-Proto https")
    lines += [f"    server {o.server_name} {o.address}:{o.port}" for o in state.origins]
    return "\n".join(lines) + "\n"


def render_vcl(state: CacheState) -> str:
    cfg = state.config
    interval = cfg.health_check_interval
    probe_timeout = "2s" if interval > 2 else "500ms"  # a probe must time out before the next one is due
    out = [
        "vcl 4.1;",
        "# Rendered by the updown-cache charm (workload.render_vcl); do not edit.",
        "import directors;",
        "import std;",
        "",
    ]
    if not state.origins:
        # Varnish refuses a VCL without a backend: a placeholder that is always sick.
        out += [
            'backend no_origin { .host = "127.0.0.1"; .port = "9";',
            '    .probe = { .url = "/"; .interval = 3600s; .initial = 0; } }',
            "",
        ]
    for o in state.origins:
        out += [
            f"backend {o.server_name.replace('-', '_')} {{",
            f'    .host = "{_q(o.address)}";',
            f'    .port = "{o.port}";',
            "    .connect_timeout = 3s;",
            "    .first_byte_timeout = 60s;",
            "    .between_bytes_timeout = 60s;",
            "    .probe = {",
            "        .request =",
            f'            "GET {_q(o.health_path)} HTTP/1.1"',
            f'            "Host: {_q(cfg.public_hostname)}"',
            '            "X-Forwarded-Proto: https"',
            '            "Connection: close";',
            f"        .interval = {interval}s;",
            f"        .timeout = {probe_timeout};",
            "        .window = 3;",
            "        .threshold = 2;",
            "        .initial = 2;",
            "    }",
            "}",
            "",
        ]
    purgers = ['    "127.0.0.1";', '    "::1";'] + [f'    "{_q(o.address)}";' for o in state.origins]
    out += [
        "# PURGE and BAN are accepted only from the app units (and the unit itself).",
        "acl purgers {",
        *purgers,
        "}",
        "",
        "sub vcl_init {",
        "    new origin = directors.round_robin();",
    ]
    names = [o.server_name.replace("-", "_") for o in state.origins] or ["no_origin"]
    out += [f"    origin.add_backend({n});" for n in names]
    private = []
    if cfg.private_hostname:  # the private hostname is never cached (HAProxy already sends it to the app)
        private = [
            f'    if (std.tolower(regsub(req.http.host, ":[0-9]+$", "")) == "{_q(cfg.private_hostname)}") {{',
            "        return (pass);",
            "    }",
        ]
    out += [
        "}",
        "",
        "sub vcl_recv {",
        f'    if (req.url == "{CACHE_HEALTH_PATH}") {{',
        '        return (synth(200, "OK"));',
        "    }",
        '    if (req.method == "PURGE") {',
        "        if (client.ip !~ purgers) {",
        '            return (synth(405, "Not allowed"));',
        "        }",
        "        return (purge);",
        "    }",
        '    if (req.method == "BAN") {',
        "        if (client.ip !~ purgers || !req.http.X-Ban-Url) {",
        '            return (synth(405, "Not allowed"));',
        "        }",
        '        ban("obj.http.x-url ~ " + req.http.X-Ban-Url);',
        '        return (synth(200, "Banned"));',
        "    }",
        "    set req.backend_hint = origin.backend();",
        *private,
        '    if (req.method != "GET" && req.method != "HEAD") {',
        "        return (pass);",
        "    }",
        "    if (req.http.Authorization) {",
        "        return (pass);",
        "    }",
        "    unset req.http.Cookie;",
        "    return (hash);",
        "}",
        "",
        "# One object per path and hostname, whichever frontend port or case the client used.",
        "sub vcl_hash {",
        "    hash_data(req.url);",
        '    hash_data(std.tolower(regsub(req.http.host, ":[0-9]+$", "")));',
        "    return (lookup);",
        "}",
        "",
        "sub vcl_backend_response {",
        "    set beresp.http.x-url = bereq.url;",
        "    # Only what the app marks public is stored; everything else is a hit-for-miss.",
        '    if (beresp.http.Cache-Control !~ "(^|,)\\s*public\\s*(,|$)"',
        '        || beresp.http.Cache-Control ~ "(private|no-store|no-cache)"',
        "        || beresp.http.Set-Cookie) {",
        "        set beresp.uncacheable = true;",
        "        set beresp.ttl = 120s;",
        "        return (deliver);",
        "    }",
        f"    if (beresp.ttl > {cfg.max_ttl}s) {{",
        f"        set beresp.ttl = {cfg.max_ttl}s;",
        "    }",
        f"    set beresp.grace = {cfg.grace}s;",
        "    return (deliver);",
        "}",
        "",
        "sub vcl_deliver {",
        "    if (obj.hits > 0) {",
        f'        set resp.http.{CACHE_STATUS_HEADER} = "HIT";',
        "    } else {",
        f'        set resp.http.{CACHE_STATUS_HEADER} = "MISS";',
        "    }",
        f'    set resp.http.{SERVED_BY_HEADER} = "{_q(state.unit_name)}";',
        "    unset resp.http.x-url;",
        "}",
    ]
    return "\n".join(out) + "\n"


def varnishd_args(state: CacheState, vcl: Path) -> list[str]:
    """The varnishd arguments (listen address, VCL, storage); the charm writes them into a systemd drop-in."""
    return [
        "-a",
        f"{state.bind_address}:{state.config.cache_port},HTTP",
        "-f",
        str(vcl),
        "-s",
        f"malloc,{state.config.cache_size}",
        "-p",
        "http_range_support=on",
    ]


def render_varnish_dropin(state: CacheState, layout: Layout) -> str:
    args = " ".join(varnishd_args(state, layout.vcl))
    return (
        "# Rendered by the updown-cache charm; do not edit.\n[Service]\nExecStart=\n"
        f"ExecStart=/usr/sbin/varnishd -j unix,user=vcache -F -T localhost:6082 -S /etc/varnish/secret {args}\n"
    )


def rendered_files(state: CacheState, layout: Layout) -> dict[Path, str]:
    """Every file a frontend unit needs, by path. Needs TLS material (the charm waits for it)."""
    if state.tls is None:
        raise ValueError("no TLS material yet")
    return {
        layout.haproxy_cfg: render_haproxy(state, layout),
        layout.tls_pem: state.tls.as_haproxy_pem(),
        layout.vcl: render_vcl(state),
        layout.varnish_dropin: render_varnish_dropin(state, layout),
    }


def write_files(files: dict[Path, str], private: frozenset[Path] = frozenset()) -> set[Path]:
    """Atomically write the files whose content changed (mode 0600 for `private` ones, which hold keys; 0644
    for the rest: varnishd reads its VCL as an unprivileged user). Returns the changed paths."""
    changed = set()
    for path, content in files.items():
        if path.exists() and path.read_text() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=0o600 if path in private else 0o644)
        tmp.write_text(content)
        tmp.replace(path)
        changed.add(path)
    return changed


# --- service control (small functions; the charm's tests replace `run`) -------------------------------------


def run(argv: Sequence[str]) -> None:
    logger.info("running %s", " ".join(argv))
    subprocess.run(list(argv), check=True, capture_output=True, text=True)


def install() -> None:
    run(["apt-get", "update", "-q"])
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES])


def check_configs(layout: Layout) -> None:
    """Refuse to reload into a config the binaries reject."""
    run(["haproxy", "-c", "-q", "-f", str(layout.haproxy_cfg)])
    with tempfile.TemporaryDirectory(prefix="updown-vcl-check-") as workdir:
        Path(workdir).chmod(0o755)  # varnishd compiles as its unprivileged jail user
        run(["varnishd", "-C", "-f", str(layout.vcl), "-n", workdir])


def apply(state: CacheState, layout: Layout) -> set[Path]:
    """Write the configs and reload what changed without dropping connections: HAProxy's master reloads its
    workers seamlessly; varnishreload loads the new VCL into the running varnishd, keeping the cache. A changed
    storage size or listen address (the drop-in) needs a varnish restart, which empties that unit's cache."""
    changed = write_files(rendered_files(state, layout), private=frozenset({layout.tls_pem}))
    if not changed:
        return changed
    check_configs(layout)
    if layout.varnish_dropin in changed:
        run(["systemctl", "daemon-reload"])
        run(["systemctl", "restart", "varnish"])
    elif layout.vcl in changed:
        run(["varnishreload", str(layout.vcl)])
    if changed & {layout.haproxy_cfg, layout.tls_pem}:
        run(["systemctl", "reload-or-restart", "haproxy"])
    run(["systemctl", "enable", "--now", "haproxy", "varnish"])
    return changed
