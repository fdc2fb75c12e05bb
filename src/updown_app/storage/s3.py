"""Amazon S3 (or any S3 API) backend through aiobotocore.

Credentials come only from the standard AWS chain (environment variables, the shared config and credentials
files with an optional profile, web identity, container and instance metadata); requests are always signed with
SigV4. ``endpoint_url`` and ``addressing_style`` (path or virtual-hosted) cover S3-compatible stores.

Every PUT and every part carries ``Content-MD5``, so the store refuses a corrupted body (``BadDigest``). An object
up to ``multipart_threshold`` is one PutObject whose Content-MD5 is the declared MD5; a larger one is a multipart
upload whose parts are ``part_size`` buffers, each with its own Content-MD5, and the whole body's MD5 is checked
against the declared one before the upload is completed; any failure aborts the multipart upload (retried in the
background while the store is unreachable). Memory per upload is bounded by the larger of the two sizes: SigV4
over plain HTTP signs the payload and S3 needs each part's MD5 before the part is sent, so a part is buffered.

Downloads are ranged GETs streamed in ``chunk_size`` pieces; a stream that breaks off is resumed from where it
stopped with ``If-Match`` on the first response's ETag. botocore retries idempotent calls (standard mode).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import importlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from updown_app.settings import S3StorageSettings
from updown_app.storage.base import (
    ObjectInfo,
    PartInfo,
    Storage,
    StorageAuthError,
    StorageError,
    StorageIntegrityError,
    StorageUnavailableError,
)
from updown_app.storage.streams import ErrorLog, ExactBody, OpenedRange, md5_update, resumable_read

log = logging.getLogger("updown.storage.s3")

MAX_PARTS = 10_000
MIN_PART = 5 * 1024 * 1024  # S3's smallest part but the last
MAX_BACKOFF = 5.0
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
    }
)
INTEGRITY_CODES = frozenset({"BadDigest", "InvalidDigest", "IncompleteBody", "XAmzContentSHA256Mismatch"})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
UNAVAILABLE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "503", "500"}
)


def _module(name: str) -> Any:
    """botocore and aiobotocore ship no type information (stubs are a separate, optional package)."""
    return importlib.import_module(name)


def _b64(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


def _code(exc: BaseException) -> tuple[str, int]:
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _translate(exc: BaseException, what: str) -> BaseException:
    """The storage error (or KeyError) for an exception raised by aiobotocore/aiohttp."""
    import aiohttp

    bce = _module("botocore.exceptions")

    if isinstance(exc, bce.ClientError):
        code, status = _code(exc)
        message = f"s3 {what}: {code or status} {exc.response.get('Error', {}).get('Message', '')}".rstrip()
        if code in NOT_FOUND_CODES or status == 404:
            return KeyError(what)
        if code in INTEGRITY_CODES:
            return StorageIntegrityError(message)
        if code in AUTH_CODES or status in (401, 403):
            return StorageAuthError(message)
        if code in UNAVAILABLE_CODES or status >= 500 or status in (408, 429):
            return StorageUnavailableError(message)
        return StorageError(message)
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError | bce.CredentialRetrievalError):
        return StorageAuthError(f"s3 {what}: no usable AWS credentials ({exc})")
    if isinstance(exc, bce.BotoCoreError | aiohttp.ClientError | TimeoutError | OSError):
        return StorageUnavailableError(f"s3 {what}: {type(exc).__name__}: {exc}")
    return exc


class S3Storage(Storage):
    name = "s3"

    def __init__(self, settings: S3StorageSettings, chunk_size: int = 1024 * 1024) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.chunk_size = chunk_size
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock: asyncio.Lock | None = None
        self._bucket_ready = False
        self._cleanups: set[asyncio.Task[None]] = set()
        self._auth_errors = ErrorLog(log)

    # Client --------------------------------------------------------------------------------------------------

    async def _s3(self) -> Any:
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                AioConfig = _module("aiobotocore.config").AioConfig
                AioSession = _module("aiobotocore.session").AioSession

                s = self.settings
                config = AioConfig(
                    signature_version="s3v4",
                    s3={"addressing_style": s.addressing_style},
                    connect_timeout=s.connect_timeout,
                    read_timeout=max(s.idle_timeout, s.first_byte_timeout),
                    retries={"mode": "standard", "max_attempts": s.retries + 1},
                    max_pool_connections=256,
                    # Plain Content-MD5 integrity; no aws-chunked CRC trailers (not every S3 API has them).
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                session = AioSession(profile=s.profile)
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(
                    session.create_client(
                        "s3", region_name=s.region, endpoint_url=s.endpoint_url, config=config, verify=s.verify_tls
                    )
                )
                self._stack = stack
        return self._client

    async def _do(self, what: str, operation: str, deadline: float | None = None, **params: Any) -> Any:
        """Call one S3 operation, translating its failures; ``deadline`` bounds the wait for the answer."""
        try:
            client = await self._s3()
            call = getattr(client, operation)(**params)
            if deadline is None:
                return await call
            return await asyncio.wait_for(call, deadline)
        except Exception as exc:
            translated = _translate(exc, what)
            if translated is exc:
                raise
            if isinstance(translated, StorageAuthError):
                self._auth_errors.error(f"s3 authentication failed: {translated}")
            raise translated from exc

    def _answer_timeout(self) -> float:
        s = self.settings
        return (s.connect_timeout + s.first_byte_timeout) * (s.retries + 1)

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            await self._do(f"HEAD bucket {self.bucket}", "head_bucket", self._answer_timeout(), Bucket=self.bucket)
        except KeyError:
            if not self.settings.create_bucket:
                raise StorageError(f"s3 bucket {self.bucket!r} does not exist (create_bucket is off)") from None
            params: dict[str, Any] = {"Bucket": self.bucket}
            region = self.settings.region
            if region and region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            await self._do(f"create bucket {self.bucket}", "create_bucket", **params)
            log.info("created s3 bucket", extra={"bucket": self.bucket})
        self._bucket_ready = True

    # Storage interface ---------------------------------------------------------------------------------------

    async def put(self, key: str, body: AsyncIterator[bytes], *, size: int, md5: str) -> None:
        await self._ensure_bucket()
        md5 = md5.lower()
        wrapped = ExactBody(body)
        if size > self.settings.multipart_threshold:
            await self._put_multipart(key, wrapped, size, md5)
            return
        data = await wrapped.read(size)
        await wrapped.expect_end()
        await self._do(
            f"PUT {key}",
            "put_object",
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentLength=size,
            ContentMD5=_b64(md5),
            ContentType="application/octet-stream",
            Metadata={"md5": md5},
        )

    async def _put_multipart(self, key: str, body: ExactBody, size: int, md5: str) -> None:
        part_size = max(self.settings.part_size, math.ceil(size / MAX_PARTS))
        upload_id = await self._create_multipart(key, md5)
        # The app's verified body already checked the whole MD5; other callers get it checked here.
        whole = None if body.verifies_md5 else hashlib.md5(usedforsecurity=False)
        parts: list[dict[str, Any]] = []
        try:
            for number, offset in enumerate(range(0, size, part_size), start=1):
                data = await body.read(min(part_size, size - offset))
                part_md5 = hashlib.md5(usedforsecurity=False)
                if whole is None:
                    await md5_update(part_md5, data)
                else:
                    await asyncio.gather(md5_update(part_md5, data), md5_update(whole, data))
                answer = await self._do(
                    f"PUT {key} part {number}",
                    "upload_part",
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentLength=len(data),
                    ContentMD5=_b64(part_md5.hexdigest()),
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
                del data
            await body.expect_end()
            if whole is not None and whole.hexdigest() != md5:
                raise StorageIntegrityError("MD5 of the body does not match the declared MD5")
            await self._complete_multipart(key, upload_id, parts)
        except BaseException as exc:
            await self._abort_after(exc, key, upload_id)
            raise

    def assembles_in_place(self, parts: Sequence[PartInfo]) -> bool:
        """Parts of at least 5 MiB (but the last) are copied into a multipart upload by the store itself."""
        return 0 < len(parts) <= MAX_PARTS and all(p.size >= MIN_PART for p in parts[:-1])

    async def assemble(
        self, key: str, parts: Sequence[PartInfo], body: AsyncIterator[bytes], *, size: int, md5: str
    ) -> bool:
        """UploadPartCopy of every part object into one multipart upload: no byte passes through the app. Each
        copied part's ETag must be the MD5 recorded for it. The part objects stay for the caller to delete."""
        if not self.assembles_in_place(parts):
            return await super().assemble(key, parts, body, size=size, md5=md5)
        await self._ensure_bucket()
        upload_id = await self._create_multipart(key, md5)
        done: list[dict[str, Any]] = []
        try:
            for number, part in enumerate(parts, start=1):
                answer = await self._do(
                    f"copy part {part.key} to {key}",
                    "upload_part_copy",
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": part.key},
                )
                etag = str(answer["CopyPartResult"]["ETag"])
                if etag.strip('"') != part.md5:
                    raise StorageIntegrityError(f"s3 copied part {part.key} with ETag {etag}, expected {part.md5}")
                done.append({"ETag": etag, "PartNumber": number})
            await self._complete_multipart(key, upload_id, done)
        except BaseException as exc:
            await self._abort_after(exc, key, upload_id)
            raise
        return False

    async def _create_multipart(self, key: str, md5: str) -> str:
        created = await self._do(
            f"create multipart upload {key}",
            "create_multipart_upload",
            Bucket=self.bucket,
            Key=key,
            ContentType="application/octet-stream",
            Metadata={"md5": md5.lower()},
        )
        upload_id: str = created["UploadId"]
        return upload_id

    async def _complete_multipart(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        await self._do(
            f"complete multipart upload {key}",
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )

    async def _abort_after(self, exc: BaseException, key: str, upload_id: str) -> None:
        """Abort a failed multipart upload in the background (it survives cancellation); wait a bounded time."""
        task = asyncio.ensure_future(self._abort(key, upload_id))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        if not isinstance(exc, asyncio.CancelledError):
            await asyncio.wait({task}, timeout=self.settings.connect_timeout + 5)

    async def _abort(self, key: str, upload_id: str) -> None:
        for attempt in range(8):
            try:
                await self._do(
                    f"abort multipart upload {key}",
                    "abort_multipart_upload",
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                )
                return
            except KeyError:
                return  # NoSuchUpload: nothing left
            except StorageError as exc:
                if _code(exc.__cause__ or exc)[0] == "NoSuchUpload":
                    return
                await asyncio.sleep(min(60.0, 2.0**attempt))
        log.error("could not abort a failed multipart upload", extra={"object_key": key, "upload_id": upload_id})

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length == 0:
            if await self.head(key) is None:
                raise KeyError(key)
            return

        async def open_range(start: int, end: int | None, etag: str | None) -> OpenedRange:
            params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if start > 0 or end is not None:
                params["Range"] = f"bytes={start}-{'' if end is None else end}"
            if etag is not None:
                params["IfMatch"] = etag
            try:
                answer = await self._do(f"GET {key}", "get_object", self._answer_timeout(), **params)
            except KeyError:
                if etag is None:
                    raise KeyError(key) from None
                raise StorageError(f"s3 GET {key}: the object vanished during the download") from None
            except StorageError as exc:
                code, status = _code(exc.__cause__ or exc)
                if code == "InvalidRange" or status == 416:
                    raise StorageError(f"s3 GET {key}: range {params.get('Range')} not satisfiable") from exc
                if code == "PreconditionFailed" or status == 412:
                    raise StorageError(f"s3 GET {key}: the object changed during the download") from exc
                raise
            stream = answer["Body"]

            async def close() -> None:
                stream.close()

            return OpenedRange(answer.get("ETag"), self._chunks(stream), close)

        def retryable(exc: BaseException) -> StorageUnavailableError | None:
            translated = _translate(exc, f"GET {key}")
            if isinstance(translated, StorageUnavailableError) and not isinstance(translated, StorageAuthError):
                return translated
            return None

        async for chunk in resumable_read(
            open_range,
            offset=offset,
            length=length,
            retries=self.settings.retries,
            backoff=lambda attempt: min(MAX_BACKOFF, self.settings.retry_backoff * 2**attempt),
            retryable=retryable,
            log=log,
            what=f"s3 GET {key}",
        ):
            yield chunk

    async def _chunks(self, stream: Any) -> AsyncIterator[bytes]:
        """The body in chunks of ``chunk_size`` (aiobotocore hands out whatever the socket had)."""
        buf = bytearray()
        while True:
            piece = await stream.read(self.chunk_size - len(buf))
            if not piece:
                break
            buf += piece
            if len(buf) >= self.chunk_size:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            answer = await self._do(f"HEAD {key}", "head_object", self._answer_timeout(), Bucket=self.bucket, Key=key)
        except KeyError:
            return None
        etag = str(answer.get("ETag", "")).strip('"')
        md5 = answer.get("Metadata", {}).get("md5") or (etag if "-" not in etag else None)
        return ObjectInfo(
            key=key, size=int(answer["ContentLength"]), md5=md5 or None, modified=_timestamp(answer.get("LastModified"))
        )

    async def delete(self, key: str) -> bool:
        # DeleteObject answers 204 whether or not the key existed: HEAD first to tell.
        if await self.head(key) is None:
            return False
        await self._do(f"DELETE {key}", "delete_object", self._answer_timeout(), Bucket=self.bucket, Key=key)
        return True

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                params["ContinuationToken"] = token
            try:
                page = await self._do("listing", "list_objects_v2", self._answer_timeout(), **params)
            except KeyError:
                return  # no bucket
            for item in page.get("Contents", []):
                etag = str(item.get("ETag", "")).strip('"')
                yield ObjectInfo(
                    key=item["Key"],
                    size=int(item["Size"]),
                    md5=etag if "-" not in etag else None,
                    modified=_timestamp(item.get("LastModified")),
                )
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    async def check(self) -> None:
        try:
            if not self._bucket_ready:
                await self._ensure_bucket()
            else:
                await self._do(
                    f"HEAD bucket {self.bucket}",
                    "head_bucket",
                    self.settings.connect_timeout + self.settings.first_byte_timeout,
                    Bucket=self.bucket,
                )
        except KeyError:
            self._bucket_ready = False
            log.error("s3 bucket %r does not exist", self.bucket)
            raise StorageError(f"s3 bucket {self.bucket!r} does not exist") from None
        except StorageAuthError:
            raise  # logged where it happened
        except StorageError as exc:
            log.error("s3 is not usable: %s", exc)
            raise

    async def presigned_url(self, key: str, expires_in: int = 3600) -> str | None:
        url: str = await self._do(
            f"presign {key}",
            "generate_presigned_url",
            ClientMethod="get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires_in,
        )
        return url

    async def close(self) -> None:
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=5)
            for task in self._cleanups:
                task.cancel()
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._client = None


def _timestamp(value: Any) -> float | None:
    """botocore's ``LastModified`` (an aware datetime) as POSIX time."""
    return value.timestamp() if isinstance(value, datetime) else None
