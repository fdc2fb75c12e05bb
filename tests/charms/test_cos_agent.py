"""The cos-agent relation of both charms (updown_charms/cos_agent.py): what a COS agent on the unit's machine
reads, as the grafana-agent charm's library parses it: scrape jobs, alert rules narrowed to the application,
dashboards."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ops import testing

import charm as cache_charm
from tests.charms import app_charm
from tests.charms.conftest import CHARM_DIR
from tests.charms.test_cache_backend_charm import ready_state as backend_ready_state
from tests.charms.test_cache_charm import ready_state
from updown_charms import cos_agent

TOPOLOGY = cos_agent.Topology(model="m", model_uuid="0123456789ab-cdef", application="cache", charm="updown-cache")


def agent_relation() -> testing.Relation:
    # The agent is a subordinate (its end is container-scoped); on the principal the endpoint is a plain one.
    return testing.Relation("cos-agent", remote_app_name="grafana-agent")


def published(out: testing.State) -> dict[str, Any]:
    relation = next(r for r in out.relations if r.endpoint == "cos-agent")
    data: dict[str, Any] = json.loads(relation.local_unit_data[cos_agent.DATABAG_KEY])
    return data


def promtool_accepts(rules: dict[str, Any], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/install-deps.sh installs it)")
    (tmp_path / "published.rules").write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool, "check", "rules", "published.rules"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_frontend_unit_tells_the_agent_what_to_scrape_and_forward(cache_host, tls_pair, tmp_path: Path) -> None:
    ctx = testing.Context(cache_charm.CacheCharm, charm_root=CHARM_DIR)
    state = ready_state(tls_pair, agent_relation())
    data = published(ctx.run(ctx.on.config_changed(), state))
    jobs = {j["job_name"]: j for j in data["metrics_scrape_jobs"]}
    assert sorted(jobs) == ["updown-cache_haproxy", "updown-cache_haproxy-tls", "updown-cache_varnish"]
    assert jobs["updown-cache_haproxy-tls"]["metrics_path"] == "/metrics/tls"
    assert jobs["updown-cache_varnish"]["static_configs"] == [{"targets": ["localhost:9131"]}]
    assert data["log_slots"] == [] and data["log_alert_rules"] == {"groups": []}
    rules = data["metrics_alert_rules"]
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {"UpdownNoReadyAppUnit", "UpdownCertificateExpiring", "UpdownCacheHitRatioCollapse"} <= set(alerts)
    for group in rules["groups"]:
        assert group["name"].endswith("_rules")
    rule = alerts["UpdownNoReadyAppUnit"]
    assert rule["labels"]["juju_application"] == "updown-cache" and rule["labels"]["severity"] == "critical"
    assert 'haproxy_backend_active_servers{juju_model="' in rule["expr"]
    assert 'juju_application="updown-cache",proxy="app"}' in rule["expr"]
    promtool_accepts(rules, tmp_path)
    boards = [json.loads(cos_agent.decode(d)) for d in data["dashboards"]]
    assert [b["title"] for b in boards] == ["updown cache"]
    assert len(boards[0]["uid"]) == 40 and "charm: updown-cache" in boards[0]["tags"]
    assert "${prometheusds}" in json.dumps(boards[0])


def test_a_backend_unit_has_the_nginx_exporter_scraped(cache_host) -> None:
    ctx = testing.Context(cache_charm.CacheCharm, charm_root=CHARM_DIR)
    data = published(ctx.run(ctx.on.config_changed(), backend_ready_state(agent_relation())))
    assert data["metrics_scrape_jobs"] == [
        {
            "job_name": "updown-cache_nginx",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": ["localhost:9113"]}],
        }
    ]


def test_the_app_unit_has_its_metrics_scraped_on_its_port() -> None:
    ctx = app_charm.context()
    relation = agent_relation()
    out = ctx.run(ctx.on.relation_joined(relation), testing.State(config={"port": 8123}, relations=[relation]))
    data = published(out)
    assert data["metrics_scrape_jobs"] == [
        {
            "job_name": "updown-app_updown",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": ["localhost:8123"]}],
        }
    ]
    alerts = {r["alert"] for g in data["metrics_alert_rules"]["groups"] for r in g["rules"]}
    assert {"UpdownPurgePending", "UpdownStorageUnreachable", "UpdownRolloutPausedTooLong"} <= alerts
    assert [json.loads(cos_agent.decode(d))["title"] for d in data["dashboards"]] == ["updown app"]


def test_the_app_unit_sends_its_log_alert_rules_narrowed_to_the_application() -> None:
    """src/loki_alert_rules: the Loki ruler gets them as log_alert_rules, every stream selector narrowed to the
    application (without that, one application's rule would alert on every journal of the model)."""
    ctx = app_charm.context()
    relation = agent_relation()
    out = ctx.run(ctx.on.relation_joined(relation), testing.State(config={"port": 8123}, relations=[relation]))
    rules = {r["alert"]: r for g in published(out)["log_alert_rules"]["groups"] for r in g["rules"]}
    assert {"UpdownAppHttp5xxBurst", "UpdownTakedownPurgeFailed"} <= set(rules)
    model, uuid = out.model.name, out.model.uuid
    for rule in rules.values():
        assert (
            f'{{juju_model="{model}",juju_model_uuid="{uuid}",juju_application="updown-app",job="syslog"}}'
            in (rule["expr"])
        )
        assert rule["labels"]["juju_application"] == "updown-app" and rule["labels"]["severity"]
    assert all(r["alert"] not in rules for g in published(out)["metrics_alert_rules"]["groups"] for r in g["rules"])


@pytest.mark.parametrize(
    ("expr", "narrowed"),
    [
        ('{job="syslog"} |= `{"a": 1}`', '{M,job="syslog"} |= `{"a": 1}`'),
        (
            'sum(count_over_time({ job="x" } | json | level="{error}" [5m]))',
            'sum(count_over_time({M, job="x" } | json | level="{error}" [5m]))',
        ),
        ("count_over_time({}[1m])", "count_over_time({M}[1m])"),
    ],
)
def test_log_selectors_are_narrowed_to_the_application(expr: str, narrowed: str) -> None:
    assert cos_agent.inject_log_matchers(expr, "M") == narrowed


@pytest.mark.parametrize(
    ("expr", "narrowed"),
    [
        ("updown_build_info", "updown_build_info{M}"),
        ("rate(varnish_main_cache_hit[5m])", "rate(varnish_main_cache_hit{M}[5m])"),
        ('nginx_up{a="nginx_up"} == 0', 'nginx_up{M,a="nginx_up"} == 0'),
        ("sum by (juju_unit, reason) (x_total) > 1", "sum by (juju_unit, reason) (x_total) > 1"),
        ("haproxy_backend_up{ }", "haproxy_backend_up{M }"),
    ],
)
def test_selectors_are_narrowed_to_the_application(expr: str, narrowed: str) -> None:
    assert cos_agent.inject_matchers(expr, "M") == narrowed


def test_rule_groups_are_named_after_the_topology(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text(
        yaml.safe_dump({"groups": [{"name": "g-1", "rules": [{"alert": "A", "expr": "updown_x > 0"}]}]})
    )
    (tmp_path / "notes.txt").write_text("not a rule file")
    rules = cos_agent.alert_rules(tmp_path, TOPOLOGY)
    assert rules["groups"][0]["name"] == "m_01234567_cache_g_1_rules"
    assert rules["groups"][0]["rules"][0]["labels"]["juju_charm"] == "updown-cache"
    (tmp_path / "b.rules").write_text("- not: groups\n")
    with pytest.raises(ValueError, match=r"b\.rules: not a rules file"):
        cos_agent.alert_rules(tmp_path, TOPOLOGY)
