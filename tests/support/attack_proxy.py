"""A malicious plain-HTTP proxy in front of a real upstream updown, for the import attack tests.

It forwards GET and HEAD (with Range/If-Range) and passes the upstream's answer on with its headers (Digest,
ETag, Content-Range, ...), unless told to attack a path: answer recorded earlier bytes instead (a frozen index,
a file the upstream has since unpublished), flip one byte of a body, answer an error status, send more bytes
than asked, or drop the connection halfway through the body.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.support.server import ServerProcess

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "server", "date"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class AttackProxy:
    upstream: ServerProcess
    replay: dict[str, Answer] = field(default_factory=dict)  # path -> answered instead of the upstream's
    flip_once: dict[str, int] = field(default_factory=dict)  # path -> offset of the byte flipped, next answer only
    status: dict[str, int] = field(default_factory=dict)  # path -> error status answered
    drop: set[str] = field(default_factory=set)  # paths whose body is cut halfway, connection closed
    pad: dict[str, int] = field(default_factory=dict)  # path -> bytes of junk appended to the body
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.upstream.base_url, verify=self.upstream.verify, timeout=30)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._answer(self, "GET")

            def do_HEAD(self) -> None:
                proxy._answer(self, "HEAD")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def fetch(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> Answer:
        r = self.client.request(method, path, headers=headers or {})
        kept = {k: v for k, v in r.headers.items() if k.lower() not in _HOP_BY_HOP}
        return Answer(r.status_code, kept, r.content)

    def record(self, path: str) -> Answer:
        """What the upstream answers now, to be replayed later (``replay[path] = proxy.record(path)``)."""
        return self.fetch(path)

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path
        headers = {k.lower(): v for k, v in handler.headers.items()}
        self.requests.append((method, path, headers))
        with self._lock:
            offset = self.flip_once.pop(path, None)
        if path in self.status:
            answer = Answer(self.status[path], {"content-type": "text/plain"}, b"upstream broke")
        elif path in self.replay:
            answer = self.replay[path]
        else:
            fwd = {k: v for k, v in headers.items() if k in ("range", "if-range", "x-forwarded-proto")}
            answer = self.fetch(path, method, fwd)
        body = answer.body
        if offset is not None and offset < len(body):
            body = body[:offset] + bytes([body[offset] ^ 0xFF]) + body[offset + 1 :]
        body += b"\0" * self.pad.get(path, 0)
        length = int(answer.headers.get("content-length", len(body))) if method == "HEAD" else len(body)
        handler.send_response(answer.status)
        for k, v in answer.headers.items():
            if k.lower() != "content-length":
                handler.send_header(k, v)
        handler.send_header("content-length", str(length))
        handler.end_headers()
        if method == "HEAD":
            return
        if path in self.drop:
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.client.close()
