"""The provider side of the `cos_agent` interface: what a principal charm tells the COS agent on its machine
(Canonical's grafana-agent / opentelemetry-collector machine charms) to scrape, and the alert rules and
dashboards the agent forwards to Prometheus, Loki and Grafana.

Our own small implementation of the protocol of the charm library `charms.grafana_agent.v0.cos_agent`: that
library is distributed through Charmhub only (`charmcraft fetch-lib`), which packing cannot count on reaching,
and no package on PyPI carries it (`cosl` has helpers for it, not the provider). The protocol is one JSON object
in each unit's databag of the relation, under the key "config":

- metrics_scrape_jobs: Prometheus scrape_configs, targets on localhost (the agent runs on the same machine);
- metrics_alert_rules / log_alert_rules: {"groups": [...]} of Prometheus / Loki rules, each group named after
  the Juju topology, each rule labelled with it and its selectors narrowed to it (as the library does);
- dashboards: each Grafana dashboard's JSON, LZMA-compressed then base64-encoded, its uid derived from the charm
  name and the file's path (40 hex characters, Grafana's limit), tagged "charm: <name>";
- log_slots: snap log slots ("snap:slot"). None here: the workloads are Debian packages and a venv, whose logs
  the agent collects anyway (the machine's journal and /var/log/**/*log);
- tracing_protocols: none requested.
"""

from __future__ import annotations

import base64
import hashlib
import json
import lzma
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ops
import yaml

RELATION = "cos-agent"
DATABAG_KEY = "config"
RULES_DIR = Path("src/prometheus_alert_rules")
LOG_RULES_DIR = Path("src/loki_alert_rules")
DASHBOARDS_DIR = Path("src/grafana_dashboards")
RULE_SUFFIXES = (".rule", ".rules")

# The metric names our rules select all start with one of these (ours and the exporters'); no label name does.
METRIC_PREFIXES = ("updown_", "haproxy_", "varnish_", "nginx_")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"(?<![\w:])(" + "|".join(METRIC_PREFIXES) + r")[\w:]*(\s*\{)?")


@dataclass(frozen=True)
class Topology:
    """Where the charm runs, as COS labels it (juju_model, juju_model_uuid, juju_application, juju_charm)."""

    model: str
    model_uuid: str
    application: str
    charm: str

    @property
    def identifier(self) -> str:
        """Short, for names (the library's: the model UUID cut to 8 characters)."""
        return f"{self.model}_{self.model_uuid[:8]}_{self.application}"

    @property
    def labels(self) -> dict[str, str]:
        return {
            "juju_model": self.model,
            "juju_model_uuid": self.model_uuid,
            "juju_application": self.application,
            "juju_charm": self.charm,
        }

    @property
    def matchers(self) -> str:
        """The label matchers an expression is narrowed with (not the charm: scraped series do not carry it)."""
        return ",".join(f'{k}="{v}"' for k, v in self.labels.items() if k != "juju_charm")


def inject_matchers(expr: str, matchers: str) -> str:
    """Narrow every selector of one of our metrics in a PromQL expression to `matchers`: `m` becomes `m{...}`,
    `m{a="b"}` becomes `m{...,a="b"}`. String literals (label values) are left as they are."""
    out: list[str] = []
    pos = 0
    for string in [*_STRING.finditer(expr), None]:
        end = string.start() if string else len(expr)
        code = expr[pos:end]
        out.append(_SELECTOR.sub(lambda m, code=code: _narrow(m, matchers, code), code))  # type: ignore[misc]
        if string:
            out.append(string.group())
            pos = string.end()
    return "".join(out)


def _narrow(m: re.Match[str], matchers: str, code: str) -> str:
    name = m.group(0).rstrip("{ \t\n")
    if m.group(2) is None:
        return f"{name}{{{matchers}}}"
    empty = code[m.end() :].lstrip().startswith("}")
    return f"{name}{{{matchers}{'' if empty else ','}"


def inject_log_matchers(expr: str, matchers: str) -> str:
    """Narrow every stream selector of a LogQL expression to `matchers` (what the library has cos-tool do):
    `{job="syslog"}` becomes `{<matchers>,job="syslog"}`. Outside string literals a brace only ever opens a
    stream selector in LogQL (templates such as line_format's are strings)."""
    out: list[str] = []
    pos = 0
    for string in [*_STRING.finditer(expr), None]:
        end = string.start() if string else len(expr)
        code = expr[pos:end]
        out.append(re.sub(r"\{(\s*\})?", lambda m: f"{{{matchers}}}" if m.group(1) else f"{{{matchers},", code))
        if string:
            out.append(string.group())
            pos = string.end()
    return "".join(out)


