"""The updown-app unit's workload: install releases side by side from the charm's wheelhouse, render the app's
config file and systemd unit from an AppState, and control the service. No Juju imports: the charm and the
tests call the same code.

Layout on a unit::

    /opt/updown/releases/<version>/   one venv per release (pip install --no-index from the wheelhouse)
    /opt/updown/current -> releases/<version>   flipped atomically when a unit switches release
    /etc/updown/updown.toml           the app's settings (updown_app.settings.Settings), mode 0640 root:updown
    /etc/updown/hmac-keys.json        {key id: secret}, mode 0640 root:updown
    /etc/updown/environment           storage credentials for the AWS chain (S3), mode 0640 root:updown
    /etc/updown/store-ca.pem          the CAs of the object store (s3-integrator's tls-ca-chain, or storage-ca)
    /etc/systemd/system/updown.service
    /var/lib/updown/                  the service's data_dir
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import tomli_w
from pydantic import SecretStr

from models import AppState, CacheUnit
from updown_charms import apt, files
from updown_charms.values import Role

logger = logging.getLogger(__name__)

PACKAGE = "updown-app"
SERVICE = "updown"
USER = "updown"
APT_PACKAGES = ("python3-venv",)
HEALTH_PATH = "/readyz"
MAX_WORKERS = 16
REDACTED = "<redacted>"
# The keys of render_settings whose values are secrets.
_SECRET_SETTINGS = {"password", "application_credential_secret", "temp_url_key", "client_secret", "secret"}
_WHEEL = re.compile(r"^updown_app-(?P<version>[^-]+)-py3-none-any\.whl$")


@dataclass(frozen=True)
class Layout:
    """Where a unit's files live. `under(root)` relocates everything (the tests)."""

    releases: Path = Path("/opt/updown/releases")
    current: Path = Path("/opt/updown/current")
    config: Path = Path("/etc/updown/updown.toml")
    hmac_keys: Path = Path("/etc/updown/hmac-keys.json")
    environment: Path = Path("/etc/updown/environment")
    store_ca: Path = Path("/etc/updown/store-ca.pem")
    unit_file: Path = Path("/etc/systemd/system/updown.service")
    # The cache units the app purges and reads through: rewritten as they come and go, re-read by the running app
    # (caches.units_file), so it is not part of what a restart is staged for.
    cache_units: Path = Path("/etc/updown/cache-units.json")
    data_dir: Path = Path("/var/lib/updown")

    @classmethod
    def under(cls, root: Path) -> Layout:
        return files.relocated(cls(), root)

    @property
    def secret_files(self) -> frozenset[Path]:
        """The files that hold secrets (written 0640, readable by the service's group only)."""
        return frozenset({self.config, self.hmac_keys, self.environment})

    def release_dir(self, version: str) -> Path:
        return self.releases / version

    def updown(self, version: str | None = None) -> Path:
        """The `updown` command of a release (default: the current one)."""
        return (self.release_dir(version) if version else self.current) / "bin" / "updown"


def workers_for(cpus: int | None) -> int:
    """One async worker per core: each handles thousands of concurrent transfers (ARCHITECTURE.md section 7)."""
    return max(1, min(cpus or 1, MAX_WORKERS))


# --- rendering ------------------------------------------------------------------------------------------------


def _drop_empty(table: Mapping[str, Any]) -> dict[str, Any]:
    """TOML has no null: unset optional settings are left out, so the app's defaults apply."""
    return {k: v for k, v in table.items() if v not in (None, "")}


