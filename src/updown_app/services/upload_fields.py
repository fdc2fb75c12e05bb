"""The fields an upload declares (signed by the store), checked against the naming rules and limits."""

from __future__ import annotations

import re
from dataclasses import dataclass

from updown_app.core.digests import Declared
from updown_app.core.errors import InvalidInput, TooLarge
from updown_app.core.names import check_filename, check_package, check_revision
from updown_app.metadata.models import Visibility

HEX_RE = {32: re.compile(r"^[0-9a-fA-F]{32}$"), 64: re.compile(r"^[0-9a-fA-F]{64}$")}
UPLOAD_FIELDS = frozenset(
    {"package", "revision", "filename", "visibility", "size", "md5", "sha256", "timestamp", "nonce"}
)


@dataclass(frozen=True)
class UploadFields:
    package: str
    revision: str
    filename: str
    visibility: Visibility
    declared: Declared


def parse_fields(fields: dict[str, str], max_size: int) -> UploadFields:
    unknown = sorted(set(fields) - UPLOAD_FIELDS)
    if unknown:
        raise InvalidInput("unknown_field", f"unknown field(s): {', '.join(unknown)}")
    missing = sorted(UPLOAD_FIELDS - set(fields))
    if missing:
        raise InvalidInput("missing_field", f"missing field(s): {', '.join(missing)}")
    package, revision = check_package(fields["package"]), check_revision(fields["revision"])
    try:
        visibility = Visibility(fields["visibility"])
    except ValueError:
        raise InvalidInput("invalid_visibility", "visibility must be 'public' or 'private'") from None
    if not fields["size"].isdigit():
        raise InvalidInput("invalid_size", "size must be a non-negative integer")
    size = int(fields["size"])
    if size > max_size:
        raise TooLarge("too_large", f"files may be at most {max_size} bytes")
    if not HEX_RE[32].match(fields["md5"]):
        raise InvalidInput("invalid_md5", "md5 must be 32 hex digits")
    if not HEX_RE[64].match(fields["sha256"]):
        raise InvalidInput("invalid_sha256", "sha256 must be 64 hex digits")
    return UploadFields(
        package,
        revision,
        check_filename(fields["filename"]),
        visibility,
        Declared(size=size, md5=fields["md5"].lower(), sha256=fields["sha256"].lower()),
    )
