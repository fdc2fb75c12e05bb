"""What the COS tests share: where each charm keeps what it hands to COS through cos-agent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHARMS = {"updown-app": ROOT / "charms" / "updown-app", "updown-cache": ROOT / "charms" / "cache"}


def rules_dirs() -> dict[str, Path]:
    return {name: path / "src" / "prometheus_alert_rules" for name, path in CHARMS.items()}


def dashboards_dirs() -> dict[str, Path]:
    return {name: path / "src" / "grafana_dashboards" for name, path in CHARMS.items()}


def need_tool(name: str) -> str:
    """A binary from the Debian packages of scripts/apt-packages.txt: skipped where absent, unless the test command
    (UPDOWN_REQUIRE_SERVICES=1) runs, where a missing one is a failure."""
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("UPDOWN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{name} is required (scripts/install-deps.sh installs it) but not on PATH")
    pytest.skip(f"{name} not installed (scripts/install-deps.sh installs it)")