def render_settings(state: AppState, layout: Layout) -> dict[str, Any]:
    """The app's settings as a dict (validated by updown_app.settings.Settings in the tests)."""
    cfg = state.config
    sec = state.secrets
    settings: dict[str, Any] = {
        "data_dir": str(layout.data_dir),
        "database_url": state.database.url(),
        # The leader migrates once per release before any unit restarts onto it (charm.py); units never race.
        "auto_migrate": False,
        "public_host": cfg.public_hostname,
        "private_host": cfg.private_hostname,
        "hmac_keys_file": str(layout.hmac_keys),
        "max_clock_skew": cfg.max_clock_skew,
        "max_upload_size": cfg.max_upload_size,
        "bind": state.bind_address,
        "port": cfg.port,
        "workers": state.workers,
        "tls": False,  # the frontend caches terminate TLS
        "https_redirect_port": 443,
        # The networks the frontends come from, the frontends outside them, and the unit itself (the charm's
        # actions call the local API over plain HTTP): with trusted-networks covering the frontends, a frontend
        # unit joining changes nothing here and needs no restart.
        "trusted_proxies": trusted_proxies(state),
        "log_level": cfg.log_level,
    }
    timeouts = {
        "connect_timeout": cfg.storage_connect_timeout,
        "first_byte_timeout": cfg.storage_first_byte_timeout,
        "idle_timeout": cfg.storage_idle_timeout,
    }
    # both network stores verify their endpoint with the same file (swift: Keystone's too)
    verify_tls = str(layout.store_ca) if state.store_ca else None
    storage: dict[str, Any] = {"backend": cfg.storage_backend}
    if cfg.storage_backend == "local":
        storage["local"] = {"path": str(layout.data_dir / "objects")}
    elif cfg.storage_backend == "swift":
        storage["swift"] = _drop_empty(
            {
                "auth": cfg.swift_auth,
                "auth_url": cfg.swift_auth_url,
                "username": cfg.swift_username,
                "password": sec.swift_password.get_secret_value() if sec.swift_password else None,
                "user_domain_name": cfg.swift_user_domain_name,
                "project_name": cfg.swift_project_name,
                "project_domain_name": cfg.swift_project_domain_name,
                "application_credential_id": cfg.swift_application_credential_id,
                "application_credential_secret": (
                    sec.swift_application_credential_secret.get_secret_value()
                    if sec.swift_application_credential_secret
                    else None
                ),
                "region_name": cfg.swift_region_name,
                "storage_url": cfg.swift_storage_url,
                "container": cfg.swift_container,
                "temp_url_key": sec.swift_temp_url_key.get_secret_value() if sec.swift_temp_url_key else None,
                "verify_tls": verify_tls,
                **timeouts,
            }
        )
    else:  # s3: credentials come from the AWS chain (the environment file), never the config file
        storage["s3"] = _drop_empty(
            {
                "bucket": cfg.s3_bucket,
                "region": cfg.s3_region,
                "endpoint_url": cfg.s3_endpoint_url,
                "addressing_style": cfg.s3_addressing_style,
                "verify_tls": verify_tls,
                **timeouts,
            }
        )
    settings["storage"] = storage
    if cfg.sso_mode:
        sso: dict[str, Any] = _drop_empty(
            {"mode": cfg.sso_mode, "issuer": cfg.sso_issuer, "audience": cfg.sso_audience, "timeout": cfg.sso_timeout}
        )
        if cfg.sso_mode == "introspection":
            sso["introspection"] = {
                "url": cfg.sso_introspection_url,
                "client_id": cfg.sso_client_id,
                "client_secret": sec.sso_client_secret.get_secret_value() if sec.sso_client_secret else "",
            }
        else:
            sso["jwt"] = {"jwks_url": cfg.sso_jwks_url}
        access = _drop_empty(
            {"url": cfg.access_check_url, "key_id": cfg.access_check_key_id, "timeout": cfg.access_check_timeout}
        )
        settings["private"] = {"sso": sso, "access_check": access}
    settings["caches"] = {"units_file": str(layout.cache_units)}
    return settings


