"""The cache unit's workload: render haproxy.cfg and the VCL (role=frontend) or nginx.conf (role=backend) from a
CacheState, write them, install and reload the services. No Juju imports: the charm, the local stack
(scripts/stack.sh) and the tests call the same code."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from models import CacheState, Telemetry, TLSMaterial, size_bytes
from updown_charms import apt, cos_agent, files
from updown_charms.files import write_files as write_files  # the stack and the tests write with it too
from updown_charms.values import Role

logger = logging.getLogger(__name__)

CACHE_LOCK_TIMEOUT = 1  # seconds; below updown_app.storage.read_cache.READ_TIMEOUT
# The exporters are Debian/Ubuntu packages too; HAProxy's is built in (`http-request use-service prometheus-exporter`).
PACKAGES = ("haproxy", "varnish", "prometheus-varnish-exporter")  # role=frontend
# Debian/Ubuntu's nginx has the slice module (`nginx -V`: --with-http_slice_module)
BACKEND_PACKAGES = ("nginx", "prometheus-nginx-exporter")
VARNISH_EXPORTER = "prometheus-varnish-exporter"
NGINX_EXPORTER = "prometheus-nginx-exporter"
# Where the metrics endpoints listen (Telemetry's ports): the COS agent scrapes them on the machine itself.
METRICS_ADDRESS = "127.0.0.1"
HAPROXY_METRICS_PATH = "/metrics"
TLS_METRICS_PATH = "/metrics/tls"
NGINX_STATUS_PATH = "/stub_status"
# The CA bundle nginx trusts for the store when `upstream-ca` is empty.
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NGINX_USER = "www-data"
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
    # The serving certificate's expiry in Prometheus' text format, which HAProxy's metrics frontend serves.
    tls_metrics: Path = Path("/etc/haproxy/updown-tls.prom")
    varnish_exporter_dropin: Path = Path(f"/etc/systemd/system/{VARNISH_EXPORTER}.service.d/updown.conf")
    nginx_exporter_dropin: Path = Path(f"/etc/systemd/system/{NGINX_EXPORTER}.service.d/updown.conf")
    # role=backend. nginx.conf is the one nginx.service runs (Debian's default site is not included); its pid file
    # is the unit's PIDFile.
    nginx_conf: Path = Path("/etc/nginx/nginx.conf")
    nginx_ca: Path = Path("/etc/nginx/updown-upstream-ca.pem")
    nginx_pid: Path = Path("/run/nginx.pid")
    nginx_cache_dir: Path = Path("/var/cache/nginx/updown")
    nginx_temp_dir: Path = Path("/var/lib/nginx")
    nginx_access_log: Path = Path("/var/log/nginx/updown-access.log")
    nginx_error_log: Path = Path("/var/log/nginx/error.log")

    @classmethod
    def under(cls, root: Path) -> Layout:
        return files.relocated(cls(), root)


def _q(value: str) -> str:
    """A VCL/HAProxy string literal (our values are validated hostnames/paths; refuse anything else)."""
    if any(c in value for c in '"\\\n\r{}'):
        raise ValueError(f"refusing to render {value!r}")
    return value


# Seconds a client is told to wait (Retry-After) when no app unit can answer.
RETRY_AFTER = 5
# No `"}` in it: that would end the VCL long string it is rendered in.
_UNAVAILABLE_JSON = '{"error": {"code": "unavailable", "message": "the service is unavailable; retry later" } }'
_ABSOLUTE_FORM = "^[a-zA-Z][a-zA-Z0-9+.-]*://"
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# Sample-expression regsub()s per `set-path` rule: keeps each config line short.
_REGSUBS_PER_RULE = 12


def _json_error(status: int, code: str, message: str) -> str:
    """An HAProxy `http-request return` of the app's JSON error shape (message: no quotes or backslashes)."""
    body = json.dumps({"error": {"code": code, "message": _q(message)}})
    return f"http-request return status {status} content-type application/json string '{body}'"


def _set_path_chain(regsubs: list[str]) -> list[str]:
    rules = []
    for i in range(0, len(regsubs), _REGSUBS_PER_RULE):
        chain = ",".join(regsubs[i : i + _REGSUBS_PER_RULE])
        rules.append(f"""    http-request set-path '%[path,{chain}]' if {{ path_sub % }}""")
    return rules


