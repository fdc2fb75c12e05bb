"""Python client for updown: signed uploads and state changes, resumable verified downloads.

client = UpdownClient("https://updown.example", key_id="store-1", secret=b"...", verify="ca.pem")
record = client.upload("app_1.0.snap", package="app", revision="1")
client.publish(record["id"])
client.download("https://updown.example/app/1/app_1.0.snap", Path("app_1.0.snap"))
"""

from __future__ import annotations

import hashlib
import os
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpx

from updown_app.core import signing

CHUNK = 1024 * 1024
T = TypeVar("T")


class UpdownError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, when a 503 said when to come back


def _retry_after(response: httpx.Response) -> float | None:
    # delta-seconds only: the service and its frontends send no HTTP-date form
    value = response.headers.get("retry-after", "")
    return float(value) if response.status_code == 503 and value.isdigit() else None


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    wait = _retry_after(response)
    try:
        err = response.json()["error"]
        raise UpdownError(response.status_code, err["code"], err["message"], wait)
    except (ValueError, KeyError, TypeError):
        raise UpdownError(response.status_code, "http_error", response.reason_phrase, wait) from None


def file_digests(path: Path) -> dict[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    return {"size": str(size), "md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


class _Multipart:
    """A multipart body streamed from a file: fields first, then the file (the order the server requires)."""

    def __init__(self, fields: Mapping[str, str], name: str, stream: BinaryIO, size: int) -> None:
        self.boundary = "updown-" + os.urandom(12).hex()
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.head = head
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.stream = stream
        self.length = len(head) + size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        while chunk := self.stream.read(CHUNK):
            yield chunk
        yield self.tail


class UpdownClient:
    def __init__(
        self,
        base_url: str,
        key_id: str | None = None,
        secret: bytes | None = None,
        verify: str | bool = True,
        timeout: float = 60.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries, self.max_retry_wait = retries, max_retry_wait
        self.key_id = key_id
        self.secret = secret
        headers = {"user-agent": "updown-client"}
        if self.base_url.startswith("http://"):
            # Plain HTTP only reaches the app directly behind a trusted proxy setup (tests, benchmarks).
            headers["x-forwarded-proto"] = "https"
        tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self.http = httpx.Client(verify=tls, timeout=httpx.Timeout(timeout, connect=10.0), headers=headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> UpdownClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """`attempt` again while the service answers 503 with Retry-After (a dependency briefly down, no app unit
        ready behind a frontend yet, a unit draining): such a 503 changed nothing, so a retry is safe even for an
        upload. Each attempt signs afresh (a signed request's nonce is good once). Other errors are final."""
        for n in range(self.retries + 1):
            try:
                return attempt()
            except UpdownError as exc:
                if exc.retry_after is None or n == self.retries or exc.retry_after > self.max_retry_wait:
                    raise
                time.sleep(exc.retry_after)
        raise AssertionError("unreachable")

    def _auth(self, method: str, path: str, fields: Mapping[str, str]) -> dict[str, str]:
        if self.key_id is None or self.secret is None:
            raise UpdownError(0, "no_key", "a key id and secret are needed for signed requests")
        return {"authorization": signing.authorization_header(self.key_id, self.secret, method, path, fields)}

    def upload(
        self,
        path: Path,
        *,
        package: str,
        revision: str,
        filename: str | None = None,
        visibility: str = "public",
    ) -> dict[str, Any]:
        return self._retrying(lambda: self._upload(path, package, revision, filename, visibility))

    def _upload(self, path: Path, package: str, revision: str, filename: str | None, visibility: str) -> dict[str, Any]:
        fields = {
            "package": package,
            "revision": revision,
            "filename": filename or path.name,
            "visibility": visibility,
            **file_digests(path),
            **signing.fresh_fields(),
        }
        url_path = "/v1/files"
        with path.open("rb") as stream:
            body = _Multipart(fields, fields["filename"], stream, int(fields["size"]))
            headers = {
                **self._auth("POST", url_path, fields),
                "content-type": f"multipart/form-data; boundary={body.boundary}",
                "content-length": str(body.length),
            }
            response = self.http.post(self.base_url + url_path, content=iter(body), headers=headers)
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    def _signed(self, method: str, url_path: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        return self._retrying(lambda: self._signed_once(method, url_path, extra))

    def _signed_once(self, method: str, url_path: str, extra: Mapping[str, str] | None) -> dict[str, Any]:
        fields = {**(extra or {}), **signing.fresh_fields()}
        headers = self._auth(method, url_path, fields)
        if method == "GET":
            response = self.http.get(self.base_url + url_path, params=fields, headers=headers)
        else:
            response = self.http.request(method, self.base_url + url_path, data=fields, headers=headers)
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    def info(self, file_id: str) -> dict[str, Any]:
        return self._signed("GET", f"/v1/files/{file_id}")

    def publish(self, file_id: str, channels: Sequence[str] | None = None) -> dict[str, Any]:
        """Publish; with ``channels``, the file is then in exactly these channels (``[]``: in none)."""
        extra = None if channels is None else {"channels": signing.channels_field(channels)}
        return self._signed("POST", f"/v1/files/{file_id}/publish", extra)

    def unpublish(self, file_id: str) -> dict[str, Any]:
        return self._signed("POST", f"/v1/files/{file_id}/unpublish")

    def download(self, url: str, dest: Path, headers: Mapping[str, str] | None = None) -> Path:
        """Download to ``dest``, resuming ``dest.part`` with Range/If-Range; verifies the SHA-256 (ETag)."""
        return self._retrying(lambda: self._download(url, dest, headers))

    def _download(self, url: str, dest: Path, headers: Mapping[str, str] | None) -> Path:
        partial = dest.with_name(dest.name + ".part")
        etag_file = dest.with_name(dest.name + ".part.etag")
        have = partial.stat().st_size if partial.exists() else 0
        req_headers = dict(headers or {})
        if have and etag_file.exists():
            req_headers["range"] = f"bytes={have}-"
            req_headers["if-range"] = etag_file.read_text()
        with self.http.stream("GET", url, headers=req_headers) as response:
            if response.status_code == 416 and have:
                # The partial file is already complete (or bigger than the file): verify it below.
                response.read()
                etag = etag_file.read_text()
            else:
                if not response.is_success:
                    response.read()
                    _raise_for(response)
                etag = response.headers.get("etag", "")
                etag_file.write_text(etag)
                mode = "ab" if response.status_code == 206 else "wb"
                with partial.open(mode) as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
        expected = etag.strip('"')
        digest = hashlib.sha256()
        with partial.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        if len(expected) == 64 and digest.hexdigest() != expected:
            partial.unlink()
            etag_file.unlink(missing_ok=True)
            raise UpdownError(0, "checksum_mismatch", "downloaded bytes do not match the file's SHA-256")
        partial.replace(dest)
        etag_file.unlink(missing_ok=True)
        return dest
