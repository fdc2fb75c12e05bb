"""The charms' apt-get (updown_charms.apt): bounded waits, and a command past its deadline fails the hook saying
what apt was doing."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

import pytest

from updown_charms import apt


def test_commands_update_then_install_only_the_named_packages() -> None:
    update, install = apt.commands(["haproxy", "varnish"])
    assert update[0] == "apt-get" and update[-2:] == ["update", "-q"]
    assert install[-5:] == ["-y", "-q", "--no-install-recommends", "haproxy", "varnish"]
    for argv in (update, install):  # a stalled proxy or mirror: 30 s without data, then a retry
        assert {"Acquire::http::Timeout=30", "Acquire::Retries=3", "DPkg::Lock::Timeout=120"} <= set(argv)


def test_a_command_past_its_deadline_fails_with_its_last_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real process that hangs after some output (apt stuck in a package's maintainer script)."""
    monkeypatch.setattr(apt, "TIMEOUT", 1.0)
    seen: list[Mapping[str, str]] = []

    def run(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> None:
        seen.append(env)
        script = "echo 'Unpacking varnish (7.1.1-1.1) ...'; echo 'Setting up varnish ...'; exec sleep 30"
        subprocess.run(["sh", "-c", script], check=True, capture_output=True, text=True, timeout=timeout)

    with pytest.raises(apt.AptTimeout) as err:
        apt.install(["varnish"], run)
    assert "still running after 1 s" in str(err.value)
    assert "Setting up varnish ..." in str(err.value)  # where it hung
    assert seen == [{"DEBIAN_FRONTEND": "noninteractive"}]  # debconf never waits for an answer
