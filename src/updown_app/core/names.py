"""Naming rules of the store: packages, revisions, filenames, channels, and where a file lives (its object key
and its download path). Domain rules: they raise ``InvalidInput``, whoever asks (an upload, a publish, the
importer of an upstream's index)."""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol
from urllib.parse import quote

from updown_app.core.errors import InvalidInput

PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,127}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]{0,127}$")
CHANNEL_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
RESERVED_PACKAGES = frozenset({"v1", "healthz", "readyz", "metrics"})
MAX_CHANNELS = 16


class Named(Protocol):
    package: str
    revision: str
    filename: str


OBJECT_KEY_PREFIX = "sha256/"
_OBJECT_KEY_RE = re.compile(r"^sha256/([0-9a-f]{2})/(\1[0-9a-f]{62})$")


def object_key(sha256: str) -> str:
    """Content addressing: the storage key of the bytes whose SHA-256 is ``sha256``."""
    return f"{OBJECT_KEY_PREFIX}{sha256[:2]}/{sha256}"


def is_object_key(key: str) -> bool:
    """Whether ``key`` is a content object's key (``object_key``), not a part or anything else in the store."""
    return _OBJECT_KEY_RE.match(key) is not None


def check_package(name: str) -> str:
    if not PACKAGE_RE.match(name) or name in RESERVED_PACKAGES:
        raise InvalidInput("invalid_package", "package must match [a-z0-9][a-z0-9.+-]* and not be a reserved name")
    return name


def check_revision(revision: str) -> str:
    if not REVISION_RE.match(revision):
        raise InvalidInput("invalid_revision", "revision must match [A-Za-z0-9][A-Za-z0-9.+~_-]*")
    return revision


# Control (Cc), format (Cf: bidi controls, zero-width), surrogate, private-use, unassigned, line/paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def check_filename(name: str) -> str:
    if not name or len(name.encode()) > 255:
        raise InvalidInput("invalid_filename", "filename must be 1-255 bytes")
    if "/" in name or "\\" in name or name in (".", "..") or ".." in name:
        raise InvalidInput("invalid_filename", "filename must not contain path separators or '..'")
    if unicodedata.normalize("NFC", name) != name:
        # One spelling per name: NFD "ü" and NFC "ü" would otherwise be two files that look the same.
        raise InvalidInput("invalid_filename", "filename must be NFC-normalised Unicode")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in name):
        # Bidi overrides (U+202E) and zero-width characters make a name display as another one.
        raise InvalidInput(
            "invalid_filename", "filename must not contain control, format (bidi) or unassigned characters"
        )
    if name.startswith("."):
        raise InvalidInput("invalid_filename", "filename must not start with '.'")
    return name


def parse_channels(value: str) -> list[str]:
    """The ``channels`` field of a publish: names joined by ``,`` (empty: in no channel); see docs/signing.md."""
    if value == "":
        return []
    names = value.split(",")
    for name in names:
        if not CHANNEL_RE.match(name):
            raise InvalidInput("invalid_channel", "channel names must match [a-z][a-z0-9-]*, joined by ','")
    if len(set(names)) != len(names):
        raise InvalidInput("invalid_channel", "a channel is named twice")
    if len(names) > MAX_CHANNELS:
        raise InvalidInput("invalid_channel", f"a file may be in at most {MAX_CHANNELS} channels")
    return sorted(names)


def download_path(file: Named) -> str:
    """The URL path a file is downloaded from, percent-encoded as clients send it."""
    return "/" + "/".join(quote(part, safe="!$&'()*+,;=:@") for part in (file.package, file.revision, file.filename))