_HAPROXY_ERRORS = [
    (502, _UNAVAILABLE_JSON, f" hdr Retry-After {RETRY_AFTER}"),
    (503, _UNAVAILABLE_JSON, f" hdr Retry-After {RETRY_AFTER}"),
    (504, _UNAVAILABLE_JSON, f" hdr Retry-After {RETRY_AFTER}"),
]


def canonical_path_rules() -> list[str]:
    """HAProxy rules giving every request one spelling of its URL, what the app's router sees too (its
    dot_segments middleware does the same for a single node): an absolute-form target becomes origin-form (HAProxy
    itself refuses one whose authority is not the Host header), percent-encoded unreserved characters are decoded
    and the other escapes upper-cased (RFC 3986 6.2.2), dot segments and doubled slashes removed; "%2F" (a slash
    the router would see but HAProxy's hash and Varnish's would not) and ".." are refused. Stable directives only:
    HAProxy 2.6's `normalize-uri` is experimental."""
    # The first digit of an escape, then the second (by then the first is upper-case).
    upper = [f'regsub("%{c}([0-9A-Fa-f])","%{c.upper()}\\1",g)' for c in "abcdef"]
    upper += [f'regsub("%([0-9A-F]){c}","%\\1{c.upper()}",g)' for c in "abcdef"]
    decode = [f"regsub(%{ord(c):02X},{c},g)" for c in _UNRESERVED]
    return [
        "    acl absolute_form url_reg -i ^[a-z][a-z0-9+.-]*://",
        "    http-request set-uri %[pathq] if absolute_form",
        "    " + _json_error(400, "missing_host", "a Host header is required") + " if !{ req.hdr(host) -m found }",
        "    "
        + _json_error(400, "invalid_path", "malformed percent-encoding in the path")
        + " if { path_reg %([^0-9A-Fa-f]|.[^0-9A-Fa-f]|.?$) }",
        "    "
        + _json_error(400, "invalid_path", "encoded slashes (%2F) are not allowed in the path")
        + " if { path_sub -i %2f }",
        *_set_path_chain(upper + decode),
        "    "
        + _json_error(400, "invalid_path", "dot-dot path segments are not allowed")
        + r" if { path_reg -- '/\.\.(/|$)' }",
        """    http-request set-path '%[path,regsub("/+","/",g)]' if { path_sub // }""",
        """    http-request set-path '%[path,regsub("(/\\.)+(/|$)","/",g)]' if { path_sub /./ } || { path_end /. }""",
    ]


_LOG_FORMAT = (
    '"%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq '
    '\\"%HM %[var(txn.log_path)] %HV\\""'
)
# The path as the client sent it, without its query, a link token replaced by "-".
_LOG_PATH = "http-request set-var(txn.log_path) path,regsub(^/-/link/[^/]*,/-/link/-)"


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
        # httplog's fields, but the path instead of the request line: a query (a TempURL signature, a token a
        # client put there) and a download link's token never reach the log, which COS forwards to Loki.
        f"    log-format {_LOG_FORMAT}",
        "    option http-keep-alive",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 300s",
        "    timeout http-request 30s",
        # HAProxy's own errors in the app's JSON shape (no server up: 503). Its parser's 400s cannot be changed in 2.6.
        *[
            f"    http-error status {status} content-type application/json string '{body}'" + extra
            for status, body, extra in _HAPROXY_ERRORS
        ],
        "",
        "frontend http_in",
        f"    bind {bind}:{cfg.http_port}",
        f"    {_LOG_PATH}",
        f"    {redirect}",
        "",
        "frontend https_in",
        f"    bind {bind}:{cfg.https_port} ssl crt {layout.tls_pem} alpn h2,http/1.1",
        f"    {_LOG_PATH}",
        f'    http-response set-header Strict-Transport-Security "max-age={cfg.hsts_max_age}"',
        "    http-request set-header X-Forwarded-Proto https",
        "    option forwardfor",
        # One spelling per URL before routing, hashing and caching (canonical_path_rules): a takedown's ban must
        # reach every spelling a client could have primed.
        *canonical_path_rules(),
        "    acl cacheable_method method GET HEAD",
        "    acl api path_beg /v1/",
        f"    acl public_host req.hdr(host),field(1,:),lower -m str {_q(cfg.public_hostname)}",
        # The app's own metrics answer loopback only; the public is not even routed to them.
        "    " + _json_error(404, "not_found", "not found") + " if { path /metrics } || { path_beg /metrics/ }",
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
    # A draining origin is `disabled` (maintenance): no new requests, the ones in flight finish.
    lines += [
        f"    server {o.server_name} {o.address}:{o.port}" + (" disabled" if o.draining else "") for o in state.origins
    ]
    lines += [
        "",
        "frontend metrics",
        "    # Scraped by the COS agent on this machine, on loopback only: HAProxy's counters (the built-in exporter)",
        "    # and the serving certificate's expiry.",
        f"    bind {METRICS_ADDRESS}:{state.telemetry.haproxy}",
        "    http-request set-log-level silent",  # scrapes every few seconds: not worth a log line
        f"    http-request use-service prometheus-exporter if {{ path {HAPROXY_METRICS_PATH} }}",
        '    http-request return status 200 content-type "text/plain; version=0.0.4"'
        f" file {layout.tls_metrics} if {{ path {TLS_METRICS_PATH} }}",
        "    http-request return status 404",
    ]
    return "\n".join(lines) + "\n"


