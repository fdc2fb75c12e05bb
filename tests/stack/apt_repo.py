"""A flat apt repository made of updown files: one `.deb` built with dpkg-deb, its `Packages`, `Packages.gz` and
`Release`, each uploaded and published as a file of one package revision, so apt's URLs are updown download URLs;
and apt-get run with private state, cache and sources (the system's apt state is untouched) installing into a
private dpkg root."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import subprocess
from pathlib import Path


def build_deb(directory: Path, name: str, version: str, payload: bytes) -> Path:
    root = directory / f"{name}-build"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "share" / name).mkdir(parents=True)
    (root / "usr" / "share" / name / "payload.bin").write_bytes(payload)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: updown tests <tests@example.com>\n"
        f"Description: a package served by updown\n"
    )
    deb = directory / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def index_files(directory: Path, debs: list[Path]) -> list[Path]:
    """Packages, Packages.gz and Release for a flat repository whose `Filename`s are next to the indexes."""
    stanzas = []
    for deb in debs:
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
        data = deb.read_bytes()
        stanzas.append(
            control.rstrip("\n") + f"\nFilename: {deb.name}\nSize: {len(data)}\n"
            f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    packages = "\n".join(stanzas).encode()
    files = {"Packages": packages, "Packages.gz": gzip.compress(packages, mtime=0)}
    release = [
        "Origin: updown-tests",
        "Label: updown-tests",
        "Suite: stable",
        "Codename: stable",
        "Date: " + email.utils.formatdate(usegmt=True),
        "Architectures: all amd64 arm64",
        "SHA256:",
        *(f" {hashlib.sha256(b).hexdigest()} {len(b):>8} {n}" for n, b in files.items()),
    ]
    files["Release"] = ("\n".join(release) + "\n").encode()
    out = []
    for name, data in files.items():
        (directory / name).write_bytes(data)
        out.append(directory / name)
    return out


class AptClient:
    """apt-get with private sources.list, lists, cache and dpkg database."""

    def __init__(self, home: Path, source: str, ca: str) -> None:
        self.home = home
        self.root = home / "root"
        for d in ("lists/partial", "cache/archives/partial", "sources.list.d", "log"):
            (home / d).mkdir(parents=True, exist_ok=True)
        for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "var/lib/dpkg/status").touch()
        (home / "sources.list").write_text(source + "\n")
        self.ca = ca

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        h = self.home
        argv = [
            "apt-get",
            "-o", f"Dir::Etc::sourcelist={h / 'sources.list'}",
            "-o", f"Dir::Etc::sourceparts={h / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={h / 'lists'}",
            "-o", f"Dir::Cache={h / 'cache'}",
            "-o", "Dir::Cache::pkgcache=",
            "-o", "Dir::Cache::srcpkgcache=",
            "-o", f"Dir::State::status={self.root / 'var/lib/dpkg/status'}",
            "-o", f"Dir::Log={h / 'log'}",
            "-o", f"DPkg::Options::=--root={self.root}",
            "-o", f"DPkg::Options::=--admindir={self.root / 'var/lib/dpkg'}",
            "-o", "DPkg::Options::=--force-script-chrootless",
            "-o", "DPkg::Options::=--force-not-root",
            "-o", "DPkg::Use-Pty=0",
            "-o", "APT::Sandbox::User=root",
            "-o", f"Acquire::https::CaInfo={self.ca}",
            "-o", "Acquire::Languages=none",
            "-o", "Debug::NoLocking=1",
            "-o", "Acquire::Retries=0",
            *args,
        ]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
