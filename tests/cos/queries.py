"""The PromQL of both charms' dashboards and alert rules, and the metric names it reads (the scrape test checks
each exists in a real scrape)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.cos.conftest import dashboards_dirs, rules_dirs

# Every metric the charms' queries read starts with one of these (our own, HAProxy's built-in exporter,
# prometheus-varnish-exporter, prometheus-nginx-exporter); no label name does.
METRIC_PREFIXES = ("updown_", "haproxy_", "varnish_", "nginx_")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_NAME = re.compile(r"(?<![\w:$])[a-zA-Z_:][\w:]*")
_NAME_MATCHER = re.compile(r'__name__=~?"([^"]*)"')


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: bare names and `{__name__=~"a|b"}` alternatives."""
    names = {n for alt in _NAME_MATCHER.findall(expr) for n in alt.split("|")}
    names |= set(_NAME.findall(_STRING.sub('""', expr)))
    return {n for n in names if n.startswith(METRIC_PREFIXES)}


def dashboards() -> list[Path]:
    return sorted(p for d in dashboards_dirs().values() for p in d.glob("*.json"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(datasource uid, expr) of every panel target and query variable."""
    board = json.loads(path.read_text())
    out = [(t["datasource"]["uid"], t["expr"]) for p in panels(board) for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            out.append((var["datasource"]["uid"], var["definition"]))
    return out


def rule_exprs() -> list[str]:
    return [
        rule["expr"]
        for directory in rules_dirs().values()
        for path in sorted(directory.glob("*.rules"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def referenced_metrics() -> dict[str, set[str]]:
    """Each metric any dashboard panel or alert rule reads, with where."""
    found: dict[str, set[str]] = {}
    for path in dashboards():
        for uid, expr in dashboard_queries(path):
            if uid == "${prometheusds}":
                for name in metric_names(expr):
                    found.setdefault(name, set()).add(path.name)
    for expr in rule_exprs():
        for name in metric_names(expr):
            found.setdefault(name, set()).add("alert rules")
    return found
