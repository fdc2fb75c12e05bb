"""Uploads through a real server: success, deduplication, and every bad input leaving no trace."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.forms import form, multipart, signed_headers, upload_fields
from tests.support.server import KEY_ID, ServerProcess, db_file_count, make_server, read_response


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path_factory.mktemp("upload"), extra_env={"UPDOWN_MAX_UPLOAD_SIZE": str(1024 * 1024)})
    srv.start()
    yield srv
    srv.stop()


def post(srv: ServerProcess, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    with srv.http() as http:
        r = http.post("/v1/files", content=body, headers=headers)
    return r.status_code, r.json()


def signed_upload(srv: ServerProcess, fields: dict[str, str], data: bytes | None) -> tuple[int, dict]:  # type: ignore[type-arg]
    body, ctype = multipart(form(fields, data))
    return post(srv, body, signed_headers(KEY_ID, srv.keys[KEY_ID], fields, ctype))


def test_upload_records_every_digest(server: ServerProcess) -> None:
    data = os.urandom(300_000)
    status, body = signed_upload(server, upload_fields(data, package="ok", filename="ok.bin"), data)
    assert status == 201, body
    assert body["state"] == "unpublished" and body["created_by"] == KEY_ID
    assert body["size"] == len(data)
    assert body["md5"] == hashlib.md5(data).hexdigest()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    # SHA-1 and SHA-512 are computed from the stored object after the answer.
    deadline = time.monotonic() + 10
    with server.client() as client:
        while (info := client.info(body["id"]))["sha512"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert info["sha1"] == hashlib.sha1(data).hexdigest()
    assert info["sha512"] == hashlib.sha512(data).hexdigest()
    stored = server.data_dir / "objects" / "sha256" / body["sha256"][:2] / body["sha256"]
    assert stored.read_bytes() == data


def test_identical_content_is_stored_once(server: ServerProcess) -> None:
    data = os.urandom(5000)
    s1, b1 = signed_upload(server, upload_fields(data, package="dedup", revision="1"), data)
    s2, b2 = signed_upload(server, upload_fields(data, package="dedup", revision="2"), data)
    assert (s1, s2) == (201, 201)
    assert b1["id"] != b2["id"]
    assert sum(1 for o in server.objects() if o.endswith(b1["sha256"])) == 1


def test_a_second_key_is_accepted(server: ServerProcess) -> None:
    data = b"rotated"
    fields = upload_fields(data, package="rotation")
    body, ctype = multipart(form(fields, data))
    status, res = post(server, body, signed_headers("store-old", server.keys["store-old"], fields, ctype))
    assert status == 201 and res["created_by"] == "store-old"


def test_empty_file(server: ServerProcess) -> None:
    status, body = signed_upload(server, upload_fields(b"", package="empty"), b"")
    assert status == 201 and body["size"] == 0


DATA = b"x" * 2048


def _fields(**over: str) -> dict[str, str]:
    return upload_fields(DATA, **{"package": "bad", **over})


def _unsigned() -> tuple[bytes, dict[str, str]]:
    body, ctype = multipart(form(_fields(), DATA))
    return body, {"content-type": ctype}


def _bad_signature() -> tuple[bytes, dict[str, str]]:
    body, headers = _unsigned()
    return body, {**headers, "authorization": f"UPDOWN-HMAC-SHA256 KeyId={KEY_ID}, Signature={'0' * 64}"}


def _malformed_header() -> tuple[bytes, dict[str, str]]:
    body, headers = _unsigned()
    return body, {**headers, "authorization": "UPDOWN-HMAC-SHA256 garbage"}


def _unknown_key(srv: ServerProcess) -> tuple[bytes, dict[str, str]]:
    fields = _fields()
    body, ctype = multipart(form(fields, DATA))
    return body, signed_headers("nobody", "whatever", fields, ctype)


def _signed(
    srv: ServerProcess,
    fields: dict[str, str],
    data: bytes | None = DATA,
    sent: dict[str, str] | None = None,
    parts_after: list[tuple[str, str | None, bytes]] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Sign ``fields`` but send ``sent`` (to model tampering) plus optional extra parts."""
    parts = form(sent or fields, data) + (parts_after or [])
    body, ctype = multipart(parts)
    return body, signed_headers(KEY_ID, srv.keys[KEY_ID], fields, ctype)


