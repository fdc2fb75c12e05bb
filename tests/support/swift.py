"""The test Swift (scripts/services/swift.sh: tempauth, s3api, tempurl) as updown settings."""

from __future__ import annotations

import os

from tests.conftest import need_service

SWIFT_URL = os.environ.get("UPDOWN_TEST_SWIFT_URL")
SWIFT_USER = os.environ.get("UPDOWN_TEST_SWIFT_USER", "test:tester")
SWIFT_KEY = os.environ.get("UPDOWN_TEST_SWIFT_KEY", "testing")
# Keystone v3 and its Swift proxy (scripts/services/keystone.sh)
KEYSTONE_URL = os.environ.get("UPDOWN_TEST_KEYSTONE_URL")
KEYSTONE_USER = os.environ.get("UPDOWN_TEST_KEYSTONE_USER", "updown")
KEYSTONE_PASSWORD = os.environ.get("UPDOWN_TEST_KEYSTONE_PASSWORD", "updownpw")
KEYSTONE_PROJECT = os.environ.get("UPDOWN_TEST_KEYSTONE_PROJECT", "store")


def swift_env(container: str, **settings: str) -> dict[str, str]:
    """UPDOWN_* variables for storage on the test Swift in ``container``, plus ``UPDOWN_STORAGE__SWIFT__<NAME>``
    for each of ``settings`` (e.g. ``temp_url_key="..."``); skips (or fails, in the test command) without Swift."""
    url = need_service("Swift", SWIFT_URL)
    env = {
        "UPDOWN_STORAGE__BACKEND": "swift",
        "UPDOWN_STORAGE__SWIFT__AUTH": "tempauth",
        "UPDOWN_STORAGE__SWIFT__AUTH_URL": f"{url}/auth/v1.0",
        "UPDOWN_STORAGE__SWIFT__USERNAME": SWIFT_USER,
        "UPDOWN_STORAGE__SWIFT__PASSWORD": SWIFT_KEY,
        "UPDOWN_STORAGE__SWIFT__CONTAINER": container,
    }
    env.update({f"UPDOWN_STORAGE__SWIFT__{name.upper()}": value for name, value in settings.items()})
    return env