def shown_settings(state: AppState, layout: Layout) -> dict[str, Any]:
    """render_settings with every secret value replaced by REDACTED (the show-config action)."""
    settings: dict[str, Any] = _redact(render_settings(state, layout))
    redacted = state.database.model_copy(update={"password": SecretStr(REDACTED)})
    settings["database_url"] = redacted.url().replace(quote(REDACTED, safe=""), REDACTED)
    return settings


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if k in _SECRET_SETTINGS and v else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def scrubbed_stderr(exc: subprocess.CalledProcessError, state: AppState) -> str:
    """The end of a failed command's stderr with every secret value we know of blanked (an error message may
    quote a setting, e.g. the database URL)."""
    text = (exc.stderr or "").strip()[-500:]
    sec = state.secrets
    values = [state.database.password, *sec.hmac_keys.values()]
    values += [v for v in (sec.swift_password, sec.swift_application_credential_secret, sec.swift_temp_url_key) if v]
    values += [v for v in (sec.s3_secret_access_key, sec.sso_client_secret) if v]
    for value in values:
        raw = value.get_secret_value()
        if raw:
            text = text.replace(raw, REDACTED).replace(quote(raw, safe=""), REDACTED)
    return text


def trusted_proxies(state: AppState) -> list[str]:
    networks = [ipaddress.ip_network(n, strict=False) for n in state.trusted_networks]
    outside = {c.address for c in state.frontends if not any(ipaddress.ip_address(c.address) in n for n in networks)}
    return sorted({"127.0.0.1", *state.trusted_networks, *outside})


def render_cache_units(caches: Iterable[CacheUnit]) -> str:
    """caches.units_file: every frontend unit (purged on unpublish) and backend unit (read cache) right now."""
    caches = tuple(caches)
    units = {
        "frontends": [c.url for c in caches if c.role is Role.FRONTEND],
        "backends": {c.unit_name: c.url for c in caches if c.role is Role.BACKEND},
    }
    return json.dumps(units, indent=2, sort_keys=True) + "\n"


def render_config(state: AppState, layout: Layout) -> str:
    header = "# Rendered by the updown-app charm (workload.render_config); do not edit.\n"
    return header + tomli_w.dumps(render_settings(state, layout))


def render_hmac_keys(state: AppState) -> str:
    return json.dumps({kid: key.get_secret_value() for kid, key in sorted(state.secrets.hmac_keys.items())}) + "\n"


def render_environment(state: AppState) -> str:
    """systemd EnvironmentFile: the S3 credentials for the AWS chain (empty for other backends)."""
    sec = state.secrets
    lines = ["# Rendered by the updown-app charm; do not edit."]
    if state.config.storage_backend == "s3":
        for name, value in (
            ("AWS_ACCESS_KEY_ID", sec.s3_access_key_id),
            ("AWS_SECRET_ACCESS_KEY", sec.s3_secret_access_key),
        ):
            if value is not None:
                raw = value.get_secret_value()
                if any(c in raw for c in "\n\r\"\\'"):
                    raise ValueError(f"refusing to render {name}: it contains quotes, backslashes or newlines")
                lines.append(f'{name}="{raw}"')
    return "\n".join(lines) + "\n"


