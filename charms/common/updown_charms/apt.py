"""Debian packages installed from a hook, with every wait bounded.

Juju runs one hook at a time per unit, so a hook that waits forever holds that unit's whole queue and shows
nothing but "executing". apt-get's network waits are bounded here (30 s without data, 3 retries), the dpkg lock
wait too (another apt on the machine, such as unattended-upgrades), debconf never asks, and the charms give each
command a deadline: a stuck mirror or proxy fails the hook with apt's own message, and Juju retries it.

The argument lists are built here and run by each charm's own `run` (their ops.testing tests record what they
would run); charmlibs-apt's package functions run apt-get themselves, without a deadline.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

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


def install(packages: Sequence[str], run: Callable[..., object]) -> None:
    """Run `commands(packages)` with the charm's `run(argv, env=, timeout=)`. A command past its deadline fails
    the hook with apt's last output (what it was waiting for: a download, a package's maintainer script)."""
    for argv in commands(packages):
        try:
            run(argv, env=ENV, timeout=TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise AptTimeout(argv, exc) from None


class AptTimeout(RuntimeError):
    def __init__(self, argv: Sequence[str], exc: subprocess.TimeoutExpired) -> None:
        def text(out: bytes | str | None) -> str:
            return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")

        tail = "\n".join((text(exc.stdout) + text(exc.stderr)).splitlines()[-15:])
        command = " ".join([argv[0], *argv[-6:]])
        super().__init__(f"{command} still running after {TIMEOUT:.0f} s; its last output:\n{tail}")
