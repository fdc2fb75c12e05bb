#!/usr/bin/python3 -I
"""apt's transport method for updown's private host: ``updown+https://``.

apt's own ``https`` method can send only HTTP Basic credentials; the private host wants an SSO bearer token. This
method is what apt runs as ``/usr/lib/apt/methods/updown+https``: it speaks apt's method protocol on stdin/stdout
(``100 Capabilities``, ``601 Configuration``, ``600 URI Acquire`` in; ``102 Status``, ``103 Redirect``,
``200 URI Start``, ``201 URI Done``, ``400 URI Failure`` out) and fetches over HTTPS with
``Authorization: Bearer <token>``.

The token comes only from apt's configuration: ``Acquire::updown+https::<host>::Token-File`` (or, for every host,
``Acquire::updown+https::Token-File``) names a file holding it, which must not be readable by group or others.
The file is read when apt sends its configuration, before the method drops root to ``APT::Sandbox::User`` as
apt's own methods do.

It runs isolated (``python3 -I``): apt runs it as root, so no ``PYTHONPATH`` or user site of the caller's
environment may inject code, and the script's own directory is not put first on ``sys.path``.

Standard library only (it ships in a ``.deb`` that depends on nothing but python3) and one file, so the same
module is both the packaged method and the ``updown-apt-method`` entry point.
"""

from __future__ import annotations

import email.utils
import encodings.idna  # noqa: F401  (see drop_privileges)
import errno
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import stat
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

VERSION = "0.1.0"
SCHEME = "updown+https"
CHUNK = 256 * 1024
ERROR_BODY_LIMIT = 64 * 1024
# The hashes apt knows, by the names its 201 message uses ("<name>-Hash").
HASHES = (("MD5Sum", "md5"), ("SHA1", "sha1"), ("SHA256", "sha256"), ("SHA512", "sha512"))
REDIRECTS = (301, 302, 303, 307, 308)
_ETAG_SHA256 = re.compile(r'^"([0-9a-f]{64})"$')
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")


# apt's message protocol ----------------------------------------------------------------------------------------


@dataclass
class Message:
    """One message: ``<code> <text>`` then ``Name: value`` fields (a value may continue on lines starting with a
    space), ended by a blank line."""

    code: int
    text: str
    fields: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str = "") -> str:
        """The first field of that name (names are case-insensitive, as apt's LookupTag)."""
        lower = name.lower()
        return next((v for k, v in self.fields if k.lower() == lower), default)

    def all(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.fields if k.lower() == lower]


class ProtocolError(Exception):
    pass


