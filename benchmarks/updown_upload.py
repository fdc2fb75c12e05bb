#!/usr/bin/env python3
"""One timed upload to updown (run with the project's venv python). Prints one JSON object on stdout.

    UPDOWN_URL=http://127.0.0.1:PORT UPDOWN_KEY_ID=bench UPDOWN_KEY=SECRET \\
        updown_upload.py FILE --package P --revision R [--sha256 HEX --md5 HEX] [--via raw|client]

--via raw (default): the signed multipart POST /v1/files written by hand on one http.client connection, with
  the file part sent by socket.sendfile. The digests are given (or computed before the clock starts), like the
  registry's monolithic PUT whose sha256 is in the URL, so ``transfer_s`` is the HTTP request alone: connect,
  send the body, server stores + verifies it, 201 received. Fields and signature come from
  ``updown_app.core.signing`` (the same string-to-sign as the package's client).
--via client: ``updown_app.client.UpdownClient.upload`` timed as a whole (it hashes the file first, then
  streams it through httpx in 1 MiB chunks), for reference.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from updown_app.core import signing


def digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def raw_upload(
    base: str, key_id: str, secret: bytes, path: Path, package: str, revision: str, md5: str, sha256: str
) -> tuple[float, int, dict]:
    size = path.stat().st_size
    fields = {
        "package": package,
        "revision": revision,
        "filename": path.name,
        "visibility": "public",
        "size": str(size),
        "md5": md5,
        "sha256": sha256,
        **signing.fresh_fields(),
    }
    boundary = "bench-" + os.urandom(12).hex()
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    u = urlsplit(base)
    url_path = (u.path.rstrip("/") or "") + "/v1/files"
    auth = signing.authorization_header(key_id, secret, "POST", url_path, fields)
    with path.open("rb") as f:
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
        conn.putrequest("POST", url_path, skip_accept_encoding=True)
        for k, v in (
            ("Authorization", auth),
            ("Content-Type", f"multipart/form-data; boundary={boundary}"),
            ("Content-Length", str(len(head) + size + len(tail))),
            ("X-Forwarded-Proto", "https"),
        ):
            conn.putheader(k, v)
        conn.endheaders(head)
        assert conn.sock is not None
        conn.sock.sendfile(f)
        conn.send(tail)
        resp = conn.getresponse()
        body = resp.read()
        t1 = time.perf_counter()
        conn.close()
    try:
        rec = json.loads(body)
    except ValueError:
        rec = {"raw": body[:500].decode("latin-1")}
    return t1 - t0, resp.status, rec


def publishable_after(base: str, key_id: str, secret: bytes, file_id: str, timeout: float = 300.0) -> float | None:
    """Seconds until the file's record has all four digests (SHA-1 and SHA-512 are computed from the stored object
    after the upload answered, and a publish waits for them): polled with signed GETs of its record."""
    u = urlsplit(base)
    url_path = (u.path.rstrip("/") or "") + f"/v1/files/{file_id}"
    start = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
    try:
        while time.perf_counter() - start < timeout:
            fields = signing.fresh_fields()
            auth = signing.authorization_header(key_id, secret, "GET", url_path, fields)
            conn.request(
                "GET", f"{url_path}?{urlencode(fields)}", headers={"Authorization": auth, "X-Forwarded-Proto": "https"}
            )
            resp = conn.getresponse()
            record = json.loads(resp.read())
            if resp.status == 200 and record.get("sha1") and record.get("sha512"):
                return time.perf_counter() - start
            time.sleep(0.02)
    finally:
        conn.close()
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", type=Path)
    ap.add_argument("--package", required=True)
    ap.add_argument("--revision", required=True)
    ap.add_argument("--sha256")
    ap.add_argument("--md5")
    ap.add_argument("--via", choices=["raw", "client"], default="raw")
    a = ap.parse_args()
    base, key_id, secret = os.environ["UPDOWN_URL"], os.environ["UPDOWN_KEY_ID"], os.environ["UPDOWN_KEY"].encode()
    if a.via == "client":
        from updown_app.client import UpdownClient

        with UpdownClient(base, key_id=key_id, secret=secret, timeout=600) as c:
            t0 = time.perf_counter()
            rec = c.upload(a.file, package=a.package, revision=a.revision)
            dt = time.perf_counter() - t0
        print(
            json.dumps(
                {
                    "transfer_s": round(dt, 4),
                    "status": 201,
                    "method": "UpdownClient.upload (hashing included)",
                    "record": rec,
                }
            )
        )
        return 0
    md5, sha = (a.md5, a.sha256) if a.md5 and a.sha256 else digests(a.file)
    dt, status, rec = raw_upload(base, key_id, secret, a.file, a.package, a.revision, md5, sha)
    later = publishable_after(base, key_id, secret, rec["id"]) if status == 201 and "id" in rec else None
    print(
        json.dumps(
            {
                "transfer_s": round(dt, 4),
                # from the answer to all four digests known (what a publish right after the upload waits for)
                "digests_after_s": None if later is None else round(later, 4),
                "status": status,
                "method": "signed multipart POST (http.client + sendfile, digests precomputed)",
                "record": rec,
            }
        )
    )
    return 0 if status == 201 else 1


if __name__ == "__main__":
    sys.exit(main())
