"""The cache charm's tests import its modules as the charm does (charms/cache/src on sys.path, and the library both
charms carry, charms/common, as their lib/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from ops import testing

CHARM_DIR = Path(__file__).resolve().parents[2] / "charms" / "cache"
sys.path[:0] = [str(CHARM_DIR / "src"), str(CHARM_DIR.parent / "common")]

from scripts.throwaway_ca import make_tls  # noqa: E402

import charm as cache_charm  # noqa: E402
import workload as cache_workload  # noqa: E402


@pytest.fixture(scope="session")
def tls_pair() -> tuple[str, str]:
    """(certificate chain PEM, key PEM) for updown.test, signed by a throwaway CA."""
    return make_tls("updown.test", ["updown.test", "private.updown.test"])


@pytest.fixture
def cache_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The cache charm's files go under tmp_path; the commands it runs are recorded, not run."""
    commands: list[list[str]] = []
    monkeypatch.setattr(cache_charm, "LAYOUT", cache_workload.Layout.under(tmp_path))
    monkeypatch.setattr(cache_workload, "run", lambda argv, **_: commands.append(list(argv)))
    return commands


@pytest.fixture
def cache_ctx() -> testing.Context[cache_charm.CacheCharm]:
    return testing.Context(cache_charm.CacheCharm)


@pytest.fixture(scope="session")
def packed_charms() -> Path:
    """The directory scripts/pack-charms.sh packed both charms into (scripts/test.sh packs them on every run)."""
    from tests.conftest import need_service

    return Path(need_service("the packed charms (UPDOWN_TEST_CHARMS_DIR)", os.environ.get("UPDOWN_TEST_CHARMS_DIR")))
