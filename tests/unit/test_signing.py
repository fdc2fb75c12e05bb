"""The signature format: the documented worked example, and what the canonical form must distinguish."""

from __future__ import annotations

import re
from pathlib import Path

from updown_app.core import signing

DOC = Path(__file__).resolve().parents[2] / "docs" / "signing.md"


def _worked_example() -> tuple[dict[str, str], str, str, str]:
    text = DOC.read_text().split("## Worked example", 1)[1].split("## Endpoints", 1)[0]
    secret = re.search(r"Secret `([^`]+)`", text)[1]  # type: ignore[index]
    fields = dict(re.findall(r"^\| (\w+) \| `([^`]*)` \|$", text, re.M))
    blocks = re.findall(r"```\n(.*?)\n```", text, re.S)
    return fields, secret, blocks[0], blocks[1]


def test_documented_example_string_and_signature() -> None:
    fields, secret, documented_string, documented_header = _worked_example()
    assert len(fields) == 9
    assert signing.string_to_sign("POST", "/v1/files", fields) == documented_string
    header = signing.authorization_header("store-1", secret.encode(), "POST", "/v1/files", fields)
    assert f"Authorization: {header}" == documented_header


def test_every_part_of_the_request_is_covered() -> None:
    fields = {"package": "a", "timestamp": "1", "nonce": "n" * 16}
    base = signing.signature(b"k", "POST", "/v1/files", fields)
    assert signing.signature(b"k", "PUT", "/v1/files", fields) != base
    assert signing.signature(b"k", "POST", "/v1/files/x", fields) != base
    assert signing.signature(b"k", "POST", "/v1/files", {**fields, "package": "b"}) != base
    assert signing.signature(b"k", "POST", "/v1/files", {**fields, "extra": ""}) != base
    assert signing.signature(b"other", "POST", "/v1/files", fields) != base


def test_canonical_form_is_unambiguous() -> None:
    # A value containing the separators must not collide with two separate fields.
    assert signing.canonical_fields({"a": "1&b=2"}) != signing.canonical_fields({"a": "1", "b": "2"})
    assert signing.canonical_fields({"n": "é /+"}) == "n=%C3%A9%20%2F%2B"


def test_parse_authorization() -> None:
    creds = signing.parse_authorization(f"{signing.SCHEME} KeyId=k1, Signature={'a' * 64}")
    assert creds == signing.Credentials("k1", "a" * 64)
    assert signing.parse_authorization("Bearer abc") is None
    assert signing.parse_authorization(f"{signing.SCHEME} KeyId=k1, Signature=XYZ") is None
    assert signing.parse_authorization(None) is None
