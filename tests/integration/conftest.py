"""Juju integration tests: they need the `juju` client, a bootstrapped controller (LXD or OpenStack) and the two
charms packed. Without a controller every test here is skipped; with one, a missing charm is an error."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def controller_available() -> str | None:
    """Why the tests cannot run here, or None when a controller answers."""
    if shutil.which("juju") is None:
        return "no juju client (snap install juju) on this machine"
    try:
        out = subprocess.run(["juju", "show-controller"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "juju show-controller did not answer"
    if out.returncode != 0:
        return "no Juju controller (juju bootstrap localhost)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = controller_available() if any("tests/integration" in str(i.path) for i in items) else None
    if reason is None:
        return
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.skip(reason=reason))


def charm_path(env: str, default: Path) -> Path:
    path = Path(os.environ.get(env, default))
    if not path.is_file():
        pytest.fail(f"{path} is missing: pack it (see charms/updown-app/README.md) or set {env}")
    return path


@pytest.fixture(scope="module")
def juju() -> Iterator[object]:
    import jubilant

    keep = os.environ.get("UPDOWN_IT_KEEP_MODEL") == "1"
    with jubilant.temp_model(keep=keep) as juju:
        juju.wait_timeout = 45 * 60
        yield juju
        if os.environ.get("UPDOWN_IT_DEBUG_LOG") == "1":
            print(juju.debug_log(limit=1000))
