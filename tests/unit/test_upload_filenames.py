"""Which filenames an upload may have: any NFC-normalised Unicode name without control, bidi or other format
characters. Valid non-ASCII names are stored and downloadable; the others are a clear 400, never a 500."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.forms import form, multipart, signed_headers, upload_fields
from tests.support.server import KEY_ID, ServerProcess, db_file_count, make_server
from updown_app.client import UpdownError


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path_factory.mktemp("names"))
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize(
    "name",
    [
        "ünï.bin",
        "\uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48.bin",  # full-width letters
        "日本語.snap",
        "emoji-🎉.bin",
    ],
)
def test_valid_unicode_names_are_stored_and_downloadable(server: ServerProcess, tmp_path: Path, name: str) -> None:
    data = name.encode() * 10
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with server.client() as c:
        record = c.upload(path, package="names", revision="1", filename=name)  # the name also in the part header
        assert record["filename"] == name
        c.publish(record["id"])
    with server.http() as http:
        r = http.get(f"/names/1/{quote(name)}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-disposition"].endswith(quote(name, safe=""))


@pytest.mark.parametrize(
    "name",
    [
        "evil\u202egnp.exe",  # right-to-left override: displays as "evilexe.png"
        "a\u2066b.bin",  # bidi isolate
        "zero\u200bwidth.bin",
        unicodedata.normalize("NFD", "ünï.bin"),  # the same name as NFC "ünï.bin", spelt otherwise
        "bell\x07.bin",
        "del\x7f.bin",
        "line\u2028sep.bin",
        "private\ue000.bin",
        "unassigned\U000e0080.bin",
    ],
)
def test_misleading_names_are_refused(server: ServerProcess, tmp_path: Path, name: str) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    before = db_file_count(server)
    with server.client() as c, pytest.raises(UpdownError) as err:
        c.upload(path, package="badnames", revision="1", filename=name)
    assert err.value.status == 400 and err.value.code == "invalid_filename", err.value
    assert db_file_count(server) == before


def test_a_part_header_that_is_not_utf8_is_a_clear_400(server: ServerProcess) -> None:
    data = b"latin-1 header"
    fields = upload_fields(data, package="latin", filename="l.bin")
    body, ctype = multipart(form(fields, data))
    body = body.replace(b'filename="upload.bin"', 'filename="ünï.bin"'.encode("latin-1"))
    with server.http() as http:
        r = http.post("/v1/files", content=body, headers=signed_headers(KEY_ID, server.keys[KEY_ID], fields, ctype))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_multipart"


def test_a_field_that_is_not_utf8_is_a_clear_400(server: ServerProcess) -> None:
    data = b"latin-1 field"
    fields = upload_fields(data, package="latin", filename="ü.bin")
    parts = [(k, None, v.encode("latin-1")) for k, v in fields.items()] + [("file", "f.bin", data)]
    body, ctype = multipart(parts)
    with server.http() as http:
        r = http.post("/v1/files", content=body, headers=signed_headers(KEY_ID, server.keys[KEY_ID], fields, ctype))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_field"
