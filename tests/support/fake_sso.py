"""Small real HTTP servers on loopback that play the third parties of private downloads.

- ``FakeSso``: RFC 7662 introspection (``POST /introspect``, HTTP Basic client credentials) and a JWKS
  (``GET /jwks``), with keys generated in the test.
- ``FakeStore``: the store's access-check API (``POST /access-check``), which verifies our HMAC signature exactly
  as the store would (``updown_app.core.signing``), refuses replayed nonces and answers from a set of grants.

Both have a slow mode (``delay``), a failing mode (``fail_status``) and can be stopped and started again on the
same port (unreachable). Counters let tests see whether a cache answered instead.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from updown_app.core import signing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class FakeService:
    """A threaded HTTP server whose requests go to ``handle``; stop()/start() keep the port."""

    def __init__(self) -> None:
        self.port = 0
        self.delay = 0.0
        self.fail_status: int | None = None
        self.requests: list[tuple[str, str]] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> FakeService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _run(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with service.lock:
                    service.requests.append((method, self.path))
                if service.delay:
                    time.sleep(service.delay)
                if service.fail_status is not None:
                    status, answer = service.fail_status, {"error": "failing on purpose"}
                else:
                    status, answer = service.handle(method, self.path, dict(self.headers.items()), body)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (slow mode)

            def do_GET(self) -> None:
                self._run("GET")

            def do_POST(self) -> None:
                self._run("POST")

        self._httpd = _Server(("127.0.0.1", self.port), Handler)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for _, p in self.requests if p == path)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        raise NotImplementedError


S = TypeVar("S", bound=FakeService)


def running(service: S) -> Iterator[S]:
    """``service`` started for a fixture's lifetime: ``yield from running(FakeStore(...))``."""
    service.start()
    try:
        yield service
    finally:
        service.stop()


# The SSO ---------------------------------------------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header})


def rsa_key(kid: str, alg: str = "RS256") -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": alg})
    return SigningKey(kid, alg, private, jwk)


def ec_key(kid: str) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "ES256"})
    return SigningKey(kid, "ES256", private, jwk)


def unsigned_token(claims: dict[str, Any], kid: str) -> str:
    """An ``alg: none`` JWT (no signature)."""

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(claims)}."


class FakeSso(FakeService):
    INTROSPECT = "/introspect"
    JWKS = "/jwks"

    def __init__(self, client_id: str, client_secret: str) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens: dict[str, dict[str, Any]] = {}  # opaque token -> introspection claims while active
        self.keys: list[SigningKey] = []
        self.bad_client_auth = 0
        self.default_claims: dict[str, Any] = {}  # added to every issued token (iss, aud, ...)

    def introspection_env(self, cache_ttl: int = 1, negative_cache_ttl: int = 1) -> dict[str, str]:
        """The app's settings (environment) for this SSO in introspection mode."""
        return {
            "UPDOWN_PRIVATE__SSO__MODE": "introspection",
            "UPDOWN_PRIVATE__SSO__INTROSPECTION__URL": self.url(self.INTROSPECT),
            "UPDOWN_PRIVATE__SSO__INTROSPECTION__CLIENT_ID": self.client_id,
            "UPDOWN_PRIVATE__SSO__INTROSPECTION__CLIENT_SECRET": self.client_secret,
            "UPDOWN_PRIVATE__SSO__CACHE_TTL": str(cache_ttl),
            "UPDOWN_PRIVATE__SSO__NEGATIVE_CACHE_TTL": str(negative_cache_ttl),
        }

    def issue(self, token: str, user: str, lifetime: float = 3600, **claims: Any) -> str:
        self.tokens[token] = {
            "sub": user,
            "exp": int(time.time() + lifetime),
            "client_id": "store",
            **self.default_claims,
            **claims,
        }
        return token

    def revoke(self, token: str) -> None:
        self.tokens.pop(token, None)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == self.JWKS:
            return 200, {"keys": [key.jwk for key in self.keys]}
        if method == "POST" and path == self.INTROSPECT:
            expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if {k.lower(): v for k, v in headers.items()}.get("authorization") != f"Basic {expected}":
                self.bad_client_auth += 1
                return 401, {"error": "invalid_client"}
            form = dict(parse_qsl(body.decode()))
            claims = self.tokens.get(form.get("token", ""))
            if claims is None:
                return 200, {"active": False}
            return 200, {"active": True, **claims}
        return 404, {"error": "not found"}


# The store's access-check API -------------------------------------------------------------------------------------


class FakeStore(FakeService):
    PATH = "/api/v1/access-check"

    def __init__(self, keys: dict[str, bytes]) -> None:
        super().__init__()
        self.keys = keys
        self.grants: set[tuple[str, str]] = set()
        self.max_age: float | None = None
        self.seen_nonces: set[str] = set()
        self.bad_signatures = 0
        self.checks: list[dict[str, str]] = []

    def access_check_env(self, key_id: str, allowed_ttl: int = 60, denied_ttl: int = 1) -> dict[str, str]:
        """The app's settings (environment) for this access-check API, signing with `key_id`."""
        return {
            "UPDOWN_PRIVATE__ACCESS_CHECK__URL": self.url(self.PATH),
            "UPDOWN_PRIVATE__ACCESS_CHECK__KEY_ID": key_id,
            "UPDOWN_PRIVATE__ACCESS_CHECK__ALLOWED_TTL": str(allowed_ttl),
            "UPDOWN_PRIVATE__ACCESS_CHECK__DENIED_TTL": str(denied_ttl),
        }

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if method != "POST" or path != self.PATH:
            return 404, {"error": "not found"}
        lower = {k.lower(): v for k, v in headers.items()}
        creds = signing.parse_authorization(lower.get("authorization"))
        try:
            fields = json.loads(body)
        except ValueError:
            return 400, {"error": "bad json"}
        if (
            creds is None
            or creds.key_id not in self.keys
            or lower.get("content-type") != "application/json"
            or not isinstance(fields, dict)
            or not all(isinstance(v, str) for v in fields.values())
            or set(fields) != {"user", "package", "timestamp", "nonce"}
            or not signing.verify(self.keys[creds.key_id], "POST", path, fields, creds.signature)
            or abs(time.time() - int(fields["timestamp"])) > 300
            or fields["nonce"] in self.seen_nonces
        ):
            self.bad_signatures += 1
            return 401, {"error": "bad signature"}
        self.seen_nonces.add(fields["nonce"])
        self.checks.append(fields)
        answer: dict[str, Any] = {"allowed": (fields["user"], fields["package"]) in self.grants}
        if self.max_age is not None:
            answer["max_age"] = self.max_age
        return 200, answer

    def count_for(self, user: str, package: str) -> int:
        return sum(1 for c in self.checks if c["user"] == user and c["package"] == package)
