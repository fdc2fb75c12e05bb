"""``updown serve``: uvicorn (uvloop + httptools) on the service port, plus the plain-HTTP redirect listener.

Both listeners run in one process and share one application; only the main server handles signals and the
lifespan, the redirect listener is stopped when the main server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import resource
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal, cast

import uvicorn

from updown_app.http.app import create_app
from updown_app.http.protocol import JsonErrorsProtocol
from updown_app.logs import setup_logging
from updown_app.malloc import one_heap
from updown_app.settings import Settings

LOCAL_KEY_ID = "local"


class _QuietServer(uvicorn.Server):
    """A secondary server that leaves signal handling to the main one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def ensure_local_key(settings: Settings) -> Path | None:
    """On a first single-node run with no key at all, create one so the bundled client works out of the box."""
    if settings.signing_keys():
        return None
    path = settings.data_dir / "hmac-keys.json"
    if path.exists():  # made by an earlier first run
        settings.hmac_keys_file = path
        return path
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({LOCAL_KEY_ID: secrets.token_urlsafe(32)}, out)
    settings.hmac_keys_file = path
    return path


def protocol(settings: Settings) -> type[asyncio.Protocol]:
    """The HTTP protocol with the configured connection limits (a partial, so worker processes can unpickle it)."""
    return cast("type[asyncio.Protocol]", functools.partial(JsonErrorsProtocol, limits=settings.limits))


def _config(
    settings: Settings, port: int, tls: tuple[Path, Path] | None, lifespan: Literal["on", "off"]
) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings) if lifespan == "on" else _redirect_app(settings),
        host=settings.bind,
        port=port,
        loop="uvloop",
        http=protocol(settings),
        ws="none",  # no WebSocket routes: not even importing a WebSocket library
        lifespan=lifespan,
        proxy_headers=False,  # ours is configured from trusted_proxies, never uvicorn's default trust of loopback
        server_header=False,
        date_header=True,
        access_log=False,
        log_config=None,
        timeout_keep_alive=settings.limits.idle_timeout,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )


def _redirect_app(settings: Settings):  # type: ignore[no-untyped-def]
    from updown_app.http.middleware.host import StrictHostMiddleware
    from updown_app.http.middleware.https_only import HttpsOnlyMiddleware

    async def nothing(scope, receive, send):  # type: ignore[no-untyped-def]  # never reached: all is redirected
        raise RuntimeError("the redirect listener serves nothing")

    hostnames = (settings.public_host, settings.private_host)
    return StrictHostMiddleware(
        HttpsOnlyMiddleware(nothing, redirect_port=settings.redirect_port, hsts=False, hostnames=hostnames)
    )


def invoked_as() -> str:
    """How to run this very ``updown`` from here, as the banner's commands say it: ``updown`` when that is on
    PATH, else the path it was started by (``.venv/bin/updown`` after the README's install), or ``python -m``."""
    argv0 = sys.argv[0]
    if Path(argv0).name != "updown":  # python -m updown_app
        return f"{shlex.quote(sys.executable)} -m updown_app"
    on_path = shutil.which("updown")
    if on_path is not None and Path(on_path).resolve() == Path(argv0).resolve():
        return "updown"
    return shlex.quote(argv0)


def banner(settings: Settings, cert: Path | None, key_file: Path | None) -> str:
    scheme = "https" if settings.tls else "http"
    port = f":{settings.port}"
    lines = [
        f"updown listening on {settings.bind}{port} ({scheme})",
        f"  public downloads:  {scheme}://{settings.public_host}{port}/<package>/<revision>/<filename>",
        f"  private downloads: {scheme}://{settings.private_host}{port}/<package>/<revision>/<filename>",
    ]
    if settings.tls and settings.http_port:
        lines.append(f"  plain HTTP on :{settings.http_port} answers 308 to HTTPS")
    if cert is not None:
        lines.append(f"  TLS certificate (self-signed): {cert}")
    keyfile = key_file or settings.hmac_keys_file
    lines += [
        "",
        "Upload a first file with the bundled client:",
        f"  export UPDOWN_URL={scheme}://{settings.public_host}{port}",
    ]
    if cert is not None:
        lines.append(f"  export UPDOWN_CA_BUNDLE={cert}")
    if keyfile is not None:
        first_id = next(iter(json.loads(Path(keyfile).read_text())), LOCAL_KEY_ID)
        lines.append(f"  export UPDOWN_KEY_ID={first_id} UPDOWN_KEY_FILE={keyfile}")
    updown = invoked_as()
    lines += [
        "  echo hello > hello.txt",
        f"  {updown} upload hello.txt --package hello --revision 1     # prints the file id",
        f"  {updown} publish <id>",
        f"  {updown} download {scheme}://{settings.public_host}{port}/hello/1/hello.txt",
    ]
    return "\n".join(lines)