def render_unit(state: AppState, layout: Layout, user: str = USER) -> str:
    """The systemd unit. Stopping sends SIGTERM: uvicorn stops accepting and lets in-flight transfers finish,
    for at most drain-timeout seconds (TimeoutStopSec), before systemd kills what is left."""
    return "\n".join(
        [
            "# Rendered by the updown-app charm (workload.render_unit); do not edit.",
            "[Unit]",
            "Description=updown upload/download service",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=exec",
            f"User={user}",
            f"Group={user}",
            f"Environment=UPDOWN_CONFIG={layout.config}",
            f"EnvironmentFile=-{layout.environment}",
            f"ExecStart={layout.updown()} serve --config {layout.config}",
            "Restart=on-failure",
            "RestartSec=2",
            "KillSignal=SIGTERM",
            f"TimeoutStopSec={state.config.drain_timeout}",
            "LimitNOFILE=65536",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            f"ReadWritePaths={layout.data_dir}",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def rendered_files(state: AppState, layout: Layout) -> dict[Path, str]:
    files = {
        layout.config: render_config(state, layout),
        layout.hmac_keys: render_hmac_keys(state),
        layout.environment: render_environment(state),
        layout.unit_file: render_unit(state, layout),
    }
    if state.store_ca:
        files[layout.store_ca] = state.store_ca  # a left-over file is harmless: the config names it or not
    return files


def running_port(layout: Layout) -> int | None:
    """The port in the config file on disk: the one the service runs with (a new one waits for its restart)."""
    import tomllib

    try:
        port = tomllib.loads(layout.config.read_text()).get("port")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return port if isinstance(port, int) else None


def fingerprint(files: Mapping[Path, str]) -> str:
    """A short hash of the rendered files: the peers compare it to know who still runs an older config."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path).encode() + b"\0" + files[path].encode() + b"\0")
    return digest.hexdigest()[:16]


def write_files(
    rendered: Mapping[Path, str], private: frozenset[Path] = frozenset(), group: str | None = None
) -> set[Path]:
    """Atomically write the files whose content changed. `private` ones (secrets) get mode 0640 and the
    service's group, so only root and the service read them. Returns the changed paths."""
    return files.write_files(rendered, private, private_mode=0o640, group=group)


# --- releases -------------------------------------------------------------------------------------------------


def wheelhouse_release(wheelhouse: Path) -> str | None:
    """The updown-app version the charm carries (the one updown_app wheel in its wheelhouse)."""
    versions = sorted(m["version"] for p in wheelhouse.glob("*.whl") if (m := _WHEEL.match(p.name)))
    if len(versions) > 1:
        raise ValueError(f"the wheelhouse holds several updown-app releases: {versions}")
    return versions[0] if versions else None


def installed_releases(layout: Layout) -> list[str]:
    if not layout.releases.is_dir():
        return []
    return sorted(p.name for p in layout.releases.iterdir() if (p / ".installed").exists())


def current_release(layout: Layout) -> str | None:
    if not layout.current.is_symlink():
        return None
    return Path(os.readlink(layout.current)).name


def install_release(
    wheelhouse: Path, version: str, layout: Layout, *, python: str = "python3", system_site_packages: bool = False
) -> Path:
    """Install `version` from the wheelhouse into its own venv, without any index (no network at deploy time).
    Idempotent: a finished install has a `.installed` marker, an interrupted one is started over. The venv is
    built in place (not renamed afterwards): its scripts' shebangs name the venv's own path."""
    target = layout.release_dir(version)
    if (target / ".installed").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    venv = [python, "-m", "venv", *(["--system-site-packages"] if system_site_packages else []), str(target)]
    run(venv)
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse)]
    run([*pip, "--no-cache-dir", "--quiet", f"{PACKAGE}=={version}"])
    (target / ".installed").write_text(version + "\n")
    return target


