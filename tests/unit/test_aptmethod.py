"""The ``updown+https`` apt method driven as apt drives it — messages on its stdin, answers on its stdout — against
a real ``updown serve`` with private downloads (fake SSO and store on loopback)."""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import os
import pwd
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import apt_method
from tests.support.apt_method import PRIVATE, MethodProcess, corrupt_object, method, publish_private, write_token
from tests.support.fake_sso import FakeSso, FakeStore
from tests.support.server import ServerProcess

sso, store, srv = apt_method.sso, apt_method.store, apt_method.srv  # module-scoped fixtures

SIZE = 700_000  # a few of the method's 256 KiB chunks


def _hashes(data: bytes) -> dict[str, str]:
    return {
        "MD5Sum-Hash": hashlib.md5(data).hexdigest(),
        "SHA1-Hash": hashlib.sha1(data).hexdigest(),
        "SHA256-Hash": hashlib.sha256(data).hexdigest(),
        "SHA512-Hash": hashlib.sha512(data).hexdigest(),
    }


class Setup:
    """One user, one private package with one file, a token file for it, and the method's configuration."""

    def __init__(self, srv: ServerProcess, sso: FakeSso, store: FakeStore, tmp: Path) -> None:
        self.user = "u" + secrets.token_hex(4)
        self.package = "p" + secrets.token_hex(4)
        self.data = os.urandom(SIZE)  # its own: storage is content-addressed, and one test damages its object
        (tmp / "src").mkdir()
        source = tmp / "src" / "app.bin"
        source.write_bytes(self.data)
        self.record = publish_private(srv, source, self.package)
        self.token = sso.issue(secrets.token_urlsafe(24), self.user)
        store.grants.add((self.user, self.package))
        self.token_file = write_token(tmp / "updown.token", self.token)
        self.uri = f"updown+https://{PRIVATE}:{srv.port}/{self.package}/1/app.bin"
        self.dest = tmp / "partial" / "app.bin"
        self.dest.parent.mkdir()
        self.config = {
            f"Acquire::updown+https::{PRIVATE}::Token-File": str(self.token_file),
            "Acquire::https::CaInfo": str(srv.cert),
        }

    def start(self, m: MethodProcess, **config: str) -> None:
        caps = m.next()
        assert caps.code == 100
        m.configure({**self.config, **config})


@pytest.fixture
def setup(srv: ServerProcess, sso: FakeSso, store: FakeStore, tmp_path: Path) -> Setup:
    return Setup(srv, sso, store, tmp_path)


def test_capabilities_are_what_apt_needs() -> None:
    with method() as m:
        caps = m.next()
    assert (caps.code, caps.text) == (100, "Capabilities")
    assert caps["Pipeline"] == "true"
    assert caps["Send-Config"] == "true"
    assert caps["Single-Instance"] == "true"
    assert caps["Send-URI-Encoded"] == "true"


def test_download_with_a_token_reports_every_hash(setup: Setup) -> None:
    with method() as m:
        setup.start(m)
        m.acquire(setup.uri, setup.dest)
        done = m.finish(setup.uri)
        messages = m.for_uri(setup.uri)
    assert done.code == 201, done
    assert setup.dest.read_bytes() == setup.data
    assert done["Filename"] == str(setup.dest)
    assert done["Size"] == str(len(setup.data))
    for name, value in _hashes(setup.data).items():
        assert done[name] == value
    start = next(msg for msg in messages if msg.code == 200)
    assert start["Size"] == str(len(setup.data))
    assert "Resume-Point" not in start.fields
    # Last-Modified is what apt sends back next time; the file's date is the server's, for If-Range.
    modified = email.utils.parsedate_to_datetime(done["Last-Modified"]).timestamp()
    assert setup.dest.stat().st_mtime == modified


def test_if_modified_since_is_an_ims_hit(setup: Setup) -> None:
    with method() as m:
        setup.start(m)
        m.acquire(setup.uri, setup.dest, Index_File="true")
        first = m.finish(setup.uri)
        assert first.code == 201, first
        # apt moved the file to lists/ and now asks again with the date it was given.
        setup.dest.rename(setup.dest.with_suffix(".final"))
        m.acquire(setup.uri, setup.dest, Index_File="true", Last_Modified=first["Last-Modified"])
        m.seen.clear()
        hit = m.finish(setup.uri)
    assert hit.code == 201, hit
    assert hit["IMS-Hit"] == "true"
    assert hit["Filename"] == str(setup.dest)
    assert not setup.dest.exists()
    assert [msg.code for msg in m.for_uri(setup.uri) if msg.code != 102] == [201]  # no 200: nothing was sent


