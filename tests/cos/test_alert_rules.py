"""The alert rules both charms hand to COS (src/prometheus_alert_rules/*.rules): valid for Prometheus
(`promtool check rules`) and each one proven by its unit tests next to it (`promtool test rules`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cos.conftest import need_tool, rules_dirs

RULE_FILES = sorted(p for d in rules_dirs().values() for p in d.glob("*.rules"))
TEST_FILES = sorted(p for d in rules_dirs().values() for p in d.glob("*_test.yaml"))

# What the issue asks to be alerted on, by the alert that covers it.
REQUIRED = {
    "UpdownAppHigh5xxRatio",  # 5xx ratio (the app's own answers)
    "UpdownCacheHigh5xxRatio",  # 5xx ratio (what the clients get from the frontend units)
    "UpdownNoReadyAppUnit",
    "UpdownPurgePending",  # a takedown not yet effective
    "UpdownStorageUnreachable",
    "UpdownCacheHitRatioCollapse",
    "UpdownCertificateExpiringSoon",
    "UpdownCertificateExpiring",
    "UpdownUploadFailuresSpiking",
    "UpdownRolloutPausedTooLong",
}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alerts(path: Path) -> list[str]:
    return [r["alert"] for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_both_charms_have_rules_and_unit_tests() -> None:
    for name, directory in rules_dirs().items():
        assert list(directory.glob("*.rules")), f"{name} has no alert rules"
        for rules in directory.glob("*.rules"):
            assert (directory / f"{rules.stem}_test.yaml").is_file(), f"{rules} has no promtool unit tests"


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(rules: Path) -> None:
    done = promtool("check", "rules", rules.name, cwd=rules.parent)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("tests", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(tests: Path) -> None:
    done = promtool("test", "rules", tests.name, cwd=tests.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test_and_the_issue_is_covered() -> None:
    defined = {a for rules in RULE_FILES for a in alerts(rules)}
    tested = {
        case["alertname"]
        for tests in TEST_FILES
        for group in yaml.safe_load(tests.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")  # a case that expects it to fire, not only silence
    }
    assert REQUIRED <= defined, f"missing alerts: {sorted(REQUIRED - defined)}"
    assert defined <= tested, f"alerts never shown firing by a unit test: {sorted(defined - tested)}"


def test_the_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests have teeth: the app's 5xx alert with a threshold of 50 % instead of 5 % fails them."""
    source = rules_dirs()["updown-app"]
    for name in ("updown_app.rules", "updown_app_test.yaml"):
        shutil.copy(source / name, tmp_path / name)
    rules = tmp_path / "updown_app.rules"
    original = rules.read_text()
    assert original.count("> 0.05") == 1
    rules.write_text(original.replace("> 0.05", "> 0.5"))
    assert promtool("check", "rules", rules.name, cwd=tmp_path).returncode == 0  # still valid, only wrong
    done = promtool("test", "rules", "updown_app_test.yaml", cwd=tmp_path)
    assert done.returncode != 0
    assert "UpdownAppHigh5xxRatio" in done.stdout + done.stderr
