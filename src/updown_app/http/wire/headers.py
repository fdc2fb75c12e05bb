"""The headers of a download, built in one place (every download, pulled through or not, is answered from what
is stored here)."""

from __future__ import annotations

import base64
import mimetypes
from urllib.parse import quote

from updown_app.http.wire import ranges
from updown_app.metadata.models import File

PUBLIC_CACHE = "public, max-age=31536000, immutable"
PRIVATE_CACHE = "private, no-store"


_REPR_DIGESTS = (("sha-256", "sha256"), ("sha-512", "sha512"))
_DIGESTS = (("MD5", "md5"), ("SHA", "sha1"), ("SHA-256", "sha256"), ("SHA-512", "sha512"))


def _b64(file: File, name: str) -> str:
    return base64.b64encode(bytes.fromhex(getattr(file, name))).decode()


# Built once per file and host kind: every header comes from the file's immutable record (its id never names
# other bytes), and building them (dates, base64 of four digests, the MIME guess) was ~10% of a small download.
_BUILT: dict[tuple[str, bool], dict[str, str]] = {}
_BUILT_MAX = 8192


def file_headers(file: File, private: bool) -> dict[str, str]:
    """The download headers of ``file``: a fresh dict the caller may add to."""
    key = (file.id, private)
    built = _BUILT.get(key)
    if built is None:
        built = _build(file, private)
        if file.sha1 is not None and file.sha512 is not None:  # final: the record changes no more
            if len(_BUILT) >= _BUILT_MAX:
                _BUILT.clear()
            _BUILT[key] = built
    return dict(built)


def _build(file: File, private: bool) -> dict[str, str]:
    headers = {
        "etag": f'"{file.sha256}"',
        "content-type": mimetypes.guess_type(file.filename)[0] or "application/octet-stream",
        "content-disposition": f"attachment; filename*=UTF-8''{quote(file.filename, safe='')}",
        "last-modified": ranges.http_date(file.created_at),
        "accept-ranges": "bytes",
        # A published file has all four digests; one still being completed (never served) gets what it has.
        "repr-digest": ", ".join(f"{n}=:{_b64(file, a)}:" for n, a in _REPR_DIGESTS if getattr(file, a)),
        "digest": ", ".join(f"{n}={_b64(file, a)}" for n, a in _DIGESTS if getattr(file, a)),
    }
    if private:
        headers["cache-control"] = PRIVATE_CACHE
        headers["vary"] = "Authorization"
    else:
        headers["cache-control"] = PUBLIC_CACHE
    return headers
