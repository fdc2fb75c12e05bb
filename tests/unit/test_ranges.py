"""Range and conditional request decisions (RFC 9110), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from updown_app.http.wire.ranges import ByteRange, RangeError, evaluate, http_date, parse_range

ETAG = '"abc"'
MODIFIED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def decide(method: str = "GET", size: int = 1000, **headers: str):  # type: ignore[no-untyped-def]
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    return evaluate(method, hdrs, etag=ETAG, last_modified=MODIFIED, size=size)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=0-499", ByteRange(0, 499)),
        ("bytes=500-", ByteRange(500, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),
        ("bytes=900-5000", ByteRange(900, 999)),
        ("bytes= 10 - 20", ByteRange(10, 20)),
        ("BYTES=1-2", ByteRange(1, 2)),
    ],
)
def test_single_ranges(header: str, expected: ByteRange) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("bytes=1000-", "range_not_satisfiable"),
        ("bytes=5000-6000", "range_not_satisfiable"),
        ("bytes=-0", "range_not_satisfiable"),
        ("bytes=abc", "invalid_range"),
        ("bytes=5-1", "invalid_range"),
        ("bytes=-", "invalid_range"),
        ("bytes=1-2-3", "invalid_range"),
        ("0-100", "invalid_range"),
        ("bytes=0-10,5-20", "overlapping_ranges"),
        ("bytes=-10,990-995", "overlapping_ranges"),
    ],
)
def test_bad_ranges(header: str, code: str) -> None:
    with pytest.raises(RangeError) as err:
        parse_range(header, 1000)
    assert err.value.code == code


def test_empty_file_has_no_satisfiable_range() -> None:
    with pytest.raises(RangeError):
        parse_range("bytes=0-", 0)


def test_other_units_and_disjoint_multi_ranges_get_the_whole_file() -> None:
    assert parse_range("items=0-5", 1000) is None
    assert parse_range("bytes=0-10,20-30", 1000) is None


def test_evaluate_range_and_416() -> None:
    assert decide(range="bytes=0-9").byte_range == ByteRange(0, 9)
    assert decide(range="bytes=0-9").status == 206
    assert decide(range="bytes=2000-").status == 416
    assert decide("POST", range="bytes=0-9").status == 200


def test_if_none_match_and_if_modified_since() -> None:
    assert decide(if_none_match=ETAG).status == 304
    assert decide(if_none_match=f'"x", W/{ETAG}').status == 304
    assert decide(if_none_match="*").status == 304
    assert decide(if_none_match='"other"').status == 200
    assert decide(if_modified_since=http_date(MODIFIED)).status == 304
    assert decide(if_modified_since=http_date(MODIFIED - timedelta(seconds=1))).status == 200
    # If-None-Match wins over If-Modified-Since.
    assert decide(if_none_match='"other"', if_modified_since=http_date(MODIFIED)).status == 200
    assert decide(if_modified_since="garbage").status == 200


def test_if_match_and_if_unmodified_since() -> None:
    assert decide(if_match='"other"').status == 412
    assert decide(if_match=ETAG).status == 200
    assert decide(if_unmodified_since=http_date(MODIFIED - timedelta(days=1))).status == 412


def test_if_range() -> None:
    assert decide(range="bytes=0-9", if_range=ETAG).status == 206
    assert decide(range="bytes=0-9", if_range='"stale"').status == 200
    assert decide(range="bytes=0-9", if_range=f"W/{ETAG}").status == 200  # weak tags never match
    assert decide(range="bytes=0-9", if_range=http_date(MODIFIED)).status == 206
    assert decide(range="bytes=0-9", if_range=http_date(MODIFIED + timedelta(hours=1))).status == 200