def render_tls_metrics(tls: TLSMaterial) -> str:
    """The leaf certificate's notAfter, for the certificate-expiry alerts (HAProxy 2.6's exporter has no such
    metric)."""
    leaf = x509.load_pem_x509_certificate(tls.chain.encode())  # the first certificate of the chain
    name = "updown_tls_certificate_expiry_timestamp_seconds"
    return (
        f"# HELP {name} When the certificate HAProxy serves expires (Unix time).\n"
        f"# TYPE {name} gauge\n"
        f"{name} {int(leaf.not_valid_after_utc.timestamp())}\n"
    )


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
    # A draining origin is left out of the director (and, being then unused, not declared: VCC refuses unused
    # backends); its fetches in flight finish. It may still PURGE/BAN.
    serving = [o for o in state.origins if not o.draining]
    if not serving:
        # Varnish refuses a VCL without a backend: a placeholder that is always sick.
        out += [
            'backend no_origin { .host = "127.0.0.1"; .port = "9";',
            '    .probe = { .url = "/"; .interval = 3600s; .initial = 0; } }',
            "",
        ]
    for o in serving:
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
    names = [o.server_name.replace("-", "_") for o in serving] or ["no_origin"]
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
        "    # HAProxy sends origin-form; a target in absolute-form reaching Varnish otherwise loses its authority.",
        f'    if (req.url ~ "{_ABSOLUTE_FORM}") {{',
        f'        set req.url = regsub(req.url, "{_ABSOLUTE_FORM}[^/?]*", "");',
        "    }",
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
        "    # The query is no part of an object (downloads ignore it): dropped before the key is made, so a",
        "    # cache-busting variant can neither be primed past a takedown nor fill the cache.",
        '    set req.url = regsub(req.url, "\\?.*$", "");',
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
        "# No app unit answered (all sick, a timeout): the app's JSON error shape, and when to retry.",
        "sub vcl_backend_error {",
        "    set beresp.status = 503;",
        '    set beresp.http.Content-Type = "application/json";',
        '    set beresp.http.Cache-Control = "no-store";',
        f'    set beresp.http.Retry-After = "{RETRY_AFTER}";',
        "    set beresp.ttl = 0s;",
        "    set beresp.grace = 0s;",
        f'    synthetic({{"{_UNAVAILABLE_JSON}"}});',
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
        # Packages are stored and served as they are: no gzip handling (about 5% of Varnish's CPU on small hits).
        "-p",
        "http_gzip_support=off",
    ]


# Loads a VCL file into the running varnishd (the cache is kept). Debian and Ubuntu ship it here, off PATH: it is
# only run by systemd, as the unit's ExecReload (`systemctl reload varnish`).
VARNISHRELOAD = "/usr/share/varnish/varnishreload"