CASES: dict[str, tuple[Callable[[ServerProcess], tuple[bytes, dict[str, str]]], int, str]] = {
    "missing signature": (lambda s: _unsigned(), 401, "missing_signature"),
    "invalid signature": (lambda s: _bad_signature(), 401, "invalid_signature"),
    "malformed authorization": (lambda s: _malformed_header(), 401, "invalid_signature"),
    "unknown key id": (_unknown_key, 401, "unknown_key"),
    "skewed timestamp": (
        lambda s: _signed(s, _fields(timestamp=str(int(time.time()) - 3600))),
        401,
        "clock_skew",
    ),
    "future timestamp": (
        lambda s: _signed(s, _fields(timestamp=str(int(time.time()) + 3600))),
        401,
        "clock_skew",
    ),
    "field changed after signing": (
        lambda s: _signed(s, _fields(), sent={**_fields(), "visibility": "private"}),
        401,
        "invalid_signature",
    ),
    "size mismatch": (lambda s: _signed(s, _fields(size=str(len(DATA) - 1))), 400, "size_mismatch"),
    "md5 mismatch": (lambda s: _signed(s, _fields(md5="0" * 32)), 400, "md5_mismatch"),
    "sha256 mismatch": (lambda s: _signed(s, _fields(sha256="0" * 64)), 400, "sha256_mismatch"),
    "declared size over the maximum": (
        lambda s: _signed(s, _fields(size=str(2 * 1024 * 1024))),
        413,
        "too_large",
    ),
    "filename with slash": (lambda s: _signed(s, _fields(filename="a/b.snap")), 400, "invalid_filename"),
    "filename with backslash": (lambda s: _signed(s, _fields(filename="a\\b.snap")), 400, "invalid_filename"),
    "filename dotdot": (lambda s: _signed(s, _fields(filename="..")), 400, "invalid_filename"),
    "filename with control character": (
        lambda s: _signed(s, _fields(filename="a\x01b")),
        400,
        "invalid_filename",
    ),
    "bad package name": (lambda s: _signed(s, _fields(package="Bad Name")), 400, "invalid_package"),
    "reserved package name": (lambda s: _signed(s, _fields(package="v1")), 400, "invalid_package"),
    "bad visibility": (lambda s: _signed(s, _fields(visibility="secret")), 400, "invalid_visibility"),
    "missing field": (
        lambda s: _signed(s, {k: v for k, v in _fields().items() if k != "md5"}),
        400,
        "missing_field",
    ),
    "unknown field": (lambda s: _signed(s, {**_fields(), "colour": "red"}), 400, "unknown_field"),
    "no file part": (lambda s: _signed(s, _fields(), data=None), 400, "missing_file"),
    "second file part": (
        lambda s: _signed(s, _fields(), parts_after=[("file2", "b.bin", DATA)]),
        400,
        "multiple_files",
    ),
    "field after the file": (
        lambda s: _signed(s, _fields(), parts_after=[("late", None, b"x")]),
        400,
        "field_after_file",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_upload_leaves_no_trace(server: ServerProcess, case: str) -> None:
    make, status, code = CASES[case]
    before_objects, before_rows = server.objects(), db_file_count(server)
    body, headers = make(server)
    got_status, got = post(server, body, headers)
    assert (got_status, got["error"]["code"]) == (status, code), got
    assert got["error"]["message"]
    assert server.objects() == before_objects
    assert db_file_count(server) == before_rows


def test_replayed_nonce(server: ServerProcess) -> None:
    fields = upload_fields(b"once", package="replay")
    body, ctype = multipart(form(fields, b"once"))
    headers = signed_headers(KEY_ID, server.keys[KEY_ID], fields, ctype)
    assert post(server, body, headers)[0] == 201
    rows = db_file_count(server)
    status, err = post(server, body, headers)
    assert (status, err["error"]["code"]) == (401, "replayed_nonce")
    assert db_file_count(server) == rows


def test_duplicate_name_revision_filename(server: ServerProcess) -> None:
    assert signed_upload(server, upload_fields(b"one", package="dup"), b"one")[0] == 201
    objects, rows = server.objects(), db_file_count(server)
    status, err = signed_upload(server, upload_fields(b"two", package="dup"), b"two")
    assert (status, err["error"]["code"]) == (409, "duplicate")
    assert server.objects() == objects and db_file_count(server) == rows


def test_body_over_the_maximum_is_refused_before_reading(server: ServerProcess) -> None:
    """A Content-Length over the limit is answered 413 at once, without the server reading the body."""
    host, port = "127.0.0.1", server.port
    ctx = ssl.create_default_context(cafile=str(server.cert))
    with (
        socket.create_connection((host, port)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 999999999999\r\n\r\n"
        )
        sock.settimeout(10)
        status, _, body = read_response(sock)
    assert status.startswith("HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "too_large"


def test_truncated_body_leaves_nothing(server: ServerProcess) -> None:
    """The client disconnects in the middle of the file part."""
    data = os.urandom(600_000)
    fields = upload_fields(data, package="truncated")
    body, ctype = multipart(form(fields, data))
    headers = signed_headers(KEY_ID, server.keys[KEY_ID], fields, ctype)
    objects, rows = server.objects(), db_file_count(server)
    ctx = ssl.create_default_context(cafile=str(server.cert))
    with (
        socket.create_connection(("127.0.0.1", server.port)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: localhost\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
        )
        sock.sendall(body[: len(body) // 2])
        time.sleep(0.3)

    def noticed() -> bool:
        return '"client_disconnected"' in server.log() or "abandoned" in server.log()

    deadline = time.monotonic() + 5  # the server notices the disconnect when it next reads (slow on a busy box)
    while time.monotonic() < deadline and (server.objects() != objects or not noticed()):
        time.sleep(0.1)
    assert server.objects() == objects
    assert db_file_count(server) == rows
    assert noticed()