def test_an_older_copy_is_downloaded_again(setup: Setup) -> None:
    long_ago = email.utils.formatdate(time.time() - 86400 * 30, usegmt=True)
    with method() as m:
        setup.start(m)
        m.acquire(setup.uri, setup.dest, Index_File="true", Last_Modified=long_ago)
        done = m.finish(setup.uri)
    assert done.code == 201 and "IMS-Hit" not in done.fields, done
    assert setup.dest.read_bytes() == setup.data


def test_resume_of_a_partial_file(setup: Setup) -> None:
    with method() as m:
        setup.start(m)
        m.acquire(setup.uri, setup.dest)
        modified = email.utils.parsedate_to_datetime(m.finish(setup.uri)["Last-Modified"]).timestamp()
    # A download cut short: the method left the part it had, dated as the server dated the file.
    setup.dest.write_bytes(setup.data[:300_000])
    os.utime(setup.dest, (modified, modified))
    with method() as m:
        setup.start(m)
        m.acquire(setup.uri, setup.dest)
        done = m.finish(setup.uri)
        start = next(msg for msg in m.for_uri(setup.uri) if msg.code == 200)
    assert start["Resume-Point"] == "300000"
    assert start["Size"] == str(len(setup.data))
    assert done.code == 201, done
    assert done["Resume-Point"] == "300000"
    assert setup.dest.read_bytes() == setup.data
    for name, value in _hashes(setup.data).items():  # hashes of the whole file, not of the part received
        assert done[name] == value


@pytest.mark.parametrize("same_date", [False, True])
def test_a_partial_file_of_another_version_is_replaced(setup: Setup, same_date: bool) -> None:
    with method() as m:
        setup.start(m)
        m.acquire(setup.uri, setup.dest)
        modified = email.utils.parsedate_to_datetime(m.finish(setup.uri)["Last-Modified"]).timestamp()
    # Another file's partial download: dated long ago (If-Range fails: the whole file is sent), or by bad luck
    # carrying the very date of this one (the server continues it; the SHA-256 shows the result is wrong).
    setup.dest.write_bytes(b"x" * 1000)
    when = modified if same_date else modified - 86400
    os.utime(setup.dest, (when, when))
    with method() as m:
        setup.start(m)
        m.acquire(setup.uri, setup.dest)
        done = m.finish(setup.uri)
    assert done.code == 201, done
    assert "Resume-Point" not in done.fields
    assert setup.dest.read_bytes() == setup.data


def test_pipelined_requests_are_each_answered(
    srv: ServerProcess, sso: FakeSso, store: FakeStore, setup: Setup, tmp_path: Path
) -> None:
    uris = {}
    for i in range(6):
        source = tmp_path / "src" / f"f{i}.bin"
        source.write_bytes(os.urandom(1000 * (i + 1)) + setup.data * (i % 2))
        publish_private(srv, source, setup.package)
        uris[f"{setup.uri.rsplit('/', 1)[0]}/f{i}.bin"] = source
    with method() as m:
        setup.start(m)
        for uri in uris:  # all sent before any answer is read, as apt pipelines
            m.acquire(uri, setup.dest.parent / uri.rsplit("/", 1)[1])
        for uri, source in uris.items():
            done = m.finish(uri)
            assert done.code == 201, done
            assert done["SHA256-Hash"] == hashlib.sha256(source.read_bytes()).hexdigest()
            assert Path(done["Filename"]).read_bytes() == source.read_bytes()


def _failure(setup: Setup, **config: str) -> str:
    with method() as m:
        setup.start(m, **config)
        m.acquire(setup.uri, setup.dest)
        failed = m.finish(setup.uri)
    assert failed.code == 400, failed
    assert not setup.dest.exists() or setup.dest.stat().st_size == 0
    return failed["Message"]


def test_no_token_configured_says_how_to_configure_one(setup: Setup) -> None:
    setup.config.pop(f"Acquire::updown+https::{PRIVATE}::Token-File")
    message = _failure(setup)
    assert message.startswith("401")
    assert "needs a token and none is configured" in message
    assert f"Acquire::updown+https::{PRIVATE}::Token-File" in message


def test_expired_token_says_so(setup: Setup, sso: FakeSso) -> None:
    sso.issue(setup.token, setup.user, lifetime=-60)
    message = _failure(setup)
    assert "has expired; get a new one" in message and str(setup.token_file) in message
    assert setup.token not in message


