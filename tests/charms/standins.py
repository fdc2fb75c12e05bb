"""Small real HTTP servers standing in for the units a rendered HAProxy config points at."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Named(BaseHTTPRequestHandler):
    """Answers every GET with an empty 200 naming its server in one header."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server = self.server
        self.send_response(200)
        self.send_header(server.header, server.name)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def named_servers(header: str, names: Iterable[str]) -> Iterator[dict[str, int]]:
    """Stand-ins (for Varnish or app units) on loopback, each answering `header: <its name>`: name -> port."""
    servers = {}
    try:
        for name in names:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Named)
            server.header, server.name = header, name  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers[name] = server
        yield {name: s.server_address[1] for name, s in servers.items()}
    finally:
        for s in servers.values():
            s.shutdown()
            s.server_close()
