"""Verification of the store's HMAC-signed requests: key ring, clock skew and replayed nonces.

The canonical form itself lives in ``updown_app.core.signing`` so the client and the server cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from updown_app.core import signing
from updown_app.core.errors import Unauthenticated
from updown_app.metadata.repository import Repository


def _unauthorized(code: str, message: str) -> Unauthenticated:
    return Unauthenticated(code, message, signing.SCHEME)


class RequestVerifier:
    def __init__(
        self,
        keys: Mapping[str, bytes],
        repository: Repository,
        max_skew: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = dict(keys)
        self.repository = repository
        self.max_skew = max_skew
        self.clock = clock

    def credentials(self, authorization: str | None) -> signing.Credentials:
        """Parse the header before any body is read, so unsigned uploads are refused at once."""
        if not authorization:
            raise _unauthorized("missing_signature", "this request must be signed (Authorization header)")
        creds = signing.parse_authorization(authorization)
        if creds is None:
            raise _unauthorized("invalid_signature", "malformed Authorization header")
        if creds.key_id not in self.keys:
            raise _unauthorized("unknown_key", "unknown signing key id")
        return creds

    async def verify(self, creds: signing.Credentials, method: str, path: str, fields: Mapping[str, str]) -> str:
        """Check signature, timestamp and nonce; returns the key id. Consumes the nonce."""
        if not signing.verify(self.keys[creds.key_id], method, path, fields, creds.signature):
            raise _unauthorized("invalid_signature", "the signature does not match the request")
        raw_ts = fields.get("timestamp", "")
        nonce = fields.get("nonce", "")
        if not raw_ts.isdigit():
            raise _unauthorized("invalid_timestamp", "field 'timestamp' must be Unix seconds")
        if not signing.NONCE_RE.match(nonce):
            raise _unauthorized("invalid_nonce", "field 'nonce' must be 16-128 characters of [A-Za-z0-9_-]")
        now = self.clock()
        if abs(now - int(raw_ts)) > self.max_skew:
            raise _unauthorized("clock_skew", f"timestamp is more than {self.max_skew} s away from server time")
        # A nonce must be remembered for as long as its timestamp stays acceptable.
        expires = datetime.fromtimestamp(int(raw_ts), UTC) + timedelta(seconds=self.max_skew + 1)
        if not await self.repository.consume_nonce(creds.key_id, nonce, expires):
            raise _unauthorized("replayed_nonce", "this nonce was already used")
        return creds.key_id