def test_revoked_token_is_refused(setup: Setup, sso: FakeSso) -> None:
    sso.revoke(setup.token)
    message = _failure(setup)
    assert message.startswith("401") and "was refused" in message and setup.token not in message


def test_revoked_access_says_the_store_refused(setup: Setup, store: FakeStore) -> None:
    store.grants.discard((setup.user, setup.package))
    message = _failure(setup)
    assert message.startswith("403") and "access not granted or revoked" in message


def test_a_token_file_others_can_read_is_not_used(setup: Setup) -> None:
    setup.token_file.chmod(0o644)
    message = _failure(setup)
    assert "readable by group or others" in message and "chmod 600" in message
    assert setup.token not in message


def test_the_default_token_file_serves_every_host(setup: Setup) -> None:
    token_file = setup.config.pop(f"Acquire::updown+https::{PRIVATE}::Token-File")
    with method() as m:
        setup.start(m, **{"Acquire::updown+https::Token-File": token_file})
        m.acquire(setup.uri, setup.dest)
        assert m.finish(setup.uri).code == 201


def test_a_damaged_body_is_a_hash_sum_mismatch(setup: Setup, srv: ServerProcess) -> None:
    corrupt_object(srv, setup.record["sha256"])
    with method() as m:
        setup.start(m)
        m.acquire(setup.uri, setup.dest, Expected_SHA256=hashlib.sha256(setup.data).hexdigest())
        failed = m.finish(setup.uri)
    assert failed.code == 400, failed
    assert failed["FailReason"] == "HashSumMismatch"
    assert "Hash Sum mismatch" in failed["Message"]
    assert not setup.dest.exists()
    # What was received, for apt to list next to what it expected.
    assert len(failed["SHA256-Hash"]) == 64 and failed["SHA256-Hash"] != hashlib.sha256(setup.data).hexdigest()


def test_sso_unavailable_is_a_transient_failure_with_retry_after(setup: Setup, sso: FakeSso) -> None:
    sso.fail_status = 500
    try:
        with method() as m:
            setup.start(m)
            m.acquire(setup.uri, setup.dest)
            failed = m.finish(setup.uri)
    finally:
        sso.fail_status = None
    assert failed.code == 400 and failed["Message"].startswith("503"), failed
    assert "the service is unavailable" in failed["Message"] and "retry after 30 s" in failed["Message"]
    assert failed["Transient-Failure"] == "true"
    assert abs(int(failed["Retry-After"]) - (time.time() + 30)) < 5  # when, in Unix seconds, as apt reads it


def test_a_missing_file_and_an_unreachable_host_fail_clearly(setup: Setup) -> None:
    missing = setup.uri.replace("app.bin", "nothing.bin")
    with method() as m:
        setup.start(m)
        m.acquire(missing, setup.dest)
        failed = m.finish(missing)
    assert failed["Message"].startswith("404") and failed["FailReason"] == "HttpError404"
    closed = f"updown+https://{PRIVATE}:1/x/1/y"
    with method() as m:
        setup.start(m)
        m.acquire(closed, setup.dest)
        failed = m.finish(closed)
    assert failed.code == 400 and "connection refused" in failed["Message"]
    assert failed["Transient-Failure"] == "true"


class _Redirector:
    """An HTTPS server (the updown server's own certificate) answering every GET with one redirect, once
    ``gate`` is open."""

    def __init__(self, srv: ServerProcess, location: str) -> None:
        location_ = location
        self.gate = gate = threading.Event()
        gate.set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                gate.wait(30)
                self.send_response(302)
                self.send_header("Location", location_)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(srv.cert, srv.data_dir / "tls" / "key.pem")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    ("location", "expect"),
    [
        ("https://{host}:{port}{path}", "updown+https://{host}:{port}{path}"),
        ("/moved{path}", "updown+https://{host}:{rport}/moved{path}"),  # relative: the same host and port
        ("http://{host}:{port}{path}", "RedirectionForbidden"),  # never to plain HTTP: the token would be in clear
        ("{path}", "RedirectionLoop"),  # to itself
    ],
)
def test_redirects_are_handed_to_apt(srv: ServerProcess, setup: Setup, location: str, expect: str) -> None:
    path = setup.uri.split(str(srv.port), 1)[1]
    redirector = _Redirector(srv, location.format(host=PRIVATE, port=srv.port, path=path))
    try:
        uri = f"updown+https://{PRIVATE}:{redirector.port}{path}"
        with method() as m:
            setup.start(m)
            m.acquire(uri, setup.dest)
            answer = m.finish(uri)
            if "://" not in expect:
                assert answer.code == 400 and answer["FailReason"] == expect, answer
                return
            assert answer.code == 103, answer
            assert answer["New-URI"] == expect.format(host=PRIVATE, port=srv.port, rport=redirector.port, path=path)
            if answer["New-URI"] == setup.uri:  # apt asks for the new URI, with the same file name
                m.acquire(setup.uri, setup.dest)
                assert m.finish(setup.uri).code == 201
                assert setup.dest.read_bytes() == setup.data
    finally:
        redirector.close()


