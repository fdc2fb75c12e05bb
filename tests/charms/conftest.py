"""The cache charm's tests import its modules as the charm does (charms/cache/src on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

CHARM_DIR = Path(__file__).resolve().parents[2] / "charms" / "cache"
sys.path.insert(0, str(CHARM_DIR / "src"))

from tests.charms.tls import make_tls  # noqa: E402


@pytest.fixture(scope="session")
def tls_pair() -> tuple[str, str]:
    """(certificate chain PEM, key PEM) for updown.test, signed by a throwaway CA."""
    return make_tls("updown.test", ["updown.test", "private.updown.test"])
