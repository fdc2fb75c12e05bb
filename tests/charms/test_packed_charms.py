"""The .charm files as an operator deploys them (packed by scripts/pack-charms.sh): what Juju runs is executable,
nothing from the build or the repository leaks in, and updown-app's release installs from the packed wheelhouse
and runs with no trace of the hook's Python paths."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.charms.app_charm import workload

CHARMS = ("updown-app", "updown-cache")


def charm_file(packed: Path, name: str) -> Path:
    path = packed / f"{name}_amd64.charm"
    assert path.is_file(), f"{path} is missing: scripts/pack-charms.sh packs it"
    return path


def unpack(charm: Path, where: Path) -> Path:
    """Extract as Juju does, keeping the files' modes (zipfile alone drops them)."""
    with zipfile.ZipFile(charm) as archive:
        for info in archive.infolist():
            target = Path(archive.extract(info, where))
            mode = info.external_attr >> 16
            if mode and not info.is_dir():
                target.chmod(stat.S_IMODE(mode))
    return where


@pytest.mark.parametrize("name", CHARMS)
def test_what_juju_runs_is_executable(packed_charms: Path, name: str) -> None:
    """Juju execs ./dispatch, which execs ./src/charm.py: without the x bit every hook fails "Permission denied"."""
    with zipfile.ZipFile(charm_file(packed_charms, name)) as archive:
        for entry in ("dispatch", "src/charm.py"):
            mode = archive.getinfo(entry).external_attr >> 16
            assert mode & 0o111 == 0o111, f"{entry} in {name} has mode {oct(mode)}"
        dispatch = archive.read("dispatch").decode()
    assert dispatch.rstrip().splitlines()[-1].endswith("./src/charm.py")


@pytest.mark.parametrize("name", CHARMS)
def test_what_the_cos_agent_forwards_is_packed(packed_charms: Path, name: str) -> None:
    """cos-agent reads the rules and dashboards from the charm's directory on the unit."""
    with zipfile.ZipFile(charm_file(packed_charms, name)) as archive:
        names = archive.namelist()
    assert any(n.startswith("src/prometheus_alert_rules/") and n.endswith(".rules") for n in names)
    assert any(n.startswith("src/grafana_dashboards/") and n.endswith(".json") for n in names)
    assert "lib/updown_charms/cos_agent.py" in names
    if name == "updown-app":  # its Loki rules (log_alert_rules), read from the same src/
        assert any(n.startswith("src/loki_alert_rules/") and n.endswith(".rules") for n in names)


@pytest.mark.parametrize("name", CHARMS)
def test_no_build_leftovers_or_repository_files(packed_charms: Path, name: str) -> None:
    with zipfile.ZipFile(charm_file(packed_charms, name)) as archive:
        tops = {n.split("/", 1)[0] for n in archive.namelist()}
    allowed = {"dispatch", "manifest.yaml", "metadata.yaml", "config.yaml", "actions.yaml", "src", "lib", "venv"}
    if name == "updown-app":
        allowed.add("wheelhouse")
    assert tops <= allowed, tops - allowed
    assert {"src", "venv", "dispatch"} <= tops


@pytest.mark.parametrize("name", CHARMS)
def test_the_charm_imports_from_what_it_carries(packed_charms: Path, name: str, tmp_path: Path) -> None:
    """As dispatch runs it (PYTHONPATH=lib:src, the charm's venv): every module of src/ imports, the library both
    charms share (updown_charms, copied into lib/ by pack.sh) included, and nothing comes from this repository."""
    charm = unpack(charm_file(packed_charms, name), tmp_path / name)
    site = next((charm / "venv" / "lib").glob("python3*/site-packages"))
    modules = sorted(p.stem for p in (charm / "src").glob("*.py"))
    assert "charm" in modules
    probe = (
        "import importlib, sys, updown_charms\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(updown_charms.__file__)"
    )
    env = {"PATH": workload.CLEAN_PATH, "LANG": "C.UTF-8"}  # -I: no PYTHONPATH, the path is set in the probe
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {['lib', 'src', str(site)]!r}\n" + probe],
        capture_output=True, text=True, env=env, cwd=charm,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == (charm / "lib" / "updown_charms" / "__init__.py").resolve()


