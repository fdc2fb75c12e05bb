"""Hand-built signed multipart uploads, so tests can break them in every way a client might."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable

from updown_app.core import signing

Part = tuple[str, str | None, bytes]  # (name, filename or None for a field, content)


def upload_fields(
    data: bytes, *, package: str = "pkg", revision: str = "1", filename: str = "pkg_1.snap", **over: str
) -> dict[str, str]:
    fields = {
        "package": package,
        "revision": revision,
        "filename": filename,
        "visibility": "public",
        "size": str(len(data)),
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "timestamp": str(int(time.time())),
        "nonce": secrets.token_urlsafe(18),
    }
    fields.update(over)
    return fields


def multipart(parts: Iterable[Part], boundary: str = "testboundary1234") -> tuple[bytes, str]:
    out = b""
    for name, filename, content in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def form(fields: dict[str, str], data: bytes | None) -> list[Part]:
    parts: list[Part] = [(k, None, v.encode()) for k, v in fields.items()]
    if data is not None:
        parts.append(("file", "upload.bin", data))
    return parts


def signed_headers(key_id: str, secret: str, fields: dict[str, str], ctype: str) -> dict[str, str]:
    return {
        "authorization": signing.authorization_header(key_id, secret.encode(), "POST", "/v1/files", fields),
        "content-type": ctype,
    }
