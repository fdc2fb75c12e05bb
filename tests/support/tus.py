"""Helpers for resumable (tus) uploads in tests: signed creation headers, a tuspy uploader, the store's parts."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from tusclient.client import TusClient
from tusclient.uploader import Uploader

from tests.support.server import KEY_ID, ServerProcess
from updown_app.core import signing

TUS = {"Tus-Resumable": "1.0.0"}


def fields_for(data_or_path: bytes | Path, **over: str) -> dict[str, str]:
    if isinstance(data_or_path, Path):
        md5, sha, size = hashlib.md5(), hashlib.sha256(), 0
        with data_or_path.open("rb") as f:
            while chunk := f.read(8 << 20):
                md5.update(chunk)
                sha.update(chunk)
                size += len(chunk)
        digests = {"size": str(size), "md5": md5.hexdigest(), "sha256": sha.hexdigest()}
    else:
        digests = {
            "size": str(len(data_or_path)),
            "md5": hashlib.md5(data_or_path).hexdigest(),
            "sha256": hashlib.sha256(data_or_path).hexdigest(),
        }
    fields = {
        "package": "big",
        "revision": "1",
        "filename": "big.tar",
        "visibility": "public",
        **digests,
        **signing.fresh_fields(),
    }
    fields.update(over)
    return fields


def creation_headers(srv: ServerProcess, fields: dict[str, str], key_id: str = KEY_ID) -> dict[str, str]:
    metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())
    return {
        **TUS,
        "Authorization": srv.sign("POST", "/v1/uploads", fields, key_id),
        "Upload-Length": fields["size"],
        "Upload-Metadata": metadata,
    }


def uploader(srv: ServerProcess, path: Path, fields: dict[str, str], chunk_size: int, **kw: Any) -> Uploader:
    """A tuspy uploader whose client carries the store's signature; tuspy sends the fields as Upload-Metadata."""
    auth = srv.sign("POST", "/v1/uploads", fields)
    client = TusClient(f"{srv.base_url}/v1/uploads", headers={"Authorization": auth})
    return client.uploader(file_path=str(path), chunk_size=chunk_size, metadata=fields, verify_tls_cert=False, **kw)