def render_varnish_dropin(state: CacheState, layout: Layout) -> str:
    args = " ".join(varnishd_args(state, layout.vcl))
    return (
        "# Rendered by the updown-cache charm; do not edit.\n[Service]\nExecStart=\n"
        f"ExecStart=/usr/sbin/varnishd -j unix,user=vcache -F -T localhost:6082 -S /etc/varnish/secret {args}\n"
        f"ExecReload=\nExecReload={VARNISHRELOAD} {layout.vcl}\n"
    )


def varnish_exporter_args(telemetry: Telemetry) -> list[str]:
    """prometheus-varnish-exporter's arguments (it reads varnishd's shared memory through varnishstat)."""
    return ["-web.listen-address", f"{METRICS_ADDRESS}:{telemetry.varnish_exporter}", "-raw"]


def nginx_exporter_args(telemetry: Telemetry) -> list[str]:
    """prometheus-nginx-exporter's arguments: it reads nginx's stub_status."""
    status = f"http://{METRICS_ADDRESS}:{telemetry.nginx_status}{NGINX_STATUS_PATH}"
    return ["-nginx.scrape-uri", status, "-web.listen-address", f"{METRICS_ADDRESS}:{telemetry.nginx_exporter}"]


def exporter_dropins(role: Role, telemetry: Telemetry, layout: Layout) -> dict[Path, str]:
    """The systemd drop-in of the role's exporter: where it listens (loopback) and what it reads."""
    if role is Role.BACKEND:
        return {layout.nginx_exporter_dropin: _exporter_dropin(NGINX_EXPORTER, nginx_exporter_args(telemetry))}
    return {layout.varnish_exporter_dropin: _exporter_dropin(VARNISH_EXPORTER, varnish_exporter_args(telemetry))}


def _exporter_dropin(binary: str, args: list[str]) -> str:
    return (
        "# Rendered by the updown-cache charm; do not edit.\n[Service]\nExecStart=\n"
        f"ExecStart=/usr/bin/{binary} {' '.join(args)}\n"
    )


def scrape_jobs(role: Role, telemetry: Telemetry) -> list[dict[str, Any]]:
    """What the COS agent on this machine scrapes (cos-agent's metrics_scrape_jobs)."""
    if role is Role.BACKEND:
        return [cos_agent.scrape_job("nginx", telemetry.nginx_exporter)]
    return [
        cos_agent.scrape_job("haproxy", telemetry.haproxy, HAPROXY_METRICS_PATH),
        cos_agent.scrape_job("haproxy-tls", telemetry.haproxy, TLS_METRICS_PATH),
        cos_agent.scrape_job("varnish", telemetry.varnish_exporter),
    ]


def rendered_files(state: CacheState, layout: Layout) -> dict[Path, str]:
    """Every file a frontend unit needs, by path. Needs TLS material (the charm waits for it)."""
    if state.tls is None:
        raise ValueError("no TLS material yet")
    return {
        layout.haproxy_cfg: render_haproxy(state, layout),
        layout.tls_pem: state.tls.as_haproxy_pem(),
        layout.tls_metrics: render_tls_metrics(state.tls),
        layout.vcl: render_vcl(state),
        layout.varnish_dropin: render_varnish_dropin(state, layout),
        **exporter_dropins(Role.FRONTEND, state.telemetry, layout),
    }


# --- role=backend: nginx, a sliced cache of object-store reads ----------------------------------------------


def _nginx_q(value: str) -> str:
    """An nginx string literal (unit names, hostnames, paths: validated upstream; refuse anything else)."""
    if any(c in value for c in "\"'\\;{}$\n\r ") or not value:
        raise ValueError(f"refusing to render {value!r}")
    return value


