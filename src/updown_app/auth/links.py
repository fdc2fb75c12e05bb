"""Time-limited download links: capabilities bound to one file and one user, signed with HMAC-SHA256.

For clients that cannot send an ``Authorization`` header (apt, a browser). A link is a path on the private host::

    /-/link/<token>/<package>/<revision>/<filename>

    token     = <key id> "." <payload> "." <signature>
    payload   = base64url, unpadded, of the UTF-8 JSON object {"f": <file id>, "u": <user>, "e": <expiry, Unix s>}
    signature = base64url, unpadded, of HMAC-SHA256(link key, "updown-link-v1." <key id> "." <payload>)

The token travels in the path, never in a query string, and the access log records the path with the token cut
out. The signature is compared in constant time before anything else is looked at; several key ids may be
active at once (rotation). See docs/private-downloads.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from updown_app.settings import LinkSettings

PREFIX = "/-/link/"
_DOMAIN = b"updown-link-v1."
MAX_TOKEN_LENGTH = 2048
_TOKEN_RE = re.compile(
    r"^(?P<kid>[A-Za-z0-9_-]{1,64})\.(?P<payload>[A-Za-z0-9_-]{1,1900})\.(?P<sig>[A-Za-z0-9_-]{43})$"
)
KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class LinkError(Exception):
    """A link that must not be honoured; ``code``/``reason`` are safe to show (they never quote the token)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Link:
    file_id: str
    user: str
    expires_at: int
    key_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    def __init__(self, keys: Mapping[str, bytes], signing_key_id: str | None = None) -> None:
        for kid in keys:
            if not KEY_ID_RE.match(kid):
                raise ValueError("link key ids must be 1-64 characters of [A-Za-z0-9_-]")
        self.keys = dict(keys)
        if signing_key_id is None and len(self.keys) == 1:
            signing_key_id = next(iter(self.keys))
        if signing_key_id is not None and signing_key_id not in self.keys:
            raise ValueError("the signing key id names no link key")
        self.signing_key_id = signing_key_id

    @classmethod
    def from_settings(cls, settings: LinkSettings) -> LinkSigner | None:
        if not settings.keys:
            return None
        keys = {kid: secret.get_secret_value().encode() for kid, secret in settings.keys.items()}
        return cls(keys, settings.signing_key_id)

    def _mac(self, key_id: str, payload: str) -> bytes:
        return hmac.new(self.keys[key_id], _DOMAIN + f"{key_id}.{payload}".encode(), hashlib.sha256).digest()

    def mint(self, file_id: str, user: str, expires_at: int) -> str:
        if self.signing_key_id is None:
            raise ValueError("no link signing key")
        body = json.dumps({"f": file_id, "u": user, "e": int(expires_at)}, separators=(",", ":"))
        payload = _b64(body.encode())
        token = f"{self.signing_key_id}.{payload}.{_b64(self._mac(self.signing_key_id, payload))}"
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError("user or file id too long for a link")
        return token

    def verify(self, token: str, now: float | None = None) -> Link:
        """The link a token grants, or LinkError (403 upstream): tampered, unknown key, expired."""
        match = _TOKEN_RE.match(token) if len(token) <= MAX_TOKEN_LENGTH else None
        if match is None:
            raise LinkError("invalid_link", "malformed download link")
        kid, payload = match["kid"], match["payload"]
        secret = self.keys.get(kid)
        # An unknown key id still costs one HMAC, so timing does not tell key ids apart from bad signatures.
        expected = hmac.new(
            secret if secret is not None else b"\0" * 32, _DOMAIN + f"{kid}.{payload}".encode(), hashlib.sha256
        ).digest()
        try:
            given = _unb64(match["sig"])
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(expected, given) or secret is None:
            raise LinkError("invalid_link", "the download link is not valid")
        try:
            claims = json.loads(_unb64(payload))
            file_id, user, expires_at = claims["f"], claims["u"], claims["e"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise LinkError("invalid_link", "the download link is not valid") from None
        if not isinstance(file_id, str) or not isinstance(user, str) or not isinstance(expires_at, int):
            raise LinkError("invalid_link", "the download link is not valid")
        if (time.time() if now is None else now) >= expires_at:
            raise LinkError("expired_link", "the download link has expired")
        return Link(file_id, user, expires_at, kid)


def link_path(token: str, package: str, revision: str, filename: str) -> str:
    return PREFIX + "/".join(quote(part, safe="") for part in (token, package, revision, filename))


def redacted_path(path: str) -> str:
    """A link path with its token cut out, for logs."""
    if not path.startswith(PREFIX):
        return path
    _, _, rest = path[len(PREFIX) :].partition("/")
    return f"{PREFIX}<redacted>/{rest}"