def _rule_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in RULE_SUFFIXES)


def alert_rules(directory: Path, topology: Topology, *, promql: bool = True) -> dict[str, Any]:
    """The rule groups of every *.rule(s) file of `directory`, named after the topology and labelled with it;
    their expressions (PromQL, or LogQL with `promql=False`) narrowed to it."""
    groups: list[dict[str, Any]] = []
    for path in _rule_files(directory):
        content = yaml.safe_load(path.read_text())
        if not isinstance(content, dict) or not isinstance(content.get("groups"), list):
            raise ValueError(f"{path.name}: not a rules file (a mapping with a list of groups)")
        for group in content["groups"]:
            name = re.sub(r"[^\w:]", "_", f"{topology.identifier}_{group['name']}")
            rules = []
            for rule in group["rules"]:
                rule = dict(rule)
                rule["labels"] = {**topology.labels, **rule.get("labels", {})}
                inject = inject_matchers if promql else inject_log_matchers
                rule["expr"] = inject(str(rule["expr"]), topology.matchers)
                rules.append(rule)
            groups.append({**group, "name": name if name.endswith("_rules") else f"{name}_rules", "rules": rules})
    return {"groups": groups}


def dashboard_uid(charm: str, relative_path: str) -> str:
    """The library's uid: stable per charm and file, 40 hex characters."""
    return hashlib.shake_256(f"{charm}-{relative_path}".encode()).hexdigest(20)


def encode(content: str) -> str:
    return base64.b64encode(lzma.compress(content.encode())).decode()


def decode(encoded: str) -> str:
    return lzma.decompress(base64.b64decode(encoded)).decode()


def dashboards(charm_dir: Path, charm: str) -> list[str]:
    encoded = []
    directory = charm_dir / DASHBOARDS_DIR
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        board = json.loads(path.read_text())
        board["uid"] = dashboard_uid(charm, str(path.relative_to(charm_dir)))
        tags = list(board.get("tags", []))
        if not any(str(t).startswith("charm: ") for t in tags):
            tags.append(f"charm: {charm}")
        board["tags"] = tags
        encoded.append(encode(json.dumps(board)))
    return encoded


def scrape_job(name: str, port: int, path: str = "/metrics") -> dict[str, Any]:
    return {"job_name": name, "metrics_path": path, "static_configs": [{"targets": [f"localhost:{port}"]}]}


def provider_data(
    charm_dir: Path, topology: Topology, scrape_jobs: Sequence[Mapping[str, Any]], log_slots: Iterable[str] = ()
) -> str:
    """The unit databag's "config" value. Job names carry the application, as the library's do (the agent
    merges the jobs of every principal on the machine)."""
    jobs = [{**job, "job_name": f"{topology.application}_{job['job_name']}"} for job in scrape_jobs]
    return json.dumps(
        {
            "metrics_alert_rules": alert_rules(charm_dir / RULES_DIR, topology),
            "log_alert_rules": alert_rules(charm_dir / LOG_RULES_DIR, topology, promql=False),
            "dashboards": dashboards(charm_dir, topology.charm),
            "metrics_scrape_jobs": sorted(jobs, key=lambda j: str(j["job_name"])),
            "log_slots": list(log_slots),
            "tracing_protocols": None,
        },
        sort_keys=True,
    )


def topology_of(charm: ops.CharmBase) -> Topology:
    return Topology(
        model=charm.model.name,
        model_uuid=charm.model.uuid,
        application=charm.app.name,
        charm=charm.meta.name,
    )


def publish(charm: ops.CharmBase, scrape_jobs: Sequence[Mapping[str, Any]]) -> None:
    """Write this unit's data on every cos-agent relation (a subordinate agent reads unit data only)."""
    relations = charm.model.relations[RELATION]
    if not relations:
        return
    data = provider_data(charm.charm_dir, topology_of(charm), scrape_jobs)
    for relation in relations:
        if relation.data[charm.unit].get(DATABAG_KEY) != data:
            relation.data[charm.unit][DATABAG_KEY] = data
