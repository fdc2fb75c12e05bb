"""The HMAC-SHA256 request signature shared by the service, its client and the store (see docs/signing.md).

String to sign, lines joined by a single LF, no trailing LF::

    UPDOWN-HMAC-SHA256
    <METHOD, upper case>
    <path exactly as sent on the request line, without the query>
    <canonical fields>

Canonical fields: every field of the request except file bytes (form fields and query parameters alike), each
name and value UTF-8 percent-encoded with RFC 3986 unreserved characters left as they are, written ``name=value``,
sorted by encoded name, joined with ``&``. ``timestamp`` (Unix seconds) and ``nonce`` are required fields.

Header: ``Authorization: UPDOWN-HMAC-SHA256 KeyId=<key id>, Signature=<lower-case hex>``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

SCHEME = "UPDOWN-HMAC-SHA256"
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HEADER_RE = re.compile(rf"^{SCHEME}\s+KeyId=(?P<kid>[A-Za-z0-9._-]{{1,64}}),\s*Signature=(?P<sig>[0-9a-f]{{64}})$")


def _enc(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_fields(fields: Mapping[str, str]) -> str:
    return "&".join(sorted(f"{_enc(name)}={_enc(value)}" for name, value in fields.items()))


def string_to_sign(method: str, path: str, fields: Mapping[str, str]) -> str:
    return "\n".join((SCHEME, method.upper(), path, canonical_fields(fields)))


def signature(secret: bytes, method: str, path: str, fields: Mapping[str, str]) -> str:
    return hmac.new(secret, string_to_sign(method, path, fields).encode(), hashlib.sha256).hexdigest()


def authorization_header(key_id: str, secret: bytes, method: str, path: str, fields: Mapping[str, str]) -> str:
    return f"{SCHEME} KeyId={key_id}, Signature={signature(secret, method, path, fields)}"


@dataclass(frozen=True)
class Credentials:
    key_id: str
    signature: str


def parse_authorization(value: str | None) -> Credentials | None:
    """The key id and signature of an Authorization header, or None when it is not ours / malformed."""
    if not value:
        return None
    match = _HEADER_RE.match(value.strip())
    if match is None:
        return None
    return Credentials(match["kid"], match["sig"])


def channels_field(channels: Sequence[str]) -> str:
    """The canonical ``channels`` field of a publish: the channel names sorted, joined by ``,``."""
    return ",".join(sorted(channels))


def fresh_fields(now: float | None = None) -> dict[str, str]:
    """A timestamp and a random nonce, the two fields every signed request carries."""
    return {"timestamp": str(int(time.time() if now is None else now)), "nonce": secrets.token_urlsafe(24)}


def verify(secret: bytes, method: str, path: str, fields: Mapping[str, str], given: str) -> bool:
    """Constant-time comparison of a presented signature against the expected one."""
    return hmac.compare_digest(signature(secret, method, path, fields), given)
