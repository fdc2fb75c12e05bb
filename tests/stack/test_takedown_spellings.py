"""One URL, one object, everywhere: every spelling of a download URL a client can send through the local stack
(scripts/stack.sh) reaches the same cached object on the same unit, so a takedown (`updown unpublish`) removes them
all. Requests are written byte for byte on a TLS socket: HTTP clients would normalise the very spellings tested."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import need_service
from updown_app.client import UpdownClient


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_get(frontend: str, ca: str, target: str, host: str | None = "localhost") -> Answer:
    """GET `target` exactly as written (Host: `host`, or none), on a fresh TLS connection to `frontend`."""
    url = urlsplit(frontend)
    assert url.hostname is not None and url.port is not None
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=url.hostname) as tls:
            head = f"GET {target} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host else "") + "Connection: close\r\n\r\n"
            tls.sendall(head.encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(int(lines[0].split()[1]), headers, body)


@pytest.fixture(scope="module")
def stack() -> dict[str, str]:
    need_service("the local stack (scripts/stack.sh)", os.environ.get("UPDOWN_TEST_STACK_FRONTENDS"))
    return {
        k.removeprefix("UPDOWN_TEST_STACK_"): v for k, v in os.environ.items() if k.startswith("UPDOWN_TEST_STACK_")
    }


def spellings(package: str, frontend: str) -> list[tuple[str, str | None]]:
    """(request target, Host header) pairs that all name /<package>/1/poison.bin on the public host."""
    port = urlsplit(frontend).port
    p = f"/{package}/1/poison.bin"
    encoded_package = "".join(f"%{ord(c):02x}" for c in package)
    targets = [
        f"/{package}/1/p%6Fison.bin",
        f"/{package}/1/p%6fison.bin",
        f"/{encoded_package}/%31/%70%6F%69%73%6F%6E%2E%62%69%6E",
        f"/{package}/1/poison%2ebin",
        f"/%{ord(package[0]):02X}{package[1:]}/1/poison.bi%6e",
        p + "?",
        p + "?x=1",
        p + "?a=b&c=%2F",
        f"//{package}//1//poison.bin",
        f"/{package}/1//poison.bin",
        f"/./{package}/./1/./poison.bin",
        f"/{package}/1/%2E/poison.bin",
        f"/{package}/%2e/1/poison.bin",
        f"/{package}/./1/../1/poison.bin",
        f"/{package}%2F1%2Fpoison.bin",
        f"/{package}/1%2fpoison.bin",
        f"/{package}/1/%2E%2E/1/poison.bin",
        f"https://localhost{p}",
        f"https://localhost:{port}{p}",
        f"https://LOCALHOST{p}?x=2",
        f"http://localhost{p}",
        f"https://localhost//{package}/./1/p%6fison%2Ebin?q",
        f"/.//{package}/%2E/1//p%6Fison%2ebin?x=%41",
    ]
    pairs: list[tuple[str, str | None]] = [(t, "localhost") for t in targets]
    pairs += [
        (p, "LOCALHOST"),
        (p, f"localhost:{port}"),
        (f"https://localhost{p}", None),  # absolute-form without Host: the authority names the host
        (f"https://evil.example{p}", "localhost"),  # authority and Host disagree
        (f"https://evil.example{p}", None),
        (f"https://private.localhost{p}", "private.localhost"),
    ]
    return pairs


def test_every_spelling_primed_before_a_takedown_is_404_on_every_frontend_after(stack, tmp_path: Path) -> None:
    frontends, ca = stack["FRONTENDS"].split(","), stack["CA"]
    package = "takedown" + secrets.token_hex(3)
    f = tmp_path / "poison.bin"
    f.write_bytes(secrets.token_bytes(4096))
    with UpdownClient(frontends[0], key_id=stack["KEY_ID"], secret=stack["KEY"].encode(), verify=ca) as client:
        record = client.upload(f, package=package, revision="1", visibility="public")
        client.publish(record["id"])
    plain = f"/{package}/1/poison.bin"

    first = raw_get(frontends[0], ca, plain)
    assert first.status == 200 and first.body == f.read_bytes()
    owner = first.headers["x-cache-unit"]
    primed: list[tuple[str, str, str | None]] = []
    refused = []
    for frontend in frontends:
        for target, host in spellings(package, frontend):
            for _ in range(2):
                a = raw_get(frontend, ca, target, host)
                if a.status == 200:
                    assert a.body == f.read_bytes(), (target, host)
                    if a.headers.get("x-cache-unit"):  # cached: one object, on the URL's one owner
                        assert (a.headers["x-cache-unit"], a.headers["x-cache"]) == (owner, "HIT"), (target, host)
                else:  # refused (HAProxy's parser answers its own HTML 400), never misrouted
                    assert a.status in (400, 401), (frontend, target, host, a.status, a.body[:200])
                    refused.append((target, host))
            if a.status == 200:
                primed.append((frontend, target, host))
    assert len(primed) >= 2 * 18, primed  # most spellings are the file; the rest were refused, not misrouted
    assert (f"/{package}%2F1%2Fpoison.bin", "localhost") in refused

    env = os.environ | {
        "UPDOWN_URL": frontends[1],
        "UPDOWN_CA_BUNDLE": ca,
        "UPDOWN_KEY_ID": stack["KEY_ID"],
        "UPDOWN_KEY": stack["KEY"],
    }
    subprocess.run([sys.executable, "-m", "updown_app", "unpublish", record["id"]], env=env, check=True,
                   capture_output=True)  # fmt: skip

    still = []
    for frontend in frontends:
        for target, host in spellings(package, frontend):
            a = raw_get(frontend, ca, target, host)
            if a.status not in (400, 401, 404):
                still.append((frontend, target, host, a.status, a.headers.get("x-cache")))
    assert not still, still
    for frontend, target, host in primed:
        a = raw_get(frontend, ca, target, host)
        assert a.status == 404 and a.headers["content-type"] == "application/json", (frontend, target, host)
