"""Where a Range request and the conditional headers are answered (RFC 9110 sections 13 and 14).

Pure functions over the request headers and the file's validators, so every case is unit-tested without I/O:
``evaluate`` returns what to send — 304/412, a 206 range, a 416, or the whole representation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from itertools import pairwise

_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class RangeError(Exception):
    """The Range header is malformed, overlapping or unsatisfiable: answered 416."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Decision:
    status: int  # 200, 206, 304, 412 or 416
    byte_range: ByteRange | None = None
    error: RangeError | None = None


def http_date(value: datetime) -> str:
    return format_datetime(value, usegmt=True)


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _etags(value: str) -> list[str]:
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def _weak_match(header: str, etag: str) -> bool:
    opaque = etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == opaque for tag in _etags(header))


def _strong_match(header: str, etag: str) -> bool:
    if etag.startswith("W/"):
        return False
    return any(tag == "*" or tag == etag for tag in _etags(header))


def _seconds(value: datetime) -> int:
    return int(value.timestamp())


def parse_range(header: str, size: int) -> ByteRange | None:
    """One byte range of a ``bytes=`` header; None means "send the whole representation"."""
    unit, sep, specs = header.partition("=")
    if not sep:
        raise RangeError("invalid_range", "Range must look like bytes=START-END")
    if unit.strip().lower() != "bytes":
        return None  # unknown range units are ignored (RFC 9110 14.2)
    ranges: list[ByteRange] = []
    for spec in specs.split(","):
        match = _RANGE_SPEC.match(spec)
        if match is None or (not match[1] and not match[2]):
            raise RangeError("invalid_range", f"malformed byte range {spec.strip()!r}")
        first, last = match[1], match[2]
        if not first:  # suffix: the last N bytes
            n = int(last)
            if n == 0 or size == 0:
                continue
            ranges.append(ByteRange(max(0, size - n), size - 1))
            continue
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            raise RangeError("invalid_range", f"byte range {spec.strip()!r} ends before it starts")
        if start >= size:
            continue
        ranges.append(ByteRange(start, min(end, size - 1)))
    if not ranges:
        raise RangeError("range_not_satisfiable", f"no requested range lies within the {size} bytes")
    if len(ranges) == 1:
        return ranges[0]
    ordered = sorted(ranges, key=lambda r: r.start)
    for before, after in pairwise(ordered):
        if after.start <= before.end:
            raise RangeError("overlapping_ranges", "the requested byte ranges overlap")
    # Several disjoint ranges: RFC 9110 lets a server ignore Range; the whole file is sent.
    return None


def evaluate(
    method: str,
    headers: Mapping[str, str],
    *,
    etag: str,
    last_modified: datetime,
    size: int,
) -> Decision:
    """Preconditions in RFC 9110 section 13.2.2 order, then Range."""
    if_match = headers.get("if-match")
    if if_match is not None:
        if not _strong_match(if_match, etag):
            return Decision(412)
    else:
        since = _parse_date(headers.get("if-unmodified-since"))
        if since is not None and _seconds(last_modified) > _seconds(since):
            return Decision(412)
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if _weak_match(if_none_match, etag):
            return Decision(304) if method in ("GET", "HEAD") else Decision(412)
    else:
        since = _parse_date(headers.get("if-modified-since"))
        if since is not None and method in ("GET", "HEAD") and _seconds(last_modified) <= _seconds(since):
            return Decision(304)
    range_header = headers.get("range")
    if range_header is None or method not in ("GET", "HEAD"):
        return Decision(200)
    if_range = headers.get("if-range")
    if if_range is not None:
        if_range = if_range.strip()
        if if_range.startswith(('"', "W/")):
            if not _strong_match(if_range, etag):
                return Decision(200)
        else:
            date = _parse_date(if_range)
            if date is None or _seconds(date) != _seconds(last_modified):
                return Decision(200)
    try:
        byte_range = parse_range(range_header, size)
    except RangeError as exc:
        return Decision(416, error=exc)
    if byte_range is None:
        return Decision(200)
    return Decision(206, byte_range=byte_range)