def activate(version: str, layout: Layout) -> None:
    """Point `current` at a release atomically (rename over the old link)."""
    target = layout.release_dir(version)
    if not (target / ".installed").exists():
        raise FileNotFoundError(f"release {version} is not installed")
    tmp = layout.current.with_name(".current.new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(layout.current)


def prune_releases(layout: Layout, keep: set[str]) -> list[str]:
    """Remove installed releases other than `keep` (the current, the previous and the target ones)."""
    removed = []
    for version in installed_releases(layout):
        if version not in keep and version != current_release(layout):
            shutil.rmtree(layout.release_dir(version), ignore_errors=True)
            removed.append(version)
    return removed


# --- service control (the charm's tests replace these) --------------------------------------------------------


# What a command the charm runs sees of the hook's environment: nothing else. The hook runs with the charm's own
# Python path (dispatch sets PYTHONPATH=lib:venv): handed to pip, the charm's pydantic, cryptography, ... count
# as installed and are left out of the release venv, which then fails under systemd. Juju's JUJU_* context and the
# proxy settings are not needed by any command we run either.
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_KEPT_ENV = ("LANG", "LC_ALL", "TZ", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


# s: a hook never waits longer on one command (pip, systemctl) unless the caller says so; Juju runs one hook at a
# time per unit, so a stuck command would hold every later one
COMMAND_TIMEOUT = 300.0


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every command the workload runs: the system PATH, root's HOME, the locale and proxy
    settings, and `extra`; never PYTHONPATH, PYTHONHOME, VIRTUAL_ENV or the charm's PATH."""
    env = {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    env.update({k: os.environ[k] for k in _KEPT_ENV if k in os.environ})
    return {**env, **(extra or {})}


def run(argv: Sequence[str | Path], env: Mapping[str, str] | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
    # the command and its first words only: never ids or scripts
    logger.info("running %s", " ".join(str(a)[:40] for a in argv[:3]))
    result = subprocess.run(
        [str(a) for a in argv],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
    )
    return result.stdout


def install_os() -> None:
    apt.install(APT_PACKAGES, run)
    try:
        run(["id", "-u", USER])
    except subprocess.CalledProcessError:
        run(["useradd", "--system", "--home-dir", "/var/lib/updown", "--shell", "/usr/sbin/nologin", USER])


def prepare_dirs(layout: Layout) -> None:
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(layout.data_dir, user=USER, group=USER)


def restart(layout: Layout, unit_changed: bool) -> None:
    if unit_changed:
        run(["systemctl", "daemon-reload"])
    run(["systemctl", "enable", SERVICE])
    # restart = stop (SIGTERM, in-flight transfers finish within TimeoutStopSec) + start on the current release
    run(["systemctl", "restart", SERVICE])


def stop() -> None:
    run(["systemctl", "stop", SERVICE])


def health_check(url: str, timeout: float, interval: float = 0.5) -> tuple[bool, str]:
    """Poll the app's readiness (database and storage usable) until it answers 200 or `timeout` passes.
    Returns (ready, what failed last: e.g. "storage failed", "not answering")."""
    deadline = time.monotonic() + timeout
    detail = "not answering"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(5.0, timeout)) as response:  # noqa: S310 (http to self)
                if response.status == 200:
                    return True, ""
        except urllib.error.HTTPError as exc:  # 503: the body says which check failed
            try:
                checks = json.loads(exc.read() or b"{}").get("checks", {})
                detail = ", ".join(f"{k} {v}" for k, v in sorted(checks.items()) if v != "ok") or f"HTTP {exc.code}"
            except ValueError:
                detail = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError):
            detail = "not answering"
        if time.monotonic() >= deadline:
            return False, detail
        time.sleep(interval)


def health_url(state: AppState) -> str:
    return f"http://127.0.0.1:{state.config.port}{HEALTH_PATH}"


def migrate(version: str, layout: Layout) -> str:
    """`updown db upgrade` with the release's own code (its Alembic migrations); returns its JSON output."""
    return run([layout.updown(version), "db", "upgrade", "--config", layout.config], timeout=3600)


def purge_uploads(layout: Layout) -> str:
    return run([layout.updown(), "purge-uploads", "--config", layout.config], timeout=3600)


def find_published(layout: Layout, path: str) -> str | None:
    """The id of the published file served at `path` (/<package>/<revision>/<filename>), through the current
    release's own `updown find-published` (the app's API looks files up by id only)."""
    parts = path.strip().strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError("name must be /<package>/<revision>/<filename>")
    out = run([layout.updown(), "find-published", "--config", str(layout.config), "/" + "/".join(parts)], timeout=120)
    found = json.loads(out.strip().splitlines()[-1])["id"]
    return str(found) if found else None


def unpublish(state: AppState, layout: Layout, file_id: str, key_id: str | None = None) -> str:
    """Unpublish a file through the local unit's signed API (the app purges the frontend caches before it
    answers). The key goes in the environment, never on the command line."""
    keys = state.secrets.hmac_keys
    kid = key_id or sorted(keys)[0]
    if kid not in keys:
        raise KeyError(kid)
    env = {
        "UPDOWN_URL": f"http://127.0.0.1:{state.config.port}",
        "UPDOWN_KEY_ID": kid,
        "UPDOWN_KEY": keys[kid].get_secret_value(),
    }
    return run([layout.updown(), "unpublish", file_id], env=env, timeout=120)