def _ip(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _keys_zone_mb(cache_bytes: int) -> int:
    # One megabyte of keys zone holds about 8000 keys; assume entries of 64 KiB on average (objects smaller than
    # a slice are one entry each), within bounds.
    return max(8, min(512, math.ceil(cache_bytes / (64 * 1024) / 8000)))


def backend_allowed(state: CacheState) -> list[str]:
    """Who may read through the unit: the unit itself and the updown-app units (from the `app` relation)."""
    allowed = ["127.0.0.1", "::1"]
    for address in (state.address, *(o.address for o in state.origins)):
        ip = _ip(address)
        if ip is None:
            logger.warning("not an IP address, left out of the allow list: %r", address)
        elif ip not in allowed and ip not in ("0.0.0.0", "::"):
            allowed.append(ip)
    return allowed


def render_nginx(state: CacheState, layout: Layout, *, user: str | None = NGINX_USER) -> str:
    cfg = state.config
    host = _nginx_q(cfg.upstream_host)
    port = cfg.upstream_port
    host_header = host if port == 443 else f"{host}:{port}"
    ca = layout.nginx_ca if cfg.upstream_ca else SYSTEM_CA_BUNDLE
    cache_bytes = size_bytes(cfg.cache_size)
    temp = layout.nginx_temp_dir
    listen = state.bind_address if ":" not in state.bind_address else f"[{state.bind_address}]"
    out = [
        "# Rendered by the updown-cache charm (workload.render_nginx); do not edit.",
        *([f"user {_nginx_q(user)};"] if user else []),
        "worker_processes auto;",
        f"pid {layout.nginx_pid};",
        f"error_log {layout.nginx_error_log} warn;",
        "",
        "events {",
        "    worker_connections 4096;",
        "}",
        "",
        "http {",
        "    server_tokens off;",
        "    sendfile on;",
        "    tcp_nopush on;",
        "    keepalive_timeout 65s;",
        "    default_type application/octet-stream;",
        f"    client_body_temp_path {temp / 'body'};",
        f"    proxy_temp_path {temp / 'proxy'};",
        f"    fastcgi_temp_path {temp / 'fastcgi'};",
        f"    uwsgi_temp_path {temp / 'uwsgi'};",
        f"    scgi_temp_path {temp / 'scgi'};",
        "",
        "    # The path without the query: a TempURL's or presigned URL's signature and expiry are neither part of",
        "    # the cache key nor logged.",
        "    map $request_uri $updown_object_path {",
        '        "~^(?<object_path>[^?]*)" $object_path;',
        "    }",
        "    map $upstream_cache_status $updown_cache_status {",
        "        HIT HIT;",
        "        STALE HIT;",
        "        UPDATING HIT;",
        "        REVALIDATED HIT;",
        "        default MISS;",
        "    }",
        "    log_format updown '$remote_addr [$time_iso8601] \"$request_method $updown_object_path\" $status '",
        "                      '$body_bytes_sent range=\"$http_range\" cache=$updown_cache_status '",
        "                      'upstream=$upstream_status upstream_bytes=$upstream_bytes_received rt=$request_time';",
        f"    access_log {layout.nginx_access_log} updown;",
        "",
        f"    proxy_cache_path {layout.nginx_cache_dir} levels=1:2",
        f"                     keys_zone=updown_objects:{_keys_zone_mb(cache_bytes)}m max_size={cache_bytes}",
        f"                     inactive={cfg.max_ttl}s use_temp_path=off;",
        "",
        "    upstream updown_store {",
        f"        server {host}:{port};",
        "        keepalive 32;",
        "    }",
        "",
        "    server {",
        f"        listen {listen}:{cfg.cache_port};",
        "",
        f"        location = {CACHE_HEALTH_PATH} {{",
        "            access_log off;",
        f"            add_header {SERVED_BY_HEADER} {_nginx_q(state.unit_name)} always;",
        '            return 200 "OK\\n";',
        "        }",
        "",
        "        location / {",
        "            # Only the unit itself and the updown-app units may read through the cache.",
        *[f"            allow {ip};" for ip in backend_allowed(state)],
        "            deny all;",
        "            if ($request_method !~ ^(GET|HEAD)$) {",
        "                return 405;",
        "            }",
        f"            add_header {SERVED_BY_HEADER} {_nginx_q(state.unit_name)} always;",
        f"            add_header {CACHE_STATUS_HEADER} $updown_cache_status always;",
        "",
        "            # Objects are fetched and cached in slices: a Range request pulls only the slices it covers.",
        f"            slice {size_bytes(cfg.slice_size)};",
        "            proxy_cache updown_objects;",
        "            proxy_cache_key $updown_object_path|$slice_range;",
        f"            proxy_cache_valid 200 206 {cfg.max_ttl}s;",
        "            proxy_ignore_headers Cache-Control Expires Set-Cookie Vary X-Accel-Expires X-Accel-Redirect",
        "                                 X-Accel-Limit-Rate X-Accel-Buffering X-Accel-Charset;",
        "            proxy_hide_header Set-Cookie;",
        "            # Concurrent misses of one slice make one upstream request. A request waits for it at most",
        "            # 1 s, then fetches on its own: below the app's 2 s read timeout of a unit, so a wait behind a",
        "            # slow or failing fetch is never taken for a sick unit (and a resume during a store outage",
        "            # hears the store's failure, not the lock's wait).",
        "            proxy_cache_lock on;",
        f"            proxy_cache_lock_timeout {CACHE_LOCK_TIMEOUT}s;",
        "            proxy_cache_lock_age 60s;",
        "            proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;",
        "",
        "            proxy_pass https://updown_store;",
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        f"            proxy_set_header Host {host_header};",
        "            proxy_set_header Range $slice_range;",
        '            proxy_set_header Authorization "";',
        '            proxy_set_header Cookie "";',
        "            proxy_connect_timeout 5s;",
        "            proxy_send_timeout 60s;",
        "            proxy_read_timeout 60s;",
        "            proxy_ssl_server_name on;",
        f"            proxy_ssl_name {host};",
        "            proxy_ssl_verify on;",
        "            proxy_ssl_verify_depth 4;",
        f"            proxy_ssl_trusted_certificate {ca};",
        "            proxy_ssl_protocols TLSv1.2 TLSv1.3;",
        "            proxy_ssl_session_reuse on;",
        "        }",
        "    }",
        "",
        "    # What prometheus-nginx-exporter reads, on loopback only.",
        "    server {",
        f"        listen {METRICS_ADDRESS}:{state.telemetry.nginx_status};",
        "        access_log off;",
        f"        location = {NGINX_STATUS_PATH} {{",
        "            stub_status;",
        "        }",
        "        location / {",
        "            return 404;",
        "        }",
        "    }",
        "}",
    ]
    return "\n".join(out) + "\n"


def rendered_backend_files(state: CacheState, layout: Layout, *, user: str | None = NGINX_USER) -> dict[Path, str]:
    """Every file a backend unit needs, by path."""
    files = {
        layout.nginx_conf: render_nginx(state, layout, user=user),
        **exporter_dropins(Role.BACKEND, state.telemetry, layout),
    }
    if state.config.upstream_ca:
        files[layout.nginx_ca] = state.config.upstream_ca
    return files


def nginx_command(layout: Layout, *args: str) -> list[str]:
    """nginx on this layout's config: `-e` opens the layout's error log before the config is read (the default
    one may not be writable), `-p` keeps any default relative path inside the layout."""
    return [
        "nginx",
        "-p",
        f"{layout.nginx_temp_dir}/",
        "-e",
        str(layout.nginx_error_log),
        "-c",
        str(layout.nginx_conf),
        *args,
    ]


def backend_dirs(layout: Layout) -> None:
    """The directories nginx needs before it starts (it creates the cache and temp dirs inside them)."""
    # nginx creates (and hands to its worker user) the cache and temp directories, not their parents.
    for path in (layout.nginx_cache_dir.parent, layout.nginx_temp_dir, layout.nginx_access_log.parent):
        path.mkdir(parents=True, exist_ok=True)
    layout.nginx_error_log.parent.mkdir(parents=True, exist_ok=True)
    layout.nginx_pid.parent.mkdir(parents=True, exist_ok=True)


def local_backend(state: CacheState, layout: Layout) -> list[str]:
    """A backend unit without Juju or systemd (the local stack, the tests): write its files under `layout`
    (typically `Layout.under(root)`: pid file, temp paths, cache and logs all inside), check them with `nginx -t`
    and return the argv of its nginx master in the foreground. Stop it with SIGQUIT (graceful) or SIGTERM by
    PID; reload a changed state with `local_backend` again, then `nginx_command(layout, "-s", "reload")`."""
    user = "root" if os.geteuid() == 0 else None  # workers keep the caller's uid, who owns the layout
    write_files(rendered_backend_files(state, layout, user=user))
    backend_dirs(layout)
    subprocess.run(nginx_command(layout, "-t", "-q"), check=True, capture_output=True, text=True)
    return nginx_command(layout, "-g", "daemon off;")


def write_checked(
    files: dict[Path, str], check: Callable[[], None], private: frozenset[Path] = frozenset()
) -> set[Path]:
    """write_files, then `check` the result; when the check fails, the previous contents are put back and the
    error raised: a rejected config must neither wait on disk for the next restart nor look applied to the
    retried hook (which would find nothing changed and skip the check)."""
    before = {path: path.read_text() if path.exists() else None for path in files}
    changed = write_files(files, private)
    if not changed:
        return changed
    try:
        check()
    except Exception:
        for path in changed:
            old = before[path]
            if old is None:
                path.unlink(missing_ok=True)
            else:
                write_files({path: old}, private)
        raise
    return changed


def apply_backend(state: CacheState, layout: Layout) -> set[Path]:
    """Write nginx.conf (and the store's CA), check it with `nginx -t`, reload nginx gracefully: the master
    starts new workers on the new config, old ones finish their requests; the cache on disk is kept."""
    backend_dirs(layout)
    changed = write_checked(
        rendered_backend_files(state, layout), lambda: run(["nginx", "-t", "-q", "-c", str(layout.nginx_conf)])
    )
    if not changed:
        return changed
    if layout.nginx_conf in changed or layout.nginx_ca in changed:
        run(["systemctl", "reload-or-restart", "nginx"])
    if layout.nginx_exporter_dropin in changed:
        run(["systemctl", "daemon-reload"])
        run(["systemctl", "restart", NGINX_EXPORTER])
    run(["systemctl", "enable", "--now", "nginx", NGINX_EXPORTER])
    return changed


# --- service control (small functions; the charm's tests replace `run`) -------------------------------------


# s: a hook never waits longer on one command unless the caller says so; Juju runs one hook at a time per unit,
# so a stuck command would hold every later one
COMMAND_TIMEOUT = 300.0


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = COMMAND_TIMEOUT) -> None:
    logger.info("running %s", " ".join(argv))
    subprocess.run(
        list(argv), check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout
    )


