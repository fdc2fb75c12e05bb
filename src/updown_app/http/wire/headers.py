"""The headers of a download, built in one place: the ordinary answer (``file_headers``) and the first answer of
a file being pulled through (``fetching_headers``) share how a file names its type, name and identity."""

from __future__ import annotations

import base64
import mimetypes
from urllib.parse import quote

from updown_app.http.wire import ranges
from updown_app.metadata.models import File

PUBLIC_CACHE = "public, max-age=31536000, immutable"
PRIVATE_CACHE = "private, no-store"


def _identity(filename: str, sha256: str) -> dict[str, str]:
    return {
        "etag": f'"{sha256}"',
        "content-type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
        "content-disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
    }


def _b64(file: File, name: str) -> str:
    return base64.b64encode(bytes.fromhex(getattr(file, name))).decode()


def file_headers(file: File, private: bool) -> dict[str, str]:
    headers = {
        **_identity(file.filename, file.sha256),
        "last-modified": ranges.http_date(file.created_at),
        "accept-ranges": "bytes",
        "repr-digest": f"sha-256=:{_b64(file, 'sha256')}:, sha-512=:{_b64(file, 'sha512')}:",
        "digest": (
            f"MD5={_b64(file, 'md5')}, SHA={_b64(file, 'sha1')}, "
            f"SHA-256={_b64(file, 'sha256')}, SHA-512={_b64(file, 'sha512')}"
        ),
    }
    if private:
        headers["cache-control"] = PRIVATE_CACHE
        headers["vary"] = "Authorization"
    else:
        headers["cache-control"] = PUBLIC_CACHE
    return headers


def fetching_headers(filename: str, size: int, sha256: str) -> dict[str, str]:
    """Not cached: the caches take the file from the next, ordinary answer."""
    return {"content-length": str(size), **_identity(filename, sha256), "cache-control": "no-store"}