def test_answers_come_as_downloads_finish_not_in_request_order(srv: ServerProcess, setup: Setup) -> None:
    path = setup.uri.split(str(srv.port), 1)[1]
    slow = _Redirector(srv, f"https://{PRIVATE}:{srv.port}/moved{path}")
    slow.gate.clear()  # its answer waits until the other download is done
    try:
        slow_uri = f"updown+https://{PRIVATE}:{slow.port}{path}"
        with method() as m:
            setup.start(m)
            m.acquire(slow_uri, setup.dest.with_suffix(".slow"))
            m.acquire(setup.uri, setup.dest)
            assert m.finish(setup.uri).code == 201  # the second asked, answered first
            assert [msg.code for msg in m.for_uri(slow_uri)] == [102, 102]  # connecting, waiting for headers
            slow.gate.set()
            assert m.finish(slow_uri).code == 103
    finally:
        slow.gate.set()
        slow.close()


def _fifo(f: Path) -> None:
    f.unlink()
    os.mkfifo(f, 0o600)


def _symlink(f: Path) -> None:
    f.rename(f.with_suffix(".real"))
    f.symlink_to(f.with_suffix(".real"))


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda f: f.write_text("one\ntwo\n"), "must hold one token on one line"),
        (lambda f: f.write_text("not a token\n"), "must hold one token on one line"),
        (lambda f: f.unlink(), "does not exist"),
        (_fifo, "is not a regular file"),
        (_symlink, "is a symbolic link"),
    ],
)
def test_a_bad_token_file_is_named_and_its_content_never_shown(
    setup: Setup, make: Callable[[Path], object], says: str
) -> None:
    make(setup.token_file)
    message = _failure(setup)
    assert says in message and str(setup.token_file) in message, message
    assert setup.token not in message


def test_credentials_in_the_uri_are_refused(setup: Setup) -> None:
    uri = setup.uri.replace(f"{PRIVATE}:", f"user:{setup.token}@{PRIVATE}:")
    with method() as m:
        setup.start(m)
        m.acquire(uri, setup.dest)
        failed = m.finish(uri)
    assert failed.code == 400 and "carry no credentials" in failed["Message"], failed
    assert "Token-File" in failed["Message"] and setup.token not in failed["Message"]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root, as apt runs its methods")
def test_the_token_is_read_as_root_then_the_download_runs_as_the_sandbox_user(srv: ServerProcess, setup: Setup) -> None:
    sandbox = pwd.getpwnam("_apt") if "_apt" in {p.pw_name for p in pwd.getpwall()} else pytest.skip("no _apt")
    # apt's partial directory belongs to _apt; the CA (as in /etc/ssl) is readable by all. The token file stays
    # root's, 0600, in root's private temporary directory.
    partial = Path(tempfile.mkdtemp(prefix="updown-apt-sandbox-"))
    try:
        os.chown(partial, sandbox.pw_uid, sandbox.pw_gid)
        shutil.copy(srv.cert, partial / "ca.pem")
        (partial / "ca.pem").chmod(0o644)
        with method() as m:
            setup.start(m, **{"APT::Sandbox::User": "_apt", "Acquire::https::CaInfo": str(partial / "ca.pem")})
            m.acquire(setup.uri, partial / "app.bin")
            done = m.finish(setup.uri)
            m.seen.clear()
            m.acquire(setup.uri, setup.dest)  # root's directory: the method is root no more
            refused = m.finish(setup.uri)
        assert done.code == 201, done
        assert (partial / "app.bin").read_bytes() == setup.data
        assert (partial / "app.bin").stat().st_uid == sandbox.pw_uid
        assert refused.code == 400 and "Permission denied" in refused["Message"], refused
    finally:
        shutil.rmtree(partial)