def listening_socket(host: str, port: int, notsent_lowat: int) -> socket.socket:
    """The service's listening socket; accepted connections inherit TCP_NOTSENT_LOWAT from it.

    Without that limit the send buffer autotunes to 4 MiB and a slow reader's socket swallows whole chunks, which
    hides the slowness from the response's read sizing (streaming.py). It does not limit bytes in flight.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if lowat is not None and notsent_lowat > 0:
        sock.setsockopt(socket.IPPROTO_TCP, lowat, notsent_lowat)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bound_tls_handshakes(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    """uvicorn creates its servers without TLS timeouts, so asyncio's defaults would let a client that never starts
    a handshake hold a connection for 60 s, and one that never answers the server's close_notify (a slowloris that
    keeps sending after its 408) for 30 s more; every TLS server of this loop gets ``timeout`` for both instead."""
    create_server = loop.create_server

    async def with_timeout(*args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", timeout)
            kwargs.setdefault("ssl_shutdown_timeout", timeout)
        return await create_server(*args, **kwargs)

    loop.create_server = with_timeout  # type: ignore[method-assign]


def raise_open_files_limit(wanted: int) -> None:
    """Each connection is a file descriptor: lift the soft limit towards what max_connections needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _serve(settings: Settings, tls: tuple[Path, Path] | None) -> None:
    bound_tls_handshakes(asyncio.get_running_loop(), settings.limits.tls_handshake_timeout)
    main = uvicorn.Server(_config(settings, settings.port, tls, "on"))
    main_socket = listening_socket(settings.bind, settings.port, settings.tcp_notsent_lowat)
    servers = [main]
    if settings.tls and settings.http_port:
        servers.append(_QuietServer(_config(settings, settings.http_port, None, "off")))
    tasks = [asyncio.create_task(main.serve(sockets=[main_socket]))]
    tasks += [asyncio.create_task(s.serve()) for s in servers[1:]]
    await tasks[0]
    for extra in servers[1:]:
        extra.should_exit = True
    await asyncio.gather(*tasks[1:], return_exceptions=True)


def migrate_in_child(settings: Settings) -> None:
    """``auto_migrate`` for ``updown serve``: the migrations run in a child process (``updown db upgrade`` on this
    very database), so alembic, mako and pygments (~13 MB that a process never gives back) are not kept by the
    server for its whole life. The app then starts without migrating."""
    env = {**os.environ, "UPDOWN_DATABASE_URL": settings.resolved_database_url}
    done = subprocess.run(
        [sys.executable, "-m", "updown_app", "db", "upgrade"], env=env, stdout=subprocess.DEVNULL, check=False
    )
    if done.returncode != 0:
        sys.exit(f"updown: the database migration failed (exit status {done.returncode})")
    settings.auto_migrate = False


def serve(settings: Settings) -> None:
    setup_logging(settings.log_level)
    raise_open_files_limit(settings.limits.max_connections + 256)  # + the database, store and cache connections
    key_file = ensure_local_key(settings)
    tls: tuple[Path, Path] | None = None
    if settings.tls:
        if settings.tls_cert and settings.tls_key:
            tls = (settings.tls_cert, settings.tls_key)
        else:
            from updown_app.http.tls import ensure_self_signed  # cryptography (~8 MB): only to make a certificate

            tls = ensure_self_signed(settings.data_dir / "tls", [settings.public_host, settings.private_host])
    if settings.workers > 1:
        if settings.tls:
            sys.exit("workers > 1 is for running behind a proxy (tls = false)")
        uvicorn.run(
            "updown_app.http.app:create_app",
            factory=True,
            host=settings.bind,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            http=protocol(settings),
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_config=None,
            timeout_keep_alive=settings.limits.idle_timeout,
        )
        return
    print(
        banner(settings, tls[0] if tls and not settings.tls_cert else None, key_file),
        file=sys.stderr,
        flush=True,
    )
    if settings.auto_migrate:
        migrate_in_child(settings)
    one_heap()  # before the pool threads exist: their heaps would keep an upload's memory (malloc.py)
    import uvloop

    uvloop.run(_serve(settings, tls))