def test_release_installs_from_the_packed_wheelhouse_without_the_hooks_paths(
    packed_charms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in a hook: the charm's own venv and lib on PYTHONPATH (its pydantic, cryptography, pyyaml...). pip must
    not count those as installed, or the release venv lacks them and the service dies under systemd."""
    charm = unpack(charm_file(packed_charms, "updown-app"), tmp_path / "charm")
    charm_site = next((charm / "venv" / "lib").glob("python3*/site-packages"))
    assert (charm_site / "pydantic").is_dir()  # what would leak
    monkeypatch.setenv("PYTHONPATH", f"{charm / 'lib'}:{charm / 'src'}:{charm_site}")
    monkeypatch.setenv("VIRTUAL_ENV", str(charm / "venv"))
    wheelhouse = charm / "wheelhouse"
    version = workload.wheelhouse_release(wheelhouse)
    assert version is not None
    layout = workload.Layout.under(tmp_path / "root")
    target = workload.install_release(wheelhouse, version, layout)
    workload.activate(version, layout)

    # what systemd gives the service: no PYTHONPATH, no venv, the system PATH
    bare = {"PATH": workload.CLEAN_PATH, "LANG": "C.UTF-8"}
    probe = "import updown_app.settings, pydantic, cryptography, asyncpg, uvicorn, sqlalchemy; print(pydantic.__file__)"
    python = layout.updown().with_name("python")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=bare)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve().is_relative_to(target.resolve())
    assert not any(str(charm) in line for line in out.stdout.splitlines())
    help_text = subprocess.run([str(layout.updown()), "--help"], capture_output=True, text=True, env=bare)
    assert help_text.returncode == 0 and "serve" in help_text.stdout, help_text.stderr

    # installing again does nothing; an interrupted install is started over; releases live side by side
    calls: list[list[str]] = []
    real_run = workload.run

    def fake_run(argv: list[object], **_: object) -> str:
        calls.append([str(a) for a in argv])
        if calls[-1][1:3] == ["-m", "venv"]:
            Path(calls[-1][-1]).mkdir(parents=True)
        return ""

    workload.run = fake_run  # type: ignore[assignment]
    try:
        workload.install_release(wheelhouse, version, layout)  # installed: nothing runs
        assert calls == []
        # an interrupted install (no marker) is started over from an empty directory
        (target / ".installed").unlink()
        (target / "junk").write_text("left by a killed install")
        assert workload.installed_releases(layout) == []
        workload.install_release(wheelhouse, version, layout)
    finally:
        workload.run = real_run
    assert not (target / "junk").exists() and (target / ".installed").exists()
    assert calls[0][1:3] == ["-m", "venv"] and calls[0][-1] == str(target)
    pip = calls[1]
    assert pip[0] == str(target / "bin" / "python") and pip[pip.index("--find-links") + 1] == str(wheelhouse)
    assert "--no-index" in pip and pip[-1] == f"updown-app=={version}"

    # a second release side by side; `current` flips atomically (rename over the link), pruning keeps what's asked
    other = layout.releases / "0.0.9"
    shutil.copytree(target, other, symlinks=True)
    workload.activate("0.0.9", layout)
    assert workload.current_release(layout) == "0.0.9" and layout.current.is_symlink()
    workload.activate(version, layout)
    assert workload.prune_releases(layout, keep={version}) == ["0.0.9"]
    assert workload.installed_releases(layout) == [version]
    with pytest.raises(FileNotFoundError):
        workload.activate("0.0.9", layout)


def test_commands_never_see_the_hooks_python_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "lib:venv")
    monkeypatch.setenv("PYTHONHOME", "/charm/venv")
    monkeypatch.setenv("VIRTUAL_ENV", "/charm/venv")
    monkeypatch.setenv("PATH", f"/charm/venv/bin:{os.environ['PATH']}")
    out = workload.run(["sh", "-c", 'echo "${PYTHONPATH-none} ${PYTHONHOME-none} ${VIRTUAL_ENV-none} $PATH"'])
    assert out.split() == ["none", "none", "none", workload.CLEAN_PATH]
    out = workload.run(["sh", "-c", 'echo "$UPDOWN_KEY_ID"'], env={"UPDOWN_KEY_ID": "k"})
    assert out.strip() == "k"  # what a command is given explicitly still reaches it
