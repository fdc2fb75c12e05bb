"""A streaming reader for multipart/form-data uploads: fields first, then exactly one file part, then nothing.

Starlette's ``request.form()`` spools file parts to a temporary file; an upload must go straight to object
storage instead, so this wraps python-multipart's push parser into a pull interface: ``read_fields`` returns the
fields that precede the file part (they are what the signature covers), ``file_data`` streams the file part and
then drains the rest of the body, refusing a second file part or a field after the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from updown_app.http.errors import ApiError

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 64


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def boundary_of(content_type: str | None) -> bytes:
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "unsupported_media_type", "the body must be multipart/form-data with a boundary")
    return params[b"boundary"]


@dataclass
class _Part:
    name: str
    filename: str | None


class MultipartReader:
    def __init__(self, source: AsyncIterator[bytes], boundary: bytes) -> None:
        self._source = source
        self._events: list[tuple[str, Any]] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )
        self.file_part: _Part | None = None

    # Parser callbacks (synchronous; they only queue events) ------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        # Latin-1 keeps the raw bytes (parse_options_header encodes back to latin-1); names are decoded below.
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition", ""))
        if disposition != b"form-data" or b"name" not in params:
            raise _bad("invalid_multipart", "every part needs Content-Disposition: form-data with a name")
        filename = params.get(b"filename")
        try:
            part = _Part(params[b"name"].decode(), None if filename is None else filename.decode())
        except UnicodeDecodeError:
            raise _bad("invalid_multipart", "a part's name or filename is not UTF-8") from None
        self._events.append(("part", part))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        # A view, not a copy: the file's bytes are copied once, where the verifying stream joins them into chunks.
        self._events.append(("data", memoryview(data)[start:end]))

    def _on_part_end(self) -> None:
        self._events.append(("end_part", None))

    def _on_end(self) -> None:
        self._ended = True

    # Pull interface ------------------------------------------------------------------------------------------------

    async def _next_events(self) -> bool:
        """Feed the parser until it produced events; False at the end of the body."""
        while not self._events:
            try:
                chunk = await anext(self._source)
            except StopAsyncIteration:
                if not self._ended:
                    raise _bad("truncated_body", "the multipart body ended before its closing boundary") from None
                return False
            if not chunk:
                continue
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise _bad("invalid_multipart", f"malformed multipart body: {exc}") from None
        return True

    async def read_fields(self) -> dict[str, str]:
        """Fields up to the file part (``file_part`` is then set) or to the end of the body."""
        fields: dict[str, str] = {}
        current: _Part | None = None
        value = bytearray()
        while await self._next_events():
            events, self._events = self._events, []
            for i, (kind, payload) in enumerate(events):
                if kind == "part":
                    if payload.filename is not None:
                        self.file_part = payload
                        self._events = events[i + 1 :]
                        return fields
                    current, value = payload, bytearray()
                    if current.name in fields:
                        raise _bad("duplicate_field", f"field {current.name!r} is given more than once")
                    if len(fields) >= MAX_FIELDS:
                        raise _bad("too_many_fields", f"more than {MAX_FIELDS} fields")
                elif kind == "data":
                    value += payload
                    if len(value) > MAX_FIELD_BYTES:
                        raise _bad("field_too_large", "a form field is larger than 64 KiB")
                elif kind == "end_part" and current is not None:
                    try:
                        fields[current.name] = value.decode("utf-8")
                    except UnicodeDecodeError:
                        raise _bad("invalid_field", f"field {current.name!r} is not UTF-8") from None
                    current = None
        return fields

    async def file_data(self) -> AsyncIterator[bytes]:
        """The file part's bytes; afterwards checks that nothing but the closing boundary follows."""
        if self.file_part is None:
            raise _bad("missing_file", "the upload has no file part")
        in_file = True
        while await self._next_events():
            events, self._events = self._events, []
            for kind, payload in events:
                if in_file and kind == "data":
                    yield payload
                elif in_file and kind == "end_part":
                    in_file = False
                elif kind == "part":
                    if payload.filename is not None:
                        raise _bad("multiple_files", "only one file part is allowed per upload")
                    raise _bad("field_after_file", "all fields must come before the file part")
        if in_file:
            raise _bad("truncated_body", "the file part has no closing boundary")
