"""The real ``apt-get`` (private lists, cache and dpkg root; the system's apt state is untouched) using the
``updown+https`` method, the one the project's .deb installs, to update from and install out of a private flat
repository on a real ``updown serve``: the token comes from an apt.conf.d file naming a 0600 token file."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.stack.apt_repo import AptClient, build_deb, index_files
from tests.support import apt_method
from tests.support.apt_method import PRIVATE, MethodApt, corrupt_object, publish_private
from tests.support.fake_sso import FakeSso, FakeStore
from tests.support.server import ServerProcess

sso, store, srv, method_deb = apt_method.sso, apt_method.store, apt_method.srv, apt_method.method_deb  # fixtures


@dataclass
class Repo:
    apt: MethodApt
    user: str
    package: str
    token: str
    deb_sha256: str
    payload: bytes

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.apt.run(*args)

    @property
    def token_file(self) -> Path:
        return self.apt.token_file

    def installed(self) -> bool:
        return (self.apt.apt.root / "usr/share/updown-private/payload.bin").exists()


@pytest.fixture
def repo(srv: ServerProcess, sso: FakeSso, store: FakeStore, method_deb: Path, tmp_path: Path) -> Repo:
    """A private package whose files are a flat apt repository (a .deb and its indexes), a user allowed to have
    it, and an apt-get configured with that user's token."""
    package = "apt" + secrets.token_hex(4)
    build = tmp_path / "build"
    build.mkdir()
    payload = secrets.token_bytes(20_000)  # its own: storage is content-addressed, and one test damages its .deb
    deb = build_deb(build, "updown-private", "1.0+b1~rc1", payload)  # + and ~: %-encoded by apt
    records = {f.name: publish_private(srv, f, package) for f in [deb, *index_files(build, [deb])]}
    user = "u" + secrets.token_hex(4)
    store.grants.add((user, package))
    token = sso.issue(secrets.token_urlsafe(24), user)
    source = f"deb [trusted=yes] updown+https://{PRIVATE}:{srv.port}/{package}/1/ ./"
    apt = MethodApt(AptClient(tmp_path / "apt", source, str(srv.cert)), method_deb, PRIVATE, token)
    return Repo(apt, user, package, token, records[deb.name]["sha256"], payload)


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_update_install_and_a_second_update_hitting_304s(repo: Repo) -> None:
    first = repo.run("update")
    assert first.returncode == 0, _output(first)
    assert "Get:" in first.stdout and "Err:" not in first.stdout, _output(first)
    install = repo.run("install", "-y", "--no-install-recommends", "updown-private")
    assert install.returncode == 0, _output(install)
    assert (repo.apt.apt.root / "usr/share/updown-private/payload.bin").read_bytes() == repo.payload
    second = repo.run("-o", "Debug::pkgAcquire::Worker=1", "update")
    assert second.returncode == 0, _output(second)
    assert "Hit:" in second.stdout and "Get:" not in second.stdout, _output(second)
    # apt's worker debug log shows the method's messages %-quoted.
    assert "URI%20Done" in second.stderr and "IMS-Hit:%20true" in second.stderr, _output(second)
    assert repo.token not in _output(first) + _output(install) + _output(second)


def test_without_a_token_apt_says_one_is_needed(repo: Repo) -> None:
    repo.token_file.unlink()
    repo.apt.conf.unlink()
    update = repo.run("update")
    out = _output(update)
    assert "Err:" in update.stdout, out
    assert "needs a token and none is configured" in out, out
    install = repo.run("install", "-y", "updown-private")
    assert install.returncode != 0 and not repo.installed(), _output(install)


def test_an_expired_token_says_it_expired(repo: Repo, sso: FakeSso) -> None:
    sso.issue(repo.token, repo.user, lifetime=-60)
    update = repo.run("update")
    out = _output(update)
    assert "has expired; get a new one" in out and str(repo.token_file) in out, out
    assert repo.token not in out


def test_revoked_access_fails_the_install(repo: Repo, store: FakeStore) -> None:
    assert repo.run("update").returncode == 0
    store.grants.discard((repo.user, repo.package))
    import time

    time.sleep(1.1)  # the server's cached "allowed" (allowed_ttl 1 s) runs out
    install = repo.run("install", "-y", "--no-install-recommends", "updown-private")
    out = _output(install)
    assert install.returncode != 0, out
    assert "403" in out and "access not granted or revoked" in out, out
    assert not repo.installed()


def test_a_damaged_deb_is_a_hash_sum_mismatch_and_nothing_is_installed(repo: Repo, srv: ServerProcess) -> None:
    assert repo.run("update").returncode == 0
    corrupt_object(srv, repo.deb_sha256)
    install = repo.run("install", "-y", "--no-install-recommends", "updown-private")
    out = _output(install)
    assert install.returncode != 0, out
    assert "Hash Sum mismatch" in out, out
    received = out.split("Hashes of received file:")[1].split("E: ")[0]
    assert "SHA256:" in received and repo.deb_sha256 not in received, out  # what arrived, not what was expected
    assert not repo.installed()
    assert not list((repo.apt.apt.home / "cache" / "archives").glob("*.deb"))
