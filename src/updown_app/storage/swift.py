"""OpenStack Swift backend, native API, over an async HTTP client (httpx).

Authentication is Keystone v3 (a keystoneauth1 session: password or application credential; the token and the
object-store endpoint come from it, it re-authenticates before expiry, and we force a new token on a 401) or
tempauth (v1: ``X-Auth-User``/``X-Auth-Key`` against ``…/auth/v1.0``). Blocking keystoneauth calls run in a
thread; every data transfer goes through httpx.

Uploads stream. A plain object is one PUT whose ``ETag`` is the declared MD5, so Swift itself refuses a corrupted
body (422) and a PUT that breaks off stores nothing. Above ``slo_threshold`` (and always above Swift's 5 GiB object
limit) the body becomes a Static Large Object: segments are streamed one after the other into the segment
container while their MD5 is computed; Swift's ETag for each segment must equal that MD5, and the manifest lists
every segment's MD5 and size, so Swift checks them all again when it accepts the manifest (the manifest's own ETag,
the MD5 of the segment ETags, is sent too). If anything fails, the segments already stored are deleted (in the
background, with retries, while the store is unreachable).

Idempotent calls (GET, HEAD, DELETE, listings, container set-up) retry connection errors and 5xx answers with
bounded exponential backoff; a download whose stream breaks is resumed with a Range request pinned by ``If-Match``.
A PUT is retried only when the connection failed before a byte of the body was consumed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from updown_app.settings import SwiftStorageSettings
from updown_app.storage.base import (
    ObjectInfo,
    PartInfo,
    Storage,
    StorageAuthError,
    StorageError,
    StorageIntegrityError,
    StorageUnavailableError,
    md5_of,
)
from updown_app.storage.streams import ErrorLog, ExactBody, OpenedRange, md5_update, resumable_read

log = logging.getLogger("updown.storage.swift")

GiB = 1024**3
MAX_OBJECT_SIZE = 5 * GiB  # Swift's default max_file_size; larger objects must be SLOs
MAX_SEGMENTS = 1000  # Swift's default max_manifest_segments
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Seconds a call's failed attempts may take (backoff sleeps not counted) before it stops retrying.
RETRY_BUDGET = 2.0
TOKEN_REFRESH_MARGIN = 120.0  # seconds before expiry at which a token is replaced
MAX_BACKOFF = 5.0
SEGMENT_PREFIX = ".segments/"  # segment names when they share the object container
CLEANUP_ATTEMPTS = 8


@dataclass(frozen=True)
class _Token:
    value: str
    storage_url: str
    expires_at: float | None  # wall-clock seconds; None when unknown

    def fresh(self) -> bool:
        if self.expires_at is None:
            return True
        return time.time() < self.expires_at - TOKEN_REFRESH_MARGIN


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _TempAuth:
    def __init__(self, settings: SwiftStorageSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client

    async def authenticate(self) -> _Token:
        s = self.settings
        try:
            resp = await self.client.get(
                s.auth_url,
                headers={"X-Auth-User": s.username, "X-Auth-Key": s.password.get_secret_value()},
            )
        except httpx.TransportError as exc:
            raise StorageUnavailableError(f"swift tempauth at {s.auth_url} unreachable: {_describe(exc)}") from exc
        if resp.status_code in (401, 403):
            raise StorageAuthError(
                f"swift tempauth at {s.auth_url} refused user {s.username!r} (HTTP {resp.status_code})"
            )
        if resp.status_code >= 500:
            raise StorageUnavailableError(f"swift tempauth at {s.auth_url} answered HTTP {resp.status_code}")
        token, url = resp.headers.get("x-auth-token"), s.storage_url or resp.headers.get("x-storage-url")
        if resp.status_code >= 300 or not token or not url:
            raise StorageError(f"swift tempauth at {s.auth_url}: unexpected answer HTTP {resp.status_code}")
        expires = resp.headers.get("x-auth-token-expires")
        life = float(expires) if expires and expires.replace(".", "", 1).isdigit() else None
        return _Token(token, url.rstrip("/"), None if life is None else time.time() + life)

    def invalidate(self) -> None:
        pass


class _Keystone:
    """Keystone v3 through keystoneauth1 (blocking: called in a thread)."""

    def __init__(self, settings: SwiftStorageSettings) -> None:
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3

        self.settings = s = settings
        plugin: Any
        if s.application_credential_id:
            plugin = v3.ApplicationCredential(
                auth_url=s.auth_url,
                application_credential_id=s.application_credential_id,
                application_credential_secret=s.application_credential_secret.get_secret_value(),
            )
        else:
            plugin = v3.Password(
                auth_url=s.auth_url,
                username=s.username,
                password=s.password.get_secret_value(),
                user_domain_name=s.user_domain_name,
                project_name=s.project_name or None,
                project_domain_name=s.project_domain_name,
            )
        self.plugin = plugin
        self.session = ks_session.Session(
            auth=plugin, timeout=s.connect_timeout + s.first_byte_timeout, verify=s.verify_tls
        )

    def _authenticate(self) -> _Token:
        s = self.settings
        token = self.session.get_token()
        url = s.storage_url or self.session.get_endpoint(
            service_type="object-store", interface=s.interface, region_name=s.region_name
        )
        if not token or not url:
            raise StorageError("keystone returned no token or no object-store endpoint")
        auth_ref = self.plugin.get_access(self.session)
        expires = auth_ref.expires.timestamp() if auth_ref.expires is not None else None
        return _Token(token, str(url).rstrip("/"), expires)

    async def authenticate(self) -> _Token:
        from keystoneauth1 import exceptions as ks_exc

        s = self.settings
        who = s.application_credential_id or s.username
        try:
            return await asyncio.to_thread(self._authenticate)
        except (ks_exc.Unauthorized, ks_exc.Forbidden, ks_exc.AuthorizationFailure) as exc:
            if isinstance(exc, ks_exc.AuthorizationFailure) and isinstance(
                exc.__cause__, ks_exc.ConnectFailure | ks_exc.ConnectTimeout
            ):
                raise StorageUnavailableError(f"keystone at {s.auth_url} unreachable: {_describe(exc)}") from exc
            raise StorageAuthError(f"keystone at {s.auth_url} refused {who!r}: {_describe(exc)}") from exc
        except ks_exc.EndpointNotFound as exc:
            raise StorageError(f"keystone catalog has no object-store endpoint: {_describe(exc)}") from exc
        except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.RequestTimeout) as exc:
            raise StorageUnavailableError(f"keystone at {s.auth_url} unreachable: {_describe(exc)}") from exc
        except ks_exc.HttpError as exc:
            if (exc.http_status or 0) >= 500:
                raise StorageUnavailableError(f"keystone at {s.auth_url}: {_describe(exc)}") from exc
            raise StorageError(f"keystone at {s.auth_url}: {_describe(exc)}") from exc
        except ks_exc.ClientException as exc:
            raise StorageUnavailableError(f"keystone at {s.auth_url}: {_describe(exc)}") from exc

    def invalidate(self) -> None:
        self.plugin.invalidate()


def _tls(settings: SwiftStorageSettings) -> ssl.SSLContext | bool:
    """What httpx verifies Swift's certificate with: a CA bundle (file or directory) read once, here, so that a
    missing one fails at start-up rather than on the first request; True: httpx's default CAs."""
    verify = settings.verify_tls
    if not isinstance(verify, str):
        return verify
    try:
        if Path(verify).is_dir():
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise StorageError(f"swift verify_tls: cannot load the CA bundle {verify!r}: {_describe(exc)}") from exc


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class SwiftStorage(Storage):
    name = "swift"

    def __init__(self, settings: SwiftStorageSettings, chunk_size: int = 1024 * 1024) -> None:
        self.settings = settings
        self.chunk_size = chunk_size
        self.container = settings.container
        if settings.temp_url_key is not None and settings.temp_url_key_scope == "container":
            # A container-scoped TempURL only reaches its own container: SLO segments must live there too.
            self.segment_container = settings.container
        else:
            self.segment_container = settings.segment_container or f"{settings.container}_segments"
        self.segment_prefix = SEGMENT_PREFIX if self.segment_container == self.container else ""
        self.slo_threshold = min(settings.slo_threshold, MAX_OBJECT_SIZE)
        self._verify = _tls(settings)
        self._client: httpx.AsyncClient | None = None
        self._auth: _TempAuth | _Keystone | None = None
        self._token: _Token | None = None
        self._auth_lock: asyncio.Lock | None = None
        self._containers_ready = False
        self._cleanups: set[asyncio.Task[None]] = set()
        self._auth_errors = ErrorLog(log)

    # Connection and authentication ---------------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            s = self.settings
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    connect=s.connect_timeout, read=s.idle_timeout, write=s.idle_timeout, pool=s.connect_timeout
                ),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
                follow_redirects=False,
                verify=self._verify,
            )
        return self._client

    def _authenticator(self) -> _TempAuth | _Keystone:
        if self._auth is None:
            if self.settings.auth == "tempauth":
                self._auth = _TempAuth(self.settings, self.client)
            else:
                self._auth = _Keystone(self.settings)
        return self._auth

    async def _credentials(self, stale: _Token | None = None) -> _Token:
        """A valid token; a new one when the current one is near expiry or is ``stale`` (refused with 401)."""
        token = self._token
        if token is not None and token is not stale and token.fresh():
            return token
        if self._auth_lock is None:
            self._auth_lock = asyncio.Lock()
        async with self._auth_lock:
            token = self._token
            if token is not None and token is not stale and token.fresh():
                return token
            auth = self._authenticator()
            if stale is not None or token is not None:
                auth.invalidate()
            try:
                self._token = await auth.authenticate()
            except StorageAuthError as exc:
                self._auth_errors.error(f"swift authentication failed: {exc}")
                self._token = None
                raise
            return self._token

    def _timeout(self, *, read: float) -> httpx.Timeout:
        s = self.settings
        return httpx.Timeout(connect=s.connect_timeout, read=read, write=s.idle_timeout, pool=s.connect_timeout)

    def _backoff(self, attempt: int) -> float:
        delay: float = min(MAX_BACKOFF, self.settings.retry_backoff * (2**attempt))
        return delay

    @staticmethod
    def _quote(name: str) -> str:
        return quote(name, safe="/")

    def _object_path(self, key: str, container: str | None = None) -> str:
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"invalid object key {key!r}")
        return f"{self._quote(container or self.container)}/{self._quote(key)}"

    async def _call(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        stream: bool = False,
        retries: int | None = None,
    ) -> httpx.Response:
        """One idempotent request with re-authentication on 401 and bounded retries on connection errors and
        5xx. Returns the response for the caller to judge (read fully unless ``stream``; then the caller closes
        it). Raises StorageUnavailableError when every attempt failed."""
        s = self.settings
        retries = s.retries if retries is None else retries
        attempt = 0
        reauthenticated = False
        started = time.monotonic()
        slept = 0.0
        while True:
            token = await self._credentials()
            request = self.client.build_request(
                method,
                f"{token.storage_url}/{path}" if path else token.storage_url,
                headers={"X-Auth-Token": token.value, **(headers or {})},
                params=params,
                content=content,
            )
            error: StorageError
            try:
                response = await asyncio.wait_for(self.client.send(request, stream=True), s.first_byte_timeout)
            except (httpx.TransportError, TimeoutError) as exc:
                error = StorageUnavailableError(f"swift {method} {path or '/'}: {_describe(exc)}")
            else:
                if response.status_code == 401:
                    await response.aclose()
                    if reauthenticated:
                        message = f"swift refused a fresh token for {method} {path or '/'} (HTTP 401)"
                        self._auth_errors.error(f"swift authentication failed: {message}")
                        raise StorageAuthError(message)
                    reauthenticated = True
                    await self._credentials(stale=token)
                    continue
                if response.status_code not in RETRY_STATUSES:
                    if not stream:
                        try:
                            await response.aread()
                        except httpx.TransportError as exc:
                            await response.aclose()
                            error = StorageUnavailableError(f"swift {method} {path}: {_describe(exc)}")
                        else:
                            return response
                    else:
                        return response
                else:
                    await response.aclose()
                    error = StorageUnavailableError(f"swift {method} {path or '/'}: HTTP {response.status_code}")
            # A store that is down answers 503 at once (retried as configured: a blip), or only after its load
            # balancer's own retries: once the attempts themselves took RETRY_BUDGET, the client hears 503 now,
            # not after every attempt's wait.
            if attempt >= retries or time.monotonic() - started - slept > RETRY_BUDGET:
                raise error
            log.warning("swift request failed, retrying", extra={"error": str(error), "attempt": attempt + 1})
            await asyncio.sleep(self._backoff(attempt))
            slept += self._backoff(attempt)
            attempt += 1

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> StorageError:
        status = response.status_code
        message = f"swift {what}: HTTP {status}"
        if status == 422:
            return StorageIntegrityError(f"{message} (the body does not match its ETag)")
        if status in (401, 403):
            return StorageAuthError(message)
        if status >= 500 or status in (408, 429, 499):
            return StorageUnavailableError(message)
        return StorageError(message)

    async def _ensure_containers(self, force: bool = False) -> None:
        if self._containers_ready and not force:
            return
        s = self.settings
        for container in dict.fromkeys((self.container, self.segment_container)):
            path = self._quote(container)
            response = await self._call("HEAD", path)
            if response.status_code == 404:
                if not s.create_container:
                    raise StorageError(f"swift container {container!r} does not exist (create_container is off)")
                response = await self._call("PUT", path)
                if response.status_code not in (201, 202, 204):
                    raise self._fail(response, f"creating container {container!r}")
                log.info("created swift container", extra={"container": container})
            elif response.status_code >= 300:
                raise self._fail(response, f"HEAD container {container!r}")
        if s.temp_url_key is not None:
            scope = s.temp_url_key_scope.capitalize()
            target = "" if s.temp_url_key_scope == "account" else self._quote(self.container)
            response = await self._call(
                "POST", target, headers={f"X-{scope}-Meta-Temp-URL-Key": s.temp_url_key.get_secret_value()}
            )
            if response.status_code >= 300:
                raise self._fail(response, f"setting the TempURL key on the {s.temp_url_key_scope}")
        self._containers_ready = True

    # Storage interface ---------------------------------------------------------------------------------------

    async def put(self, key: str, body: AsyncIterator[bytes], *, size: int, md5: str) -> None:
        path = self._object_path(key)
        await self._ensure_containers()
        wrapped = ExactBody(body)
        if size > self.slo_threshold:
            await self._put_slo(key, wrapped, size, md5.lower())
        else:
            etag = await self._put_stream(path, wrapped, size, {"ETag": md5.lower()}, f"PUT {key}")
            try:
                await wrapped.expect_end()
                if etag != md5.lower():  # Swift checked the ETag we sent; this guards against a broken proxy
                    raise StorageIntegrityError(f"swift stored {key} with ETag {etag}, expected {md5}")
            except BaseException:
                await self.delete(key)
                raise

    async def _put_stream(
        self,
        path: str,
        body: ExactBody,
        size: int,
        headers: Mapping[str, str],
        what: str,
        digests: tuple[Any, ...] = (),
    ) -> str:
        """PUT ``size`` bytes of ``body``; returns Swift's ETag. Retried only if no byte was consumed."""
        attempt = 0

        async def content() -> AsyncIterator[bytes]:
            async for piece in body.take(size):
                for digest in digests:
                    await md5_update(digest, piece)
                yield piece

        while True:
            token = await self._credentials()
            request = self.client.build_request(
                "PUT",
                f"{token.storage_url}/{path}",
                headers={
                    "X-Auth-Token": token.value,
                    "Content-Length": str(size),
                    "Content-Type": "application/octet-stream",
                    **headers,
                },
                content=content(),
                timeout=self._timeout(read=self.settings.first_byte_timeout),
            )
            try:
                response = await self.client.send(request)
            except httpx.TransportError as exc:
                error = StorageUnavailableError(f"swift {what}: {_describe(exc)}")
                if body.started or attempt >= self.settings.retries:
                    raise error from exc
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            if response.status_code == 401:
                self._token = None  # the next call authenticates again; this body is consumed
            if response.status_code not in (200, 201):
                raise self._fail(response, what)
            etag: str = response.headers.get("etag", "")
            return etag.strip('"')

    async def _put_slo(self, key: str, body: ExactBody, size: int, md5: str) -> None:
        segment_size = min(MAX_OBJECT_SIZE, max(self.settings.segment_size, math.ceil(size / MAX_SEGMENTS)))
        upload_id = f"{time.time():.6f}-{secrets.token_hex(4)}"
        prefix = f"{self.segment_prefix}{key}/slo/{upload_id}/{size}/{segment_size}/"
        stored: list[str] = []
        manifest: list[dict[str, Any]] = []
        # The app's verified body already checked the whole MD5; other callers get it checked here.
        whole = None if body.verifies_md5 else hashlib.md5(usedforsecurity=False)
        try:
            offset = index = 0
            while offset < size:
                n = min(segment_size, size - offset)
                name = f"{prefix}{index:08d}"
                digest = hashlib.md5(usedforsecurity=False)
                stored.append(name)
                etag = await self._put_stream(
                    self._object_path(name, self.segment_container),
                    body,
                    n,
                    {},
                    f"PUT segment {name}",
                    (digest,) if whole is None else (digest, whole),
                )
                if etag != digest.hexdigest():
                    raise StorageIntegrityError(
                        f"swift stored segment {name} with ETag {etag}, expected {digest.hexdigest()}"
                    )
                manifest.append({"path": f"/{self.segment_container}/{name}", "etag": etag, "size_bytes": n})
                offset += n
                index += 1
            await body.expect_end()
            if whole is not None and whole.hexdigest() != md5:
                raise StorageIntegrityError("MD5 of the body does not match the declared MD5")
            await self._put_manifest(key, manifest, md5)
        except BaseException as exc:
            if stored:
                task = asyncio.ensure_future(self._delete_segments(stored))
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)
                if not isinstance(exc, asyncio.CancelledError):
                    # Usually quick; when the store is down the task keeps trying after we answered.
                    await asyncio.wait({task}, timeout=self.settings.connect_timeout + 5)
            raise

    async def _put_manifest(self, key: str, manifest: list[dict[str, Any]], md5: str) -> None:
        """The SLO manifest; Swift checks every segment's ETag and size, and our ETag over them, on receipt."""
        manifest_etag = hashlib.md5("".join(m["etag"] for m in manifest).encode(), usedforsecurity=False).hexdigest()
        response = await self._call(
            "PUT",
            self._object_path(key),
            params={"multipart-manifest": "put"},
            headers={"ETag": manifest_etag, "Content-Type": "application/octet-stream", "X-Object-Meta-Md5": md5},
            content=json.dumps(manifest).encode(),
        )
        if response.status_code not in (200, 201):
            raise self._fail(response, f"PUT manifest {key}")

    # Parts of resumable uploads: segments in the segment container, assembled as an SLO ------------------------

    def _part_path(self, key: str) -> str:
        return self._object_path(f"{self.segment_prefix}{key}", self.segment_container)

    async def put_part(self, key: str, data: bytes) -> str:
        await self._ensure_containers()
        # The MD5 is computed while the part is sent; Swift answers with the MD5 of what it stored (its ETag).
        body = ExactBody(_once(data))
        md5, etag = await asyncio.gather(
            md5_of(data), self._put_stream(self._part_path(key), body, len(data), {}, f"PUT part {key}")
        )
        if etag != md5:
            await self.delete_part(key)
            raise StorageIntegrityError(f"swift stored part {key} with ETag {etag}, expected {md5}")
        return md5

    async def get_part(self, key: str) -> AsyncIterator[bytes]:
        response = await self._call("GET", self._part_path(key), stream=True)
        try:
            if response.status_code == 404:
                raise KeyError(key)
            if response.status_code != 200:
                raise self._fail(response, f"GET part {key}")
            try:
                async for chunk in response.aiter_raw(self.chunk_size):
                    yield chunk
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise StorageUnavailableError(f"swift GET part {key} broke off: {_describe(exc)}") from exc
        finally:
            await response.aclose()

    async def delete_part(self, key: str) -> bool:
        response = await self._call("DELETE", self._part_path(key))
        if response.status_code == 404:
            return False
        if response.status_code >= 300:
            raise self._fail(response, f"DELETE part {key}")
        return True

    async def list_parts(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        marker = ""
        full = f"{self.segment_prefix}{prefix}"
        while True:
            response = await self._call(
                "GET",
                self._quote(self.segment_container),
                params={"format": "json", "prefix": full, "marker": marker, "limit": 1000},
            )
            if response.status_code == 404:
                return
            if response.status_code >= 300:
                raise self._fail(response, "listing parts")
            items = response.json() if response.status_code == 200 else []
            if not items:
                return
            for item in items:
                name = item["name"][len(self.segment_prefix) :]
                yield ObjectInfo(key=name, size=int(item["bytes"]), md5=item.get("hash"))
            marker = items[-1]["name"]

    def assembles_in_place(self, parts: Sequence[PartInfo]) -> bool:
        return 0 < len(parts) <= MAX_SEGMENTS and all(p.size <= MAX_OBJECT_SIZE for p in parts)

    async def assemble(
        self, key: str, parts: Sequence[PartInfo], body: AsyncIterator[bytes], *, size: int, md5: str
    ) -> bool:
        """An SLO manifest over the stored parts: no byte is copied and ``body`` is not read. Swift checks every
        segment's ETag and size against the manifest."""
        if not self.assembles_in_place(parts):
            return await super().assemble(key, parts, body, size=size, md5=md5)
        manifest = [
            {"path": f"/{self.segment_container}/{self.segment_prefix}{p.key}", "etag": p.md5, "size_bytes": p.size}
            for p in parts
        ]
        await self._put_manifest(key, manifest, md5.lower())
        return True

    async def _delete_segments(self, names: list[str]) -> None:
        remaining = list(names)
        for attempt in range(CLEANUP_ATTEMPTS):
            left = []
            for name in remaining:
                try:
                    response = await self._call("DELETE", self._object_path(name, self.segment_container))
                    if response.status_code not in (204, 404):
                        left.append(name)
                except StorageError:
                    left.append(name)
            remaining = left
            if not remaining:
                return
            await asyncio.sleep(min(60.0, 2.0**attempt))
        log.error("could not delete SLO segments of a failed upload", extra={"segments": remaining})

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = self._object_path(key)
        if length == 0:
            if await self.head(key) is None:
                raise KeyError(key)
            return

        async def open_range(start: int, end: int | None, etag: str | None) -> OpenedRange:
            headers: dict[str, str] = {}
            if start > 0 or end is not None:
                headers["Range"] = f"bytes={start}-{'' if end is None else end}"
            if etag is not None:
                headers["If-Match"] = etag
            response = await self._call("GET", path, headers=headers, stream=True)
            status = response.status_code
            problem: BaseException | None = None
            if status == 404 and etag is None:
                problem = KeyError(key)
            elif status == 416:
                problem = StorageError(f"swift GET {key}: range {headers.get('Range')} not satisfiable")
            elif status in (404, 412):
                problem = StorageError(f"swift GET {key}: the object changed during the download")
            elif status not in (200, 206) or (status == 200 and start > 0):
                problem = self._fail(response, f"GET {key}")
            if problem is not None:
                await response.aclose()
                raise problem
            return OpenedRange(response.headers.get("etag"), response.aiter_raw(self.chunk_size), response.aclose)

        def retryable(exc: BaseException) -> StorageUnavailableError | None:
            if isinstance(exc, httpx.TransportError | httpx.StreamError):
                return StorageUnavailableError(f"swift GET {key} broke off: {_describe(exc)}")
            return None

        async for chunk in resumable_read(
            open_range,
            offset=offset,
            length=length,
            retries=self.settings.retries,
            backoff=self._backoff,
            retryable=retryable,
            log=log,
            what=f"swift GET {key}",
        ):
            yield chunk

    async def head(self, key: str) -> ObjectInfo | None:
        response = await self._call("HEAD", self._object_path(key))
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise self._fail(response, f"HEAD {key}")
        h = response.headers
        is_slo = h.get("x-static-large-object", "").lower() == "true"
        md5 = h.get("x-object-meta-md5") if is_slo else h.get("etag", "").strip('"')
        modified = float(h["x-timestamp"]) if "x-timestamp" in h else None
        return ObjectInfo(key=key, size=int(h.get("content-length", "0")), md5=md5 or None, modified=modified)

    async def delete(self, key: str) -> bool:
        """Delete an object; an SLO with its segments (``multipart-manifest=delete``)."""
        path = self._object_path(key)
        response = await self._call(
            "DELETE", path, params={"multipart-manifest": "delete"}, headers={"Accept": "application/json"}
        )
        if response.status_code == 404:
            return False
        if response.status_code >= 300:
            raise self._fail(response, f"DELETE {key}")
        if response.status_code != 200 or not response.content:
            return True
        try:
            report = response.json()
        except ValueError:
            return True
        errors = report.get("Errors") or []
        if any("Not an SLO manifest" in str(e) for e in errors):
            response = await self._call("DELETE", path)  # a plain object
            if response.status_code == 404:
                return False
            if response.status_code >= 300:
                raise self._fail(response, f"DELETE {key}")
            return True
        if report.get("Number Deleted") == 0 and report.get("Number Not Found", 0) > 0:
            return False
        if errors or not str(report.get("Response Status", "200")).startswith("2"):
            raise StorageError(f"swift DELETE {key}: {report.get('Response Status')} {errors}")
        return True

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        marker = ""
        while True:
            response = await self._call(
                "GET",
                self._quote(self.container),
                params={"format": "json", "prefix": prefix, "marker": marker, "limit": 1000},
            )
            if response.status_code == 404:
                return
            if response.status_code >= 300:
                raise self._fail(response, "listing")
            items = response.json() if response.status_code == 200 else []
            if not items:
                return
            for item in items:
                if self.segment_prefix and item["name"].startswith(self.segment_prefix):
                    continue  # SLO segments kept beside the objects
                md5 = None if "slo_etag" in item else item.get("hash")
                modified = _listing_time(item.get("last_modified"))
                yield ObjectInfo(key=item["name"], size=int(item["bytes"]), md5=md5, modified=modified)
            marker = items[-1]["name"]

    async def check(self) -> None:
        try:
            if not self._containers_ready:
                await self._ensure_containers()
            else:
                response = await self._call("HEAD", self._quote(self.container), retries=0)
                if response.status_code >= 300:
                    self._containers_ready = False
                    raise self._fail(response, f"HEAD container {self.container!r}")
        except StorageAuthError:
            raise  # logged where it happened
        except StorageError as exc:
            log.error("swift is not usable: %s", exc)
            raise

    async def presigned_url(self, key: str, expires_in: int = 3600) -> str | None:
        """A TempURL for GET (and HEAD): HMAC over method, expiry and path with the container's key."""
        if self.settings.temp_url_key is None:
            return None
        await self._ensure_containers()
        token = await self._credentials()
        parts = urlsplit(token.storage_url)
        path = f"{parts.path}/{self._object_path(key)}"
        expires = int(time.time()) + expires_in
        digest = getattr(hashlib, self.settings.temp_url_digest)
        sig = hmac.new(
            self.settings.temp_url_key.get_secret_value().encode(), f"GET\n{expires}\n{path}".encode(), digest
        ).hexdigest()
        return f"{parts.scheme}://{parts.netloc}{path}?temp_url_sig={sig}&temp_url_expires={expires}"

    async def close(self) -> None:
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=5)
            for task in self._cleanups:
                task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _listing_time(value: str | None) -> float | None:
    """A container listing's ``last_modified`` (ISO 8601, UTC without an offset) as POSIX time."""
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
