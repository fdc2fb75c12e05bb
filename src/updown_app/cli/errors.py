"""Every failure of a command as one line and an exit status, never a traceback.

Exit statuses: 1 the service answered with an error (or the download did not verify), 2 a local problem (a
missing or unreadable file, bad usage, as argparse), 3 the service could not be talked to (connection refused,
dropped, TLS failure, timeout), 130 interrupted.
"""

from __future__ import annotations

import ssl

import httpx

from updown_app.client import UpdownError

SERVICE_ERROR, LOCAL_ERROR, UNREACHABLE, INTERRUPTED = 1, 2, 3, 130


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in the chain httpx and httpcore wrap around the real cause."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _where(exc: httpx.HTTPError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # no request attached
        return "the service"
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def describe(exc: BaseException) -> tuple[str, int] | None:
    """The line to print and the exit status for ``exc``; None for what is a bug (let it raise)."""
    if isinstance(exc, UpdownError):
        return str(exc), SERVICE_ERROR
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", INTERRUPTED
    if isinstance(exc, httpx.HTTPError):
        where = _where(exc)
        tls = _cause(exc, ssl.SSLError)
        if tls is not None:
            if isinstance(tls, ssl.SSLCertVerificationError):
                reason = f"certificate verify failed: {tls.verify_message}"
                reason += " (set UPDOWN_CA_BUNDLE or --cacert to the service's CA)"
            else:
                reason = str(getattr(tls, "reason", None) or tls)
            return f"TLS failure with {where}: {reason}", UNREACHABLE
        if isinstance(exc, httpx.ConnectError):
            refused = _cause(exc, ConnectionRefusedError)
            return f"cannot connect to {where}: {'connection refused' if refused else exc}", UNREACHABLE
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out talking to {where}", UNREACHABLE
        if isinstance(exc, httpx.TransportError):
            return f"the connection to {where} was dropped: {exc or 'closed by the server'}", UNREACHABLE
        return f"request to {where} failed: {exc}", UNREACHABLE
    if isinstance(exc, OSError):
        what = f"{exc.filename}: " if exc.filename else ""
        return f"{what}{exc.strerror or exc}", LOCAL_ERROR
    return None
