"""Errors as HTTP answers: ``{"error": {"code": ..., "message": ...}}`` with a status. ``ApiError`` is an error
of the HTTP protocol itself (a header, a method, a media type); domain errors (``core/errors.py``) get their
status here and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from updown_app.core import errors as domain

STATUS: dict[type[domain.DomainError], int] = {
    domain.InvalidInput: 400,
    domain.Unauthenticated: 401,
    domain.Forbidden: 403,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.Expired: 410,
    domain.TooLarge: 413,
    domain.UpstreamFailed: 502,
    domain.Unavailable: 503,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return error_response(self.status, self.code, self.message, self.headers)

    @classmethod
    def of(cls, exc: domain.DomainError, headers: Mapping[str, str] | None = None) -> ApiError:
        """The HTTP answer to a domain error (``headers`` added, e.g. a protocol's own)."""
        status = next(s for kind, s in STATUS.items() if isinstance(exc, kind))
        extra = dict(headers or {})
        if isinstance(exc, domain.Unauthenticated):
            extra["www-authenticate"] = exc.challenge
        if isinstance(exc, domain.Unavailable):
            extra["retry-after"] = str(exc.retry_after)
        return cls(status, exc.code, exc.message, extra)


def as_api_error(exc: ApiError | domain.DomainError) -> ApiError:
    return exc if isinstance(exc, ApiError) else ApiError.of(exc)


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    hdrs = {"cache-control": "no-store", **(headers or {})}
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=hdrs)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError | domain.DomainError)
    return as_api_error(exc).response()