def read_message(stream: IO[bytes]) -> Message | None:
    """The next message from apt, or None at end of input. Blank lines between messages are skipped."""
    lines: list[str] = []
    while True:
        raw = stream.readline()
        if not raw:
            if lines:
                break  # apt ends every message with a blank line; a cut-off last one is still read
            return None
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line.strip():
            if lines:
                break
            continue
        lines.append(line)
    status, _, text = lines[0].partition(" ")
    if not status.isdigit():
        raise ProtocolError(f"malformed message from apt: {lines[0]!r}")
    message = Message(int(status), text.strip())
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and message.fields:
            name, value = message.fields[-1]
            message.fields[-1] = (name, f"{value}\n{line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"malformed field in a {message.code} message: {line!r}")
        message.fields.append((name.strip(), value.strip()))
    return message


def read_messages(stream: IO[bytes]) -> Iterator[Message]:
    while (message := read_message(stream)) is not None:
        yield message


def _clean(value: str) -> str:
    """A value apt accepts: apt aborts on control characters other than tab and newline, and a newline would
    start a new field, so both become spaces."""
    return "".join(" " if c in "\r\n" else c for c in value if c in "\t\r\n" or (ord(c) >= 32 and ord(c) != 127))


def format_message(code: int, text: str, fields: Iterable[tuple[str, str]] = ()) -> bytes:
    out = [f"{code} {text}"]
    out += [f"{name}: {_clean(value)}" for name, value in fields if value != ""]
    return ("\n".join(out) + "\n\n").encode()


class Output:
    """Messages to apt: written whole under a lock (several downloads run at once) and flushed each time."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def send(self, code: int, text: str, fields: Iterable[tuple[str, str]] = ()) -> None:
        data = format_message(code, text, fields)
        with self.lock:
            self.stream.write(data)
            self.stream.flush()


# apt's configuration -------------------------------------------------------------------------------------------


class AptConfig:
    """The ``Config-Item`` lines of apt's ``601 Configuration`` (keys case-insensitive, as in apt)."""

    def __init__(self, items: dict[str, str] | None = None) -> None:
        self.items = {k.lower(): v for k, v in (items or {}).items()}

    @classmethod
    def from_message(cls, message: Message) -> AptConfig:
        items: dict[str, str] = {}
        for item in message.all("Config-Item"):
            key, sep, value = item.partition("=")
            if sep:
                # apt %-quotes '=', '"', newlines and control characters in keys and values (QuoteString).
                items[urllib.parse.unquote(key).lower()] = urllib.parse.unquote(value)
        return cls(items)

    def get(self, key: str, default: str = "") -> str:
        return self.items.get(key.lower(), default)

    def for_host(self, host: str, name: str, default: str = "") -> str:
        """``Acquire::updown+https::<host>::<name>``, then without the host, then the same of apt's ``https``
        method (so ``Acquire::https::CaInfo`` and friends apply here too)."""
        for access in (SCHEME, "https"):
            for key in (f"Acquire::{access}::{host}::{name}", f"Acquire::{access}::{name}"):
                if key.lower() in self.items:
                    return self.items[key.lower()]
        return default

    def bool_for_host(self, host: str, name: str, default: bool) -> bool:
        value = self.for_host(host, name, "").strip().lower()
        if value in ("yes", "true", "with", "on", "enable", "1"):
            return True
        if value in ("no", "false", "without", "off", "disable", "0"):
            return False
        return default

    def int_for_host(self, host: str, name: str, default: int) -> int:
        try:
            return int(self.for_host(host, name, str(default)))
        except ValueError:
            return default


# Tokens --------------------------------------------------------------------------------------------------------


class TokenError(Exception):
    """A token file that cannot be used; the message names the file, never its content."""


def read_token(path: str) -> str:
    """The bearer token in ``path``: a file owned by root or by us, not readable by group or others."""
    try:
        # O_NONBLOCK: a FIFO in its place must not hang apt (it is then refused as not a regular file).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TokenError(f"the token file {path} does not exist") from None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise TokenError(f"the token file {path} cannot be read: {exc.strerror}") from None
        # A link could lead root to read a file someone else chose.
        raise TokenError(f"the token file {path} is a symbolic link; name the file itself") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TokenError(f"the token file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise TokenError(
                f"the token file {path} is readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"refusing to use it: run chmod 600 {path}"
            )
        if info.st_uid not in (0, os.getuid()):
            raise TokenError(f"the token file {path} must be owned by root")
        data = f.read(16 * 1024 + 1)
    lines = [line.strip() for line in data.decode("ascii", errors="replace").splitlines() if line.strip()]
    if len(data) > 16 * 1024 or len(lines) != 1 or not re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", lines[0]):
        raise TokenError(f"the token file {path} must hold one token on one line")
    return lines[0]


@dataclass
class Tokens:
    """Each host's token (or why it has none usable), read once from the files apt's configuration names."""

    by_host: dict[str, str | TokenError] = field(default_factory=dict)
    default: str | TokenError | None = None
    files: dict[str, str] = field(default_factory=dict)  # host ("" for the default) -> file

    @classmethod
    def load(cls, config: AptConfig) -> Tokens:
        tokens = cls()
        prefix = f"acquire::{SCHEME}::"
        for key, path in config.items.items():
            if not key.startswith(prefix) or not key.endswith("::token-file") or not path:
                continue
            host = key[len(prefix) : -len("::token-file")]
            value: str | TokenError
            try:
                value = read_token(path)
            except TokenError as exc:
                value = exc
            tokens.files[host] = path
            if host:
                tokens.by_host[host] = value
        default = config.get(f"Acquire::{SCHEME}::Token-File")
        if default:
            tokens.files[""] = default
            try:
                tokens.default = read_token(default)
            except TokenError as exc:
                tokens.default = exc
        return tokens

    def for_host(self, host: str) -> tuple[str | TokenError | None, str | None]:
        """The token for ``host`` (None: no token configured) and the file it came from."""
        host = host.lower()
        if host in self.by_host:
            return self.by_host[host], self.files[host]
        return self.default, self.files.get("")


def drop_privileges(user: str) -> None:
    """Become apt's sandbox user, as apt's own methods do after reading what needs root. What is imported later
    must be readable by that user: the IDNA codec, which socket and ssl load on the first connection, is imported
    with the rest at the top."""
    if os.getuid() != 0 or not user or user == "root":
        return
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return  # apt itself then downloads as root (and says so)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() != entry.pw_uid or os.geteuid() != entry.pw_uid:
        raise SystemExit(f"updown+https: could not become {user}")


# Downloads -----------------------------------------------------------------------------------------------------


class Failure(Exception):
    """A ``400 URI Failure``: ``message`` for people, ``reason`` for apt's retry logic, ``fields`` more of the
    message (the hashes received, which apt lists next to the expected ones on a mismatch)."""

    def __init__(
        self, message: str, reason: str = "", transient: bool = False, fields: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.transient = transient
        self.fields = fields or []


class Redirect(Exception):
    def __init__(self, new_uri: str) -> None:
        super().__init__(new_uri)
        self.new_uri = new_uri


class _Retry(Exception):
    """Send the request again without resuming (the partial file was discarded)."""


@dataclass
class Target:
    uri: str
    host: str
    port: int
    path: str  # request target: path and query, %-encoded

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"


def parse_uri(uri: str) -> Target:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != SCHEME or not parts.hostname:
        raise Failure(f"not an {SCHEME}:// URI: {uri}")
    if parts.username or parts.password:
        raise Failure(f"{SCHEME} URIs carry no credentials (the token comes from Acquire::{SCHEME}::Token-File)")
    try:
        port = parts.port or 443
    except ValueError:
        raise Failure(f"bad port in {uri}") from None
    # apt sends URIs %-encoded (Send-URI-Encoded); quote() keeps existing escapes and encodes what an older apt
    # would have sent decoded.
    path = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + parts.query
    return Target(uri, parts.hostname, port, path)


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class Digests:
    def __init__(self) -> None:
        self.size = 0
        self.hashes = {name: hashlib.new(algorithm) for name, algorithm in HASHES}

    def update(self, data: bytes) -> None:
        self.size += len(data)
        for h in self.hashes.values():
            h.update(data)

    def fields(self) -> list[tuple[str, str]]:
        hexes = {name: h.hexdigest() for name, h in self.hashes.items()}
        out = [(f"{name}-Hash", value) for name, value in hexes.items()]
        out.insert(1, ("MD5-Hash", hexes["MD5Sum"]))  # apt's old name for MD5Sum, still sent by its methods
        out.append(("Checksum-FileSize-Hash", str(self.size)))
        return out

    def hexdigest(self, name: str) -> str:
        return self.hashes[name].hexdigest()


def _hash_file(path: str, digests: Digests, limit: int | None = None) -> None:
    with open(path, "rb") as f:
        while limit is None or digests.size < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - digests.size)
            chunk = f.read(want)
            if not chunk:
                break
            digests.update(chunk)


def _server_message(response: http.client.HTTPResponse) -> str:
    """The ``message`` of updown's JSON error body (it never holds a token or a secret), or ""."""
    try:
        body = response.read(ERROR_BODY_LIMIT)
        error = json.loads(body).get("error", {})
        message = error.get("message", "") if isinstance(error, dict) else ""
        return message if isinstance(message, str) else ""
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        return ""


def connection_failure(exc: BaseException, target: Target) -> Failure:
    where = target.netloc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure(f"the TLS certificate of {where} could not be verified: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return Failure(f"TLS with {where} failed: {exc.reason or exc}", transient=True)
    if isinstance(exc, socket.gaierror):
        if exc.errno == socket.EAI_AGAIN:
            return Failure(f"temporary failure resolving '{target.host}'", "TmpResolveFailure", transient=True)
        return Failure(f"could not resolve '{target.host}'", "ResolveFailure")
    if isinstance(exc, ConnectionRefusedError):
        return Failure(f"could not connect to {where}: connection refused", "ConnectionRefused", transient=True)
    if isinstance(exc, TimeoutError | socket.timeout):
        return Failure(f"{where} did not answer in time", "Timeout", transient=True)
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return Failure(f"could not connect to {where}: {exc.strerror}", "ConnectionTimedOut", transient=True)
    if isinstance(exc, http.client.IncompleteRead):
        return Failure(f"the connection to {where} closed mid-transfer; apt resumes on the next try", transient=True)
    if isinstance(exc, http.client.HTTPException | ConnectionError):
        return Failure(f"the connection to {where} failed: {type(exc).__name__}", transient=True)
    return Failure(f"the connection to {where} failed: {exc}", transient=True)


def _loopback_name(host: str) -> str:
    """The name to connect to: names under ``.localhost`` are loopback (RFC 6761 section 6.3), as curl and
    systemd-resolved treat them, whether or not the system resolver knows them (updown's default private host
    is ``private.localhost``)."""
    return "localhost" if host.lower().rstrip(".").endswith(".localhost") else host


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection to ``host`` (SNI and certificate check against it) at the address its name means."""

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.tls = context

    def connect(self) -> None:
        sock = socket.create_connection((_loopback_name(self.host), self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class Fetcher:
    """Downloads one item at a time per thread, over a persistent connection per host and thread."""

    def __init__(self, config: AptConfig, tokens: Tokens, send: Callable[[int, str, list[tuple[str, str]]], None]):
        self.config = config
        self.tokens = tokens
        self.send = send
        self.local = threading.local()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    # Connections -------------------------------------------------------------------------------------------

    def context(self, host: str) -> ssl.SSLContext:
        with self._lock:
            if host not in self._contexts:
                cafile = self.config.for_host(host, "CaInfo") or None
                ctx = ssl.create_default_context(cafile=cafile)
                if not self.config.bool_for_host(host, "Verify-Peer", True):
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                elif not self.config.bool_for_host(host, "Verify-Host", True):
                    ctx.check_hostname = False
                self._contexts[host] = ctx
            return self._contexts[host]

    def connection(self, target: Target) -> tuple[http.client.HTTPSConnection, bool]:
        """A connection to the target's host and whether it was used before."""
        pool: dict[tuple[str, int], http.client.HTTPSConnection] = self.local.__dict__.setdefault("pool", {})
        key = (target.host, target.port)
        if key in pool:
            return pool[key], True
        timeout = self.config.int_for_host(target.host, "Timeout", 30)
        conn = _Connection(target.host, target.port, timeout=timeout, context=self.context(target.host))
        pool[key] = conn
        return conn, False

    def discard(self, target: Target) -> None:
        pool: dict[tuple[str, int], http.client.HTTPSConnection] = self.local.__dict__.setdefault("pool", {})
        conn = pool.pop((target.host, target.port), None)
        if conn is not None:
            conn.close()

    # One item ----------------------------------------------------------------------------------------------

    def acquire(self, item: Message) -> None:
        uri = item.get("URI")
        try:
            self._acquire(item)
        except Redirect as r:
            self.send(103, "Redirect", [("URI", uri), ("New-URI", r.new_uri)])
        except Failure as f:
            fields = [("URI", uri), ("Message", f.message), ("FailReason", f.reason)]
            if f.transient:
                fields.append(("Transient-Failure", "true"))
            self.send(400, "URI Failure", fields + f.fields)
        except Exception as exc:  # a bug must not leave apt waiting for this URI forever
            self.send(400, "URI Failure", [("URI", uri), ("Message", f"{SCHEME} failed: {exc!r}")])

    def _acquire(self, item: Message) -> None:
        target = parse_uri(item.get("URI"))
        filename = item.get("Filename")
        if not filename:
            raise Failure("apt gave no Filename")
        proxy = item.get("Proxy")
        if proxy and proxy.upper() != "DIRECT":
            raise Failure(f'{SCHEME} does not go through proxies; set Acquire::{SCHEME}::Proxy "DIRECT"')
        token, token_file = self.tokens.for_host(target.host)
        if isinstance(token, TokenError):
            raise Failure(str(token))
        resume = True
        for _ in range(3):
            try:
                self._get(item, target, filename, token, token_file, resume)
                return
            except _Retry:
                resume = False
        raise Failure(f"{target.netloc} kept refusing the download's range")

    def _request(self, target: Target, headers: dict[str, str]) -> http.client.HTTPResponse:
        for attempt in (1, 2):
            conn, reused = self.connection(target)
            if not reused:
                self.send(102, "Status", [("URI", target.uri), ("Message", f"Connecting to {target.netloc}")])
            try:
                conn.request("GET", target.path, headers=headers)
                self.send(102, "Status", [("URI", target.uri), ("Message", "Waiting for headers")])
                return conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
                self.discard(target)
                if not reused or attempt == 2:  # a kept-alive connection the server closed: try a fresh one
                    raise connection_failure(exc, target) from None
            except (OSError, http.client.HTTPException) as exc:
                self.discard(target)
                raise connection_failure(exc, target) from None
        raise AssertionError("unreachable")

    def _get(
        self,
        item: Message,
        target: Target,
        filename: str,
        token: str | None,
        token_file: str | None,
        resume: bool,
    ) -> None:
        headers = {
            "Host": target.netloc,
            "User-Agent": self.config.for_host(target.host, "User-Agent", f"updown-apt-method/{VERSION}"),
            "Accept-Encoding": "identity",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            partial = os.stat(filename)
        except FileNotFoundError:
            partial = None
        last_modified = parse_http_date(item.get("Last-Modified"))
        start = 0
        if resume and partial is not None and partial.st_size > 0:
            start = partial.st_size
            headers["Range"] = f"bytes={start}-"
            headers["If-Range"] = http_date(partial.st_mtime)
        elif last_modified is not None:
            headers["If-Modified-Since"] = http_date(last_modified)

        response = self._request(target, headers)
        try:
            self._answer(item, target, filename, token, token_file, response, start)
        except Redirect:
            raise  # its body was read: the connection stays usable
        except Exception:
            self.discard(target)  # the body may be half read: the connection cannot carry another request
            raise
        if response.will_close:
            self.discard(target)

    def _answer(
        self,
        item: Message,
        target: Target,
        filename: str,
        token: str | None,
        token_file: str | None,
        response: http.client.HTTPResponse,
        start: int,
    ) -> None:
        status = response.status
        uri = target.uri
        if status == 304:
            response.read()
            if os.path.exists(filename):
                os.unlink(filename)
            self.send(
                201,
                "URI Done",
                [
                    ("URI", uri),
                    ("Filename", filename),
                    ("Last-Modified", item.get("Last-Modified")),
                    ("IMS-Hit", "true"),
                ],
            )
            return
        if status in REDIRECTS:
            response.read()
            raise Redirect(redirect_target(target, response.getheader("Location")))
        if status == 416 and start:
            self._range_not_satisfiable(item, target, filename, response)
            return
        if status not in (200, 206):
            raise http_failure(status, response, target, token, token_file)

        resume_point = 0
        total: int | None = None
        if status == 206:
            match = _CONTENT_RANGE.match(response.getheader("Content-Range", ""))
            if not start or not match or int(match.group(1)) != start:
                response.read()
                os.unlink(filename)
                raise _Retry()
            resume_point, total = start, int(match.group(3))
        else:
            length = response.getheader("Content-Length")
            total = int(length) if length and length.isdigit() else None
        maximum = _maximum_size(item)
        if maximum and total is not None and total > maximum:
            raise Failure(f"the file is larger than apt expects ({total} > {maximum} bytes)", "MaximumSizeExceeded")
        modified = parse_http_date(response.getheader("Last-Modified"))
        start_fields = [("URI", uri), ("Size", str(total or "")), ("Resume-Point", str(resume_point or ""))]
        if modified is not None:
            start_fields.insert(2, ("Last-Modified", http_date(modified)))
        self.send(200, "URI Start", start_fields)

        digests = Digests()
        if resume_point:
            _hash_file(filename, digests, resume_point)
            if digests.size != resume_point:
                raise _Retry()
        try:
            with open(filename, "r+b" if resume_point else "wb") as out:
                if resume_point:
                    out.seek(resume_point)
                    out.truncate()
                while chunk := response.read(CHUNK):
                    digests.update(chunk)
                    if maximum and digests.size > maximum:
                        raise Failure(
                            f"the file is larger than apt expects (more than {maximum} bytes)", "MaximumSizeExceeded"
                        )
                    out.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OSError) and exc.filename:
                raise Failure(f"cannot write {filename}: {exc.strerror}") from None
            raise connection_failure(exc, target) from None
        finally:
            if modified is not None and os.path.exists(filename):
                # The partial file's date is what If-Range sends on resume; the final file's is what apt sends
                # as Last-Modified for If-Modified-Since next time.
                os.utime(filename, (modified, modified))
        if total is not None and digests.size != total:
            raise Failure(
                f"the connection to {target.netloc} closed after {digests.size} of {total} bytes; "
                "apt resumes on the next try",
                transient=True,
            )
        if resume_point and not _etag_matches(response, digests):
            # If-Range by date is only as good as the partial file's date: a partial file of another version
            # that happens to carry the same date was continued. Start again from nothing.
            os.unlink(filename)
            raise _Retry()
        _check_etag(response, digests, filename, target)
        done = [("URI", uri), ("Filename", filename), ("Size", str(digests.size))]
        if modified is not None:
            done.append(("Last-Modified", http_date(modified)))
        done += digests.fields()
        if resume_point:
            done.append(("Resume-Point", str(resume_point)))
        self.send(201, "URI Done", done)

    def _range_not_satisfiable(
        self, item: Message, target: Target, filename: str, response: http.client.HTTPResponse
    ) -> None:
        """A partial file at least as long as the file: done if it is the file (apt had not moved it), else
        discarded and fetched again."""
        response.read()
        match = _UNSATISFIED_RANGE.match(response.getheader("Content-Range", ""))
        digests = Digests()
        if match and os.path.getsize(filename) == int(match.group(1)):
            _hash_file(filename, digests)
            expected = {name: item.get(f"Expected-{name}") for name, _ in HASHES if item.get(f"Expected-{name}")}
            etag = _ETAG_SHA256.match(response.getheader("ETag", ""))
            if etag:
                expected.setdefault("SHA256", etag.group(1))
            if expected and all(digests.hexdigest(n) == v.lower() for n, v in expected.items()):
                self.send(201, "URI Done", [("URI", target.uri), ("Filename", filename), ("Size", str(digests.size)),
                                            *digests.fields()])  # fmt: skip
                return
        os.unlink(filename)
        raise _Retry()


def _maximum_size(item: Message) -> int:
    for name in ("Expected-Checksum-FileSize", "Maximum-Size"):
        value = item.get(name)
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def _etag_matches(response: http.client.HTTPResponse, digests: Digests) -> bool:
    etag = _ETAG_SHA256.match(response.getheader("ETag", ""))
    return etag is None or digests.hexdigest("SHA256") == etag.group(1)


def _check_etag(response: http.client.HTTPResponse, digests: Digests, filename: str, target: Target) -> None:
    """updown's ETag is the file's SHA-256: a body that does not match it was damaged on the way."""
    etag = _ETAG_SHA256.match(response.getheader("ETag", ""))
    if etag and digests.hexdigest("SHA256") != etag.group(1):
        os.unlink(filename)
        raise Failure(
            f"Hash Sum mismatch: the file received from {target.netloc} does not match the SHA-256 the server "
            f"announced ({etag.group(1)}); it was damaged in transit",
            "HashSumMismatch",
            fields=digests.fields(),
        )


def redirect_target(target: Target, location: str | None) -> str:
    if not location:
        raise Failure(f"{target.netloc} answered a redirect without a Location")
    absolute = urllib.parse.urljoin(f"https://{target.netloc}{target.path}", location)
    parts = urllib.parse.urlsplit(absolute)
    if parts.scheme != "https":
        raise Failure(f"refusing a redirect from {SCHEME} to {parts.scheme}://", "RedirectionForbidden")
    new_uri = urllib.parse.urlunsplit((SCHEME, *parts[1:]))
    if new_uri == target.uri:
        raise Failure("redirection loop encountered", "RedirectionLoop")
    return new_uri


def http_failure(
    status: int,
    response: http.client.HTTPResponse,
    target: Target,
    token: str | None,
    token_file: str | None,
) -> Failure:
    said = _server_message(response)
    detail = f" ({said})" if said else ""
    reason = f"HttpError{status}"
    head = f"{status} {response.reason}".strip()
    if status == 401:
        if token is None:
            return Failure(
                f"{head}: {target.host} needs a token and none is configured: put it in a file (mode 0600) and "
                f'set Acquire::{SCHEME}::{target.host}::Token-File "<file>"',
                reason,
            )
        if "expired" in said.lower():
            return Failure(
                f"{head}: the token in {token_file} has expired; get a new one from the store and write it there",
                reason,
            )
        return Failure(f"{head}: the token in {token_file} was refused{detail}", reason)
    if status == 403:
        return Failure(
            f"{head}: the store does not allow this account to download this package (access not granted or "
            f"revoked){detail}",
            reason,
        )
    if status == 404:
        return Failure(f"{head}: no published file at this address (a wrong path, or the file was unpublished)", reason)
    if status == 429 or status >= 500:
        retry = response.getheader("Retry-After", "")
        later = f"; retry after {retry} s" if retry.isdigit() else ""
        # apt waits until Retry-After (Unix seconds) before its next try, for the reason TooManyRequests.
        fields = [("Retry-After", str(int(time.time()) + int(retry)))] if retry.isdigit() else []
        reason = "TooManyRequests" if status == 429 else reason
        return Failure(f"{head}: the service is unavailable{detail}{later}", reason, transient=True, fields=fields)
    return Failure(f"{head}{detail}", reason)


# The method ----------------------------------------------------------------------------------------------------


class Method:
    """Reads apt's messages and runs each ``600 URI Acquire`` on a small thread pool, so several URIs are in
    flight at once and their answers come back in whatever order they finish."""

    def __init__(self, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.stdin = stdin
        self.out = Output(stdout)
        self.config = AptConfig()
        self.fetcher: Fetcher | None = None
        self.pool: ThreadPoolExecutor | None = None

    def capabilities(self) -> None:
        self.out.send(
            100,
            "Capabilities",
            [
                ("Version", "1.2"),
                ("Pipeline", "true"),
                ("Send-Config", "true"),
                ("Single-Instance", "true"),
                ("Send-URI-Encoded", "true"),
            ],
        )

    def configure(self, message: Message) -> None:
        self.config = AptConfig.from_message(message)
        tokens = Tokens.load(self.config)  # as root, before dropping privileges
        drop_privileges(self.config.get("APT::Sandbox::User"))
        self.fetcher = Fetcher(self.config, tokens, self.out.send)
        workers = self.config.int_for_host("", "Max-Parallel", 4)
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="updown-fetch")

    def run(self) -> int:
        self.capabilities()
        try:
            for message in read_messages(self.stdin):
                if message.code == 601:
                    self.configure(message)
                elif message.code == 600:
                    if self.fetcher is None:  # apt always configures first (Send-Config); be safe if not
                        self.configure(Message(601, "Configuration"))
                    assert self.pool is not None and self.fetcher is not None
                    self.pool.submit(self.fetcher.acquire, message)
        except ProtocolError as exc:
            print(f"{SCHEME}: {exc}", file=sys.stderr)
            return 100
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    if sys.stdin.isatty():
        print(f"{SCHEME}: this is an apt transport method; apt runs it (see apt's sources.list)", file=sys.stderr)
        return 100
    # apt stops a method with SIGINT/SIGTERM: stop at once, leaving partial files for the next resume.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: os._exit(100))
    return Method(sys.stdin.buffer, sys.stdout.buffer).run()


if __name__ == "__main__":
    sys.exit(main())
