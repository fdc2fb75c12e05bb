"""Download URLs have one spelling: "." segments and doubled slashes are removed, ".." is refused (apt sends
"<repository>/./Packages" to flat repositories)."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.server import ServerProcess
from updown_app.http.middleware.dot_segments import normalized


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (b"/a/./b", b"/a/b"),
        (b"/a/././b/.", b"/a/b/"),
        (b"//a//b/./c", b"/a/b/c"),
        (b"/a/.b/c..", b"/a/.b/c.."),
        (b"/a/b", b"/a/b"),
        (b"/a/../b", None),
        (b"/..", None),
        (b"/a/b/..", None),
    ],
)
def test_normalized(raw: bytes, clean: bytes | None) -> None:
    assert normalized(raw) == clean


def curl(server: ServerProcess, path: str) -> tuple[str, bytes]:
    out = subprocess.run(
        ["curl", "-sS", "--http1.1", "--path-as-is", "--cacert", str(server.cert), "-D", "-",
         f"{server.base_url}{path}"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    head, _, body = out.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n", 1)[0], body


def test_apt_style_paths_download_the_file(server: ServerProcess, tmp_path) -> None:
    f = tmp_path / "Packages"
    f.write_bytes(b"Package: hello\n")
    with server.client() as c:
        c.publish(c.upload(f, package="repo", revision="1", visibility="public")["id"])
    assert curl(server, "/repo/1/./Packages") == ("HTTP/1.1 200 OK", b"Package: hello\n")
    assert curl(server, "/repo//1/Packages") == ("HTTP/1.1 200 OK", b"Package: hello\n")
    status, body = curl(server, "/repo/1/../1/Packages")
    assert status == "HTTP/1.1 400 Bad Request" and b"invalid_path" in body
