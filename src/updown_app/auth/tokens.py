"""Validation of the SSO's OAuth bearer tokens, chosen by ``private.sso.mode``.

- ``introspection``: RFC 7662, the token POSTed to the SSO with the service's client credentials (HTTP Basic).
- ``jwt``: signed access tokens verified offline (PyJWT) against the SSO's JWKS: issuer, audience, ``exp``,
  ``nbf``, an allow-list of asymmetric algorithms; the JWKS is fetched again on an unknown ``kid``, at most once
  per ``jwks_min_refetch_interval``.

Both sit behind one cache keyed by the token's SHA-256 (the token itself is not kept): a valid token is trusted
for at most ``cache_ttl`` and never past its own ``exp``, an invalid one is remembered for ``negative_cache_ttl``.
So a token revoked at the SSO stops working within ``cache_ttl``. When the SSO cannot be asked (unreachable,
slow past ``timeout``, a malformed answer) the answer is 503 with ``Retry-After``: fail closed, never cached.

Nothing here logs or returns a token, a client secret or a signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from updown_app.auth.cache import SingleFlight, TtlCache
from updown_app.auth.private import Principal
from updown_app.auth.remote import post_json
from updown_app.core.errors import Unauthenticated, Unavailable
from updown_app.settings import IntrospectionSettings, JwtSettings, SsoSettings

log = logging.getLogger("updown.auth.tokens")

MAX_TOKEN_LENGTH = 8192
# RFC 6750 b64token.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
REALM = 'Bearer realm="updown"'


class InvalidToken(Exception):
    """The token is not acceptable; ``reason`` is safe to log and to show (it never contains the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SsoUnavailable(Exception):
    """The SSO could not be asked; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unauthorized(code: str, message: str, error: str | None = None) -> Unauthenticated:
    challenge = REALM if error is None else f'{REALM}, error="{error}"'
    return Unauthenticated(code, message, challenge)


def unavailable(retry_after: int) -> Unavailable:
    return Unavailable("sso_unavailable", "the sign-on service cannot be reached; retry later", retry_after)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or Unauthenticated."""
    if authorization is None or not authorization.strip():
        raise unauthorized("missing_token", "private downloads need an OAuth bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("invalid_request", "malformed Authorization header: use 'Bearer <token>'", "invalid_request")
    if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_RE.match(token):
        raise unauthorized("invalid_request", "malformed bearer token", "invalid_request")
    return token


class TokenValidator(Protocol):
    async def validate(self, token: str) -> Principal:
        """The token's user, or InvalidToken / SsoUnavailable."""
        ...


def _audiences(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"claim {name!r} is not a number")
    return float(value)


def _user(claims: Mapping[str, Any], user_claim: str) -> str:
    user = claims.get(user_claim)
    if not isinstance(user, str) or not user or len(user) > 255:
        raise InvalidToken(f"the token names no user (claim {user_claim!r})")
    return user


class IntrospectionValidator:
    """RFC 7662: ``POST token=...`` with client_secret_basic; the answer's ``active`` decides."""

    def __init__(
        self,
        sso: SsoSettings,
        settings: IntrospectionSettings,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sso = sso
        self.settings = settings
        self.http = http
        self.clock = clock

    async def validate(self, token: str) -> Principal:
        claims = await post_json(
            self.http,
            self.settings.url,
            self.sso.timeout,
            SsoUnavailable,
            "introspection",
            data={"token": token, "token_type_hint": "access_token"},
            auth=(self.settings.client_id, self.settings.client_secret.get_secret_value()),
            headers={"accept": "application/json"},
        )
        if not isinstance(claims.get("active"), bool):
            raise SsoUnavailable("introspection answer has no boolean 'active'")
        if claims["active"] is not True:
            raise InvalidToken("the token is not active")
        now = self.clock()
        exp = _number(claims, "exp")
        if exp is not None and exp <= now:
            raise InvalidToken("the token has expired")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now:
            raise InvalidToken("the token is not valid yet")
        if self.sso.issuer is not None and claims.get("iss") != self.sso.issuer:
            raise InvalidToken("the token was issued by someone else")
        if self.sso.audience is not None and self.sso.audience not in _audiences(claims.get("aud")):
            raise InvalidToken("the token is meant for another audience")
        return Principal(_user(claims, self.sso.user_claim), exp)


class JwksCache:
    """The SSO's signing keys by ``kid``; refreshed after ``jwks_max_age``, and on an unknown ``kid`` at most
    once per ``jwks_min_refetch_interval`` (also after a failed fetch, so a down SSO is not hammered)."""

    def __init__(
        self,
        settings: JwtSettings,
        timeout: float,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self.http = http
        self.clock = clock
        self.keys: dict[str, dict[str, Any]] = {}
        self.fetched_at: float | None = None  # last successful fetch
        self.attempted_at: float | None = None  # last attempt, successful or not
        self.last_failed = False
        self.fetches = 0
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> dict[str, Any] | None:
        """The JWK for ``kid``, None when the SSO does not know it; SsoUnavailable when it cannot be asked."""
        if self._fresh() and kid in self.keys:
            return self.keys[kid]
        async with self._lock:
            if self._fresh() and kid in self.keys:
                return self.keys[kid]
            now = self.clock()
            recently = (
                self.attempted_at is not None and now - self.attempted_at < self.settings.jwks_min_refetch_interval
            )
            if not recently:
                await self._fetch()
            if self.last_failed and kid not in self.keys:
                raise SsoUnavailable("the JWKS could not be fetched")
        return self.keys.get(kid)

    def _fresh(self) -> bool:
        return self.fetched_at is not None and self.clock() - self.fetched_at < self.settings.jwks_max_age

    async def _fetch(self) -> None:
        self.attempted_at = self.clock()
        self.fetches += 1
        try:
            keys = await self._download()
        except SsoUnavailable as exc:
            self.last_failed = True
            if self.keys:
                # Keep verifying with the keys we have; an unknown kid is still refused below.
                log.warning("JWKS refresh failed; keeping the previous keys", extra={"reason": exc.reason})
                return
            raise
        self.last_failed = False
        self.keys = keys
        self.fetched_at = self.clock()
        log.info("JWKS fetched", extra={"kids": sorted(keys)})

    async def _download(self) -> dict[str, dict[str, Any]]:
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.http.get(self.settings.jwks_url, headers={"accept": "application/json"})
        except TimeoutError:
            raise SsoUnavailable("JWKS fetch timed out") from None
        except httpx.HTTPError as exc:
            raise SsoUnavailable(f"JWKS fetch failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise SsoUnavailable(f"JWKS fetch answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise SsoUnavailable("JWKS is not JSON") from None
        entries = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise SsoUnavailable("JWKS has no 'keys' list")
        keys: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
                continue
            keys[entry["kid"]] = entry
        return keys


class JwtValidator:
    def __init__(
        self,
        sso: SsoSettings,
        settings: JwtSettings,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert sso.issuer is not None and sso.audience is not None
        self.sso = sso
        self.settings = settings
        self.issuer = sso.issuer
        self.audience = sso.audience
        self.jwks = JwksCache(settings, sso.timeout, http, clock)

    async def validate(self, token: str) -> Principal:
        import jwt  # PyJWT loads cryptography (~8 MB): only into a process whose SSO issues JWTs

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("the token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.settings.algorithms:
            raise InvalidToken("the token's algorithm is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no signing key (kid)")
        jwk = await self.jwks.key(kid)
        if jwk is None:
            raise InvalidToken("the token is signed with an unknown key")
        if jwk.get("alg", alg) != alg:
            raise InvalidToken("the token's algorithm does not match its key")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError):
            raise InvalidToken("the token's key does not fit its algorithm") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.settings.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is meant for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token was issued by someone else") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token's signature does not verify") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("the token is invalid") from None
        exp = _number(claims, "exp")
        return Principal(_user(claims, self.sso.user_claim), exp)


class CachedTokenValidator:
    """Caches another validator's verdicts by the token's SHA-256 (see the module doc for the rules)."""

    def __init__(
        self,
        inner: TokenValidator,
        sso: SsoSettings,
        retry_after: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self.sso = sso
        self.retry_after = retry_after
        self.clock = clock
        self.cache: TtlCache[bytes, Principal | str] = TtlCache(sso.cache_size)
        self._flights: SingleFlight[bytes, Principal | str] = SingleFlight()

    async def authenticate(self, token: str) -> Principal:
        """The token's principal, or Unauthenticated (invalid) / Unavailable (SSO unreachable)."""
        key = hashlib.sha256(token.encode()).digest()
        cached = self.cache.get(key, self.clock())
        if cached is None:
            cached = await self._flights.run(key, lambda: self._validate(token, key))
        if isinstance(cached, str):
            raise unauthorized("invalid_token", cached, "invalid_token")
        if cached.expires_at is not None and cached.expires_at <= self.clock():
            raise unauthorized("invalid_token", "the token has expired", "invalid_token")
        return cached

    async def _validate(self, token: str, key: bytes) -> Principal | str:
        try:
            principal = await self.inner.validate(token)
        except InvalidToken as exc:
            now = self.clock()
            self.cache.set(key, exc.reason, now + self.sso.negative_cache_ttl, now)
            log.info("bearer token refused", extra={"reason": exc.reason})
            return exc.reason
        except SsoUnavailable as exc:
            log.error("SSO unavailable: failing closed", extra={"reason": exc.reason})
            raise unavailable(self.retry_after) from None
        now = self.clock()
        expires_at = now + self.sso.cache_ttl
        if principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at)
        self.cache.set(key, principal, expires_at, now)
        return principal


def create_token_validator(sso: SsoSettings, http: httpx.AsyncClient, retry_after: int) -> CachedTokenValidator | None:
    """The validator ``sso.mode`` asks for, wrapped in the cache; None when no mode is configured."""
    inner: TokenValidator
    if sso.mode == "introspection":
        assert sso.introspection is not None
        inner = IntrospectionValidator(sso, sso.introspection, http)
    elif sso.mode == "jwt":
        assert sso.jwt is not None
        inner = JwtValidator(sso, sso.jwt, http)
    else:
        return None
    return CachedTokenValidator(inner, sso, retry_after)