def install(role: Role = Role.FRONTEND, layout: Layout | None = None) -> None:
    # The exporter's drop-in first: its package starts it at once, which would otherwise listen on every address
    # (the package's default) until the first config is applied.
    write_files(exporter_dropins(role, Telemetry(), layout or Layout()))
    apt.install(BACKEND_PACKAGES if role is Role.BACKEND else PACKAGES, run)


def check_configs(layout: Layout) -> None:
    """Refuse to reload into a config the binaries reject."""
    run(["haproxy", "-c", "-q", "-f", str(layout.haproxy_cfg)])
    with tempfile.TemporaryDirectory(prefix="updown-vcl-check-") as workdir:
        Path(workdir).chmod(0o755)  # varnishd compiles as its unprivileged jail user
        run(["varnishd", "-C", "-f", str(layout.vcl), "-n", workdir])


def apply(state: CacheState, layout: Layout) -> set[Path]:
    """Write the configs and reload what changed without dropping connections: HAProxy's master reloads its
    workers seamlessly; `systemctl reload varnish` (the drop-in's ExecReload) loads the new VCL into the running
    varnishd, keeping the cache. A changed storage size or listen address (the drop-in) needs a varnish restart,
    which empties that unit's cache."""
    if state.config.role is Role.BACKEND:
        return apply_backend(state, layout)
    changed = write_checked(rendered_files(state, layout), lambda: check_configs(layout), frozenset({layout.tls_pem}))
    if not changed:
        return changed
    if layout.varnish_dropin in changed:
        run(["systemctl", "daemon-reload"])
        run(["systemctl", "restart", "varnish"])
    elif layout.vcl in changed:
        run(["systemctl", "reload", "varnish"])
    if changed & {layout.haproxy_cfg, layout.tls_pem, layout.tls_metrics}:
        run(["systemctl", "reload-or-restart", "haproxy"])
    if layout.varnish_exporter_dropin in changed:
        run(["systemctl", "daemon-reload"])
        run(["systemctl", "restart", VARNISH_EXPORTER])
    run(["systemctl", "enable", "--now", "haproxy", "varnish", VARNISH_EXPORTER])
    return changed
