"""Debian packages installed from a hook, with every wait bounded.

Juju runs one hook at a time per unit, so a hook that waits forever holds that unit's whole queue and shows
nothing but "executing". apt-get's network waits are bounded here (30 s without data, 3 retries), the dpkg lock
wait too (another apt on the machine, such as unattended-upgrades), debconf never asks, and the charms give each
command a deadline: a stuck mirror or proxy fails the hook with apt's own message, and Juju retries it.

The argument lists are built here and run by each charm's own `run` (their ops.testing tests record what they
would run); charmlibs-apt's package functions run apt-get themselves, without a deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

OPTIONS = (
    "-o",
    "Acquire::http::Timeout=30",
    "-o",
    "Acquire::https::Timeout=30",
    "-o",
    "Acquire::Retries=3",
    "-o",
    "DPkg::Lock::Timeout=120",
)
ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# s per command: a cold mirror on a slow link installs any of our package sets well within this
TIMEOUT = 240.0


def commands(packages: Sequence[str]) -> list[list[str]]:
    """`apt-get update`, then the install of `packages` (without recommends: only what the charm names)."""
    return [
        ["apt-get", *OPTIONS, "update", "-q"],
        ["apt-get", *OPTIONS, "install", "-y", "-q", "--no-install-recommends", *packages],
    ]
