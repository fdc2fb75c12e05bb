"""The .deb of the apt method (scripts/build-apt-method-deb.sh): its fields and contents, a reproducible build, and
the installed executable, installed by dpkg into a private root, downloading a private file from a real
``updown serve`` as apt would run it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support import apt_method
from tests.support.apt_method import BUILD_DEB, METHOD_SOURCE, PRIVATE, method, publish_private, write_token
from tests.support.fake_sso import FakeSso, FakeStore
from tests.support.server import ServerProcess

sso, store, srv, method_deb = apt_method.sso, apt_method.store, apt_method.srv, apt_method.method_deb  # fixtures


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def test_fields_and_contents(method_deb: Path) -> None:
    assert method_deb.name == "updown-apt-transport_0.1.0_all.deb"
    assert _field(method_deb, "Package") == "updown-apt-transport"
    assert _field(method_deb, "Architecture") == "all"
    assert _field(method_deb, "Depends") == "python3 (>= 3.10), apt"  # nothing but the standard library
    listing = subprocess.run(["dpkg-deb", "-c", str(method_deb)], capture_output=True, text=True, check=True).stdout
    entries = {line.split()[-1]: line.split()[:2] for line in listing.splitlines()}
    assert entries["./usr/lib/apt/methods/updown+https"] == ["-rwxr-xr-x", "root/root"]
    assert entries["./"] == ["drwxr-xr-x", "root/root"]
    assert set(entries) == {
        "./", "./usr/", "./usr/lib/", "./usr/lib/apt/", "./usr/lib/apt/methods/",
        "./usr/lib/apt/methods/updown+https", "./usr/share/", "./usr/share/doc/",
        "./usr/share/doc/updown-apt-transport/", "./usr/share/doc/updown-apt-transport/README",
        "./usr/share/doc/updown-apt-transport/examples/",
        "./usr/share/doc/updown-apt-transport/examples/50updown-token.conf",
    }  # fmt: skip


def test_the_build_is_reproducible(method_deb: Path, tmp_path: Path) -> None:
    again = subprocess.run([str(BUILD_DEB), str(tmp_path)], capture_output=True, text=True, check=True).stdout.strip()
    assert Path(again).read_bytes() == method_deb.read_bytes()


def test_the_installed_method_downloads_a_private_file(
    method_deb: Path, srv: ServerProcess, sso: FakeSso, store: FakeStore, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/updates").mkdir()
    (root / "var/lib/dpkg/status").touch()
    install = subprocess.run(
        ["dpkg", f"--root={root}", "--force-not-root", "--force-script-chrootless", "--force-depends",
         "--log=/dev/null", "-i", str(method_deb)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    installed = root / "usr/lib/apt/methods/updown+https"
    assert installed.read_bytes() == METHOD_SOURCE.read_bytes()
    assert os.access(installed, os.X_OK)

    data = os.urandom(50_000)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tool.bin").write_bytes(data)
    publish_private(srv, tmp_path / "src" / "tool.bin", "debtest")
    token = sso.issue("debtest-token-" + os.urandom(8).hex(), "debtester")
    store.grants.add(("debtester", "debtest"))
    token_file = write_token(tmp_path / "token", token)
    uri = f"updown+https://{PRIVATE}:{srv.port}/debtest/1/tool.bin"
    with method([str(installed)]) as m:  # executed directly, as apt does: the shebang picks /usr/bin/python3
        assert m.next().code == 100
        m.configure({"Acquire::updown+https::Token-File": str(token_file), "Acquire::https::CaInfo": str(srv.cert)})
        m.acquire(uri, tmp_path / "tool.bin")
        done = m.finish(uri)
    assert done.code == 201, done
    assert (tmp_path / "tool.bin").read_bytes() == data


def test_the_method_ignores_the_callers_python_environment(method_deb: Path, tmp_path: Path) -> None:
    # A module named like a standard one, first on PYTHONPATH: a method that apt runs as root must not import it.
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "hashlib.py").write_text("raise SystemExit('imported the caller\\'s hashlib')\n")
    subprocess.run(["dpkg-deb", "-x", str(method_deb), str(tmp_path / "x")], check=True)
    installed = tmp_path / "x/usr/lib/apt/methods/updown+https"
    proc = subprocess.run([str(installed)], input=b"", capture_output=True, env={**os.environ, "PYTHONPATH": str(evil)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"100 Capabilities\n")


def test_the_entry_point_is_the_same_method() -> None:
    pyproject = tomllib.loads((METHOD_SOURCE.parents[2] / "pyproject.toml").read_text())
    module, _, function = pyproject["project"]["scripts"]["updown-apt-method"].partition(":")
    # What the console script pip writes does: import the function and exit with what it returns.
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    proc = subprocess.run([sys.executable, "-c", code], input=b"", capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"100 Capabilities\n")
