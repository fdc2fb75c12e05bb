"""Capability tokens of resumable upload URLs: ``/v1/uploads/<session>/<expires>/<key id>/<signature>``.

The signature is HMAC-SHA256, with the HMAC key named by the key id (the key that signed the creation request),
over ``UPDOWN-UPLOAD\\n<session id>\\n<expires, Unix seconds>\\n<key id>``. Any unit holding the shared keys checks
it without asking anyone; the token holds no secret, and lives in the path, never in a query string.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from updown_app.core.errors import Expired, NotFound

SCOPE = "UPDOWN-UPLOAD"
SESSION_RE = re.compile(r"^[0-9a-f]{32}$")
SIG_RE = re.compile(r"^[0-9a-f]{64}$")


def _mac(secret: bytes, session_id: str, expires: int, key_id: str) -> str:
    message = f"{SCOPE}\n{session_id}\n{expires}\n{key_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def upload_path(secret: bytes, session_id: str, expires: int, key_id: str) -> str:
    return f"/v1/uploads/{session_id}/{expires}/{key_id}/{_mac(secret, session_id, expires, key_id)}"


def verify(
    keys: Mapping[str, bytes], session_id: str, expires: str, key_id: str, sig: str, now: float | None = None
) -> int:
    """The expiry of a valid upload URL; 404 for a tampered or unknown one, 410 once it expired."""
    secret = keys.get(key_id)
    if (
        secret is None
        or not SESSION_RE.match(session_id)
        or not expires.isdigit()
        or not SIG_RE.match(sig)
        or not hmac.compare_digest(_mac(secret, session_id, int(expires), key_id), sig)
    ):
        raise NotFound("not_found", "no such upload")
    if int(expires) <= (time.time() if now is None else now):
        raise Expired("upload_expired", "this upload expired")
    return int(expires)
