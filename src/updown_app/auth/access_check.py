"""Asking the store whether a user may have a package (protocol: docs/private-downloads.md).

``POST <access_check.url>`` with a JSON object of string fields ``user``, ``package``, ``timestamp`` and
``nonce``, signed with the store's own HMAC scheme (``updown_app.core.signing``: method ``POST``, the URL's path, those
four fields) in ``Authorization: UPDOWN-HMAC-SHA256 KeyId=..., Signature=...``. The store answers ``200`` with
``{"allowed": true|false}`` and optionally ``"max_age": <seconds>`` to shorten our caching of that answer.
Anything else (another status, malformed JSON, no answer within ``timeout``) means "cannot decide": 503 with
``Retry-After`` upstream, never a download, never cached.

Answers are cached per (user, package): "allowed" for ``allowed_ttl`` but never past the token's expiry,
"denied" for ``denied_ttl``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from updown_app.auth.cache import SingleFlight, TtlCache
from updown_app.auth.remote import post_json
from updown_app.core import signing
from updown_app.core.errors import Unavailable
from updown_app.settings import AccessCheckSettings

log = logging.getLogger("updown.auth.access")


class StoreUnavailable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AccessChecker:
    def __init__(
        self,
        settings: AccessCheckSettings,
        key_id: str,
        secret: bytes,
        http: httpx.AsyncClient,
        retry_after: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.url is None:
            raise ValueError("private.access_check.url is not set")
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("private.access_check.url must be an http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("private.access_check.url must not have a query or fragment")
        self.settings = settings
        self.url = settings.url
        self.path = parts.path or "/"
        self.key_id = key_id
        self._secret = secret
        self.http = http
        self.retry_after = retry_after
        self.clock = clock
        self.cache: TtlCache[tuple[str, str], bool] = TtlCache(settings.cache_size)
        self._flights: SingleFlight[tuple[str, str], tuple[bool, float | None]] = SingleFlight()

    async def allowed(self, user: str, package: str, not_after: float | None = None) -> bool:
        """The store's answer for (user, package); Unavailable when it cannot be had.

        ``not_after`` (the token's expiry) bounds how long an "allowed" answer is cached.
        """
        key = (user, package)
        cached = self.cache.get(key, self.clock())
        if cached is not None:
            return cached
        allowed, max_age = await self._flights.run(key, lambda: self._ask_or_fail(user, package))
        now = self.clock()
        ttl = self.settings.allowed_ttl if allowed else self.settings.denied_ttl
        if max_age is not None:
            ttl = min(ttl, max_age)
        expires_at = now + ttl
        if allowed and not_after is not None:
            expires_at = min(expires_at, not_after)
        self.cache.set(key, allowed, expires_at, now)
        return allowed

    async def _ask_or_fail(self, user: str, package: str) -> tuple[bool, float | None]:
        try:
            return await self._ask(user, package)
        except StoreUnavailable as exc:
            log.error(
                "store access check unavailable: failing closed",
                extra={"reason": exc.reason, "user": user, "package": package},
            )
            raise Unavailable(
                "store_unavailable", "the store's access check cannot be reached; retry later", self.retry_after
            ) from None

    def request(self, user: str, package: str) -> tuple[bytes, dict[str, str]]:
        """The signed request body and headers (also what the store's side verifies against)."""
        fields = {"user": user, "package": package, **signing.fresh_fields(self.clock())}
        headers = {
            "authorization": signing.authorization_header(self.key_id, self._secret, "POST", self.path, fields),
            "content-type": "application/json",
            "accept": "application/json",
        }
        return json.dumps(fields).encode(), headers

    async def _ask(self, user: str, package: str) -> tuple[bool, float | None]:
        body, headers = self.request(user, package)
        answer = await post_json(
            self.http, self.url, self.settings.timeout, StoreUnavailable, "access check", content=body, headers=headers
        )
        if not isinstance(answer.get("allowed"), bool):
            raise StoreUnavailable("access check answer has no boolean 'allowed'")
        max_age = answer.get("max_age")
        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age < 0):
            raise StoreUnavailable("access check answer has an invalid 'max_age'")
        return answer["allowed"], None if max_age is None else float(max_age)
