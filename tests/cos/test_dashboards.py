"""The Grafana dashboards both charms hand to COS (src/grafana_dashboards/*.json): the dashboard JSON model the
COS Grafana charm loads, its datasources through the `${prometheusds}` / `${lokids}` template variables it
binds, every PromQL query valid for Prometheus, and the issue's panels there."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cos.conftest import need_tool
from tests.cos.queries import dashboard_queries, dashboards, metric_names, panels

PANEL_TYPES = {"row", "timeseries", "stat", "table", "logs", "gauge", "bargauge"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__all"}
DATASOURCES = {"prometheusds": ("prometheus", "${prometheusds}"), "lokids": ("loki", "${lokids}")}
_VARIABLE = re.compile(r"\$\{?(\w+)")

# What the issue asks to see, by a word of the panel's title.
REQUIRED_PANELS = {
    "updown-app.json": [
        "Downloads by status and host",
        "Bytes/s",
        "latency",
        "Backend cache",
        "Uploads by outcome",
        "Upload failures by reason",
        "tus sessions",
        "Purge failures and pending",
        "Storage errors",
        "Rollout state",
    ],
    "updown-cache.json": [
        "Bytes/s served",
        "Latency",
        "hit ratio per frontend unit",
        "ring's spread",
        "Origin fetches",
        "Purges and bans",
        "Backend cache hits",
        "certificate",
    ],
}


def load(path: Path) -> dict[str, Any]:
    board = json.loads(path.read_text())
    assert isinstance(board, dict)
    return board


def test_both_charms_have_a_dashboard() -> None:
    assert sorted(p.name for p in dashboards()) == sorted(REQUIRED_PANELS)


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_dashboard_model(path: Path) -> None:
    board = load(path)
    assert board["title"] and isinstance(board["schemaVersion"], int)
    assert board["time"]["from"] and board["templating"]["list"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    for name, (kind, _uid) in DATASOURCES.items():
        assert variables[name]["type"] == "datasource" and variables[name]["query"] == kind
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: set[tuple[int, int]] = set()
    for panel in panels(board):
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")) and grid["x"] + grid["w"] <= 24
        cells = {(grid["y"] + dy, grid["x"] + dx) for dy in range(grid["h"]) for dx in range(grid["w"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in [panel, *panel["targets"]]:
            kind, uid = DATASOURCES["lokids" if panel["type"] == "logs" else "prometheusds"]
            assert target["datasource"] == {"type": kind, "uid": uid}, panel["title"]
    for uid, expr in dashboard_queries(path):
        used = set(_VARIABLE.findall(expr)) | set(_VARIABLE.findall(uid))
        assert used <= set(variables) | BUILTIN_VARIABLES, f"undefined variables {used - set(variables)} in {expr}"


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_the_issue_panels_are_there_with_metrics(path: Path) -> None:
    titles = {p["title"]: p for p in panels(load(path)) if p["type"] != "row"}
    for wanted in REQUIRED_PANELS[path.name]:
        matching = [t for t in titles if wanted.lower() in t.lower()]
        assert matching, f"no panel about {wanted!r} in {path.name}"
        for title in matching:
            panel = titles[title]
            if panel["type"] != "logs":
                assert any(metric_names(t["expr"]) for t in panel["targets"]), f"{title} reads no metric"
    assert any(p["type"] == "logs" for p in titles.values()), "no logs panel"


def grafana_to_promql(expr: str) -> str:
    """A query as Grafana sends it: its variables substituted."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return _VARIABLE.sub(".+", expr)


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_every_promql_query_is_valid(path: Path, tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule): a typo in a panel fails here, not on the screen."""
    queries = [grafana_to_promql(e) for uid, e in dashboard_queries(path) if uid == "${prometheusds}"]
    queries = [q for q in queries if not q.startswith("label_values(")]  # Grafana's own variable function
    assert queries
    rules = {
        "groups": [{"name": "panels", "rules": [{"record": f"panel:q{i}", "expr": q} for i, q in enumerate(queries)]}]
    }
    (tmp_path / "panels.rules").write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [need_tool("promtool"), "check", "rules", "panels.rules"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_metric_names_of_a_query() -> None:
    expr = 'sum by (juju_unit) (rate(varnish_main_cache_hit{juju_unit=~"$juju_unit",x="nginx_up"}[5m])) / time()'
    assert metric_names(expr) == {"varnish_main_cache_hit"}
    assert metric_names('label_values({__name__=~"varnish_up|nginx_up"}, juju_model)') == {"varnish_up", "nginx_up"}
