"""The Loki alert rules updown-app hands to COS (src/loki_alert_rules/*.rules, sent as log_alert_rules). No Loki
or logcli here (neither is a Debian package), so each expression is parsed for the LogQL subset the rules use,
its stream selector checked against the labels the COS agent puts on the journal the app logs to, and its
pipeline run over lines the app's own JSON formatter writes: the rule must count the lines it is about and only
those."""

from __future__ import annotations

import json
import logging
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cos.conftest import CHARMS
from updown_app.caches import purge
from updown_app.http.middleware import metrics
from updown_app.logs import JsonFormatter

RULE_FILES = sorted(p for path in CHARMS.values() for p in (path / "src" / "loki_alert_rules").glob("*.rules"))
# The journal as the COS agent ships it from the machine (grafana-agent machine charm: job "syslog", labelled
# with the principal's topology and the instance); the app's stderr goes to the journal (its systemd unit).
JOURNAL_LABELS = {"job", "instance", "juju_model", "juju_model_uuid", "juju_application", "juju_unit", "juju_charm"}
JOURNAL_JOB = "syslog"

_STRING = r'"(?:[^"\\]|\\.)*"|`[^`]*`'
_MATCHER = re.compile(rf"^\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*({_STRING})\s*$")
_OUTER = re.compile(
    r"^sum by \((?P<by>[\w, ]+)\) \( count_over_time\((?P<query>.*) \[(?P<range>\d+[smh])\]\) \) "
    r"(?P<op>>=|>) (?P<n>\d+)$"
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}  # fmt: skip


def unquote(literal: str) -> str:
    return literal[1:-1] if literal.startswith("`") else json.loads(literal)


def split_outside_strings(text: str, sep: str) -> list[str]:
    parts, current, pos = [], "", 0
    for m in [*re.finditer(_STRING, text), None]:
        end = m.start() if m else len(text)
        chunks = text[pos:end].split(sep)
        current += chunks[0]
        for chunk in chunks[1:]:
            parts.append(current)
            current = chunk
        if m:
            current += m.group()
            pos = m.end()
    parts.append(current)
    return parts


@dataclass(frozen=True)
class LogQuery:
    """`sum by (...) (count_over_time({selector} |= `line` | json | __error__="" | label op value [range])) > n`."""

    by: tuple[str, ...]
    selector: dict[str, tuple[str, str]]
    line_filters: tuple[str, ...]
    label_filters: tuple[tuple[str, str, str], ...]
    range: str
    threshold: tuple[str, int]

    @classmethod
    def parse(cls, expr: str) -> LogQuery:
        balanced(expr)
        outer = _OUTER.match(_normalise(expr))
        assert outer, f"not sum by (...) (count_over_time(<log query> [range])) > n: {expr}"
        query = outer["query"].strip()
        sel = re.match(r"^\{([^}]*)\}", query)
        assert sel, f"no stream selector first: {query}"
        selector: dict[str, tuple[str, str]] = {}
        for matcher in split_outside_strings(sel.group(1), ","):
            m = _MATCHER.match(matcher)
            assert m, f"not a label matcher: {matcher!r}"
            selector[m.group(1)] = (m.group(2), unquote(m.group(3)))
        line_filters: list[str] = []
        label_filters: list[tuple[str, str, str]] = []
        parsed_json = False
        for stage in split_outside_strings(query[sel.end() :], "|")[1:]:
            stage = stage.strip()
            if stage.startswith("= "):  # `|= "text"`
                assert not parsed_json, "line filters go before the parser (cheaper, and keep other lines out)"
                line_filters.append(unquote(stage[2:].strip()))
            elif stage == "json":
                parsed_json = True
            else:
                m = re.match(rf"^([a-zA-Z_]\w*)\s*(>=|<=|!=|=|>|<)\s*({_STRING}|\d+(?:\.\d+)?)$", stage)
                assert m and parsed_json, f"not a label filter after | json: {stage!r}"
                value = m.group(3)
                label_filters.append((m.group(1), m.group(2), unquote(value) if value[0] in '"`' else value))
        assert parsed_json, "the app's lines are JSON: | json extracts their fields"
        assert ("__error__", "=", "") in label_filters, 'a line | json cannot parse must be dropped (__error__="")'
        return cls(
            by=tuple(b.strip() for b in outer["by"].split(",")),
            selector=selector,
            line_filters=tuple(line_filters),
            label_filters=tuple(label_filters),
            range=outer["range"],
            threshold=(outer["op"], int(outer["n"])),
        )

    def matches(self, line: str) -> dict[str, Any] | None:
        """The labels of `line` if it passes the pipeline (the selector is taken as matched), else None."""
        if not all(f in line for f in self.line_filters):
            return None
        try:
            fields = json.loads(line)
        except ValueError:
            return None  # __error__="" drops it
        for name, op, value in self.label_filters:
            if name == "__error__":
                continue
            have = fields.get(name)
            if have is None:
                return None
            if op in ("=", "!=") and not value.replace(".", "").isdigit():
                if not _OPS[op](str(have), value):
                    return None
            elif not _OPS[op](float(have), float(value)):
                return None
        return fields


def _normalise(expr: str) -> str:
    """One space between tokens, none inside the parentheses of count_over_time: the shape _OUTER reads."""
    code = " ".join(expr.split())
    code = re.sub(r"\(\s+", "(", code)
    code = re.sub(r"\s+\)", ")", code)
    code = code.replace(") (count_over_time(", ") ( count_over_time(")
    return re.sub(r"\]\)\)", "]) )", code)


def balanced(code: str) -> None:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(_STRING, '""', code):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            assert stack and stack.pop() == pairs[ch], f"unbalanced {ch!r} in {code}"
    assert not stack, f"unclosed {stack} in {code}"


def rules() -> dict[str, dict[str, Any]]:
    found = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found[rule["alert"]] = rule
    return found


def app_line(logger: logging.Logger, level: int, message: str, **extra: Any) -> str:
    """A log line exactly as the app writes it (its JsonFormatter, its loggers)."""
    record = logger.makeRecord(logger.name, level, __file__, 0, message, (), None, extra=extra)
    return JsonFormatter().format(record)


def access(status: int) -> str:
    return app_line(metrics.access_log, logging.INFO, "request", method="GET", path="/f/x", route="/f/{name}",
                    status=status, sent=0, received=0, duration_ms=1.0, client="10.0.0.1")  # fmt: skip


PURGE_ABANDONED = app_line(purge.log, logging.ERROR, "cache purge abandoned: unit unreachable",
                           endpoint="http://10.0.0.3:6081", bans=1)  # fmt: skip
PURGE_RETRIED = app_line(purge.log, logging.WARNING, "cache purge failed", endpoint="http://10.0.0.3:6081",
                         attempt=1, error="ConnectError")  # fmt: skip
OTHER_SERVICE = 'Accepted publickey for ubuntu from 10.0.0.9 port 22 ssh2: "logger": "updown.access" status 500'


def test_the_rules_the_issue_asks_for_exist():
    assert RULE_FILES, "no src/loki_alert_rules/*.rules"
    assert {"UpdownAppHttp5xxBurst", "UpdownTakedownPurgeFailed"} <= set(rules())


@pytest.mark.parametrize("name", sorted(rules()))
def test_each_rule_parses_and_selects_the_journal_the_app_logs_to(name):
    rule = rules()[name]
    query = LogQuery.parse(rule["expr"])
    assert set(query.selector) <= JOURNAL_LABELS, f"a label the agent does not set: {set(query.selector)}"
    assert query.selector.get("job") == ("=", JOURNAL_JOB)
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    for label in query.by:  # what the alert is grouped by: a stream label, or a field the app logs
        assert label in JOURNAL_LABELS or any(label in json.loads(line) for line in (access(500), PURGE_ABANDONED))


def test_the_5xx_burst_counts_server_errors_of_the_access_log_only():
    query = LogQuery.parse(rules()["UpdownAppHttp5xxBurst"]["expr"])
    assert query.matches(access(503)) is not None and query.matches(access(500)) is not None
    for line in (access(200), access(404), access(499), PURGE_ABANDONED, OTHER_SERVICE):
        assert query.matches(line) is None, line
    assert query.threshold[1] > 0


def test_the_purge_failure_counts_abandoned_takedown_purges_per_endpoint():
    query = LogQuery.parse(rules()["UpdownTakedownPurgeFailed"]["expr"])
    labels = query.matches(PURGE_ABANDONED)
    assert labels is not None and labels["endpoint"] == "http://10.0.0.3:6081" and "endpoint" in query.by
    # a failed attempt that is retried, another logger's error, another service: not an alert
    other_error = app_line(metrics.access_log, logging.ERROR, "x", status=500)
    for line in (PURGE_RETRIED, other_error, access(500), OTHER_SERVICE):
        assert query.matches(line) is None, line
    assert query.threshold == (">", 0)


def test_the_parser_reads_a_well_formed_query():
    query = LogQuery.parse('sum by (juju_application) (count_over_time({job="syslog"} | json | __error__="" [5m])) > 1')
    assert query.selector == {"job": ("=", "syslog")} and query.range == "5m" and query.threshold == (">", 1)


@pytest.mark.parametrize(
    "expr",
    [
        'sum by (juju_application) (count_over_time({job="syslog" | json | __error__="" [5m])) > 1',
        'sum by (juju_application) (count_over_time({job=syslog} | json | __error__="" [5m])) > 1',
        'sum by (juju_application) (count_over_time({job="syslog"} | json [5m])) > 1',
        'sum by (juju_application) (count_over_time({job="syslog"} | __error__="" [5m])) > 1',
        'sum by (juju_application) (count_over_time({job="syslog"} | json | __error__="" )) > 1',
        'sum by (juju_application) (count_over_time({job="syslog"} | json | __error__="" [5m]) > 1',
    ],
)
def test_the_parser_refuses_what_loki_would(expr):
    """The checks above can fail: a broken selector, no parser or error filter, no range, unbalanced."""
    with pytest.raises(AssertionError):
        LogQuery.parse(expr)


def test_the_packed_charm_directory_layout_is_the_one_cos_agent_reads():
    """cos_agent.provider_data reads <charm>/src/loki_alert_rules; the rules live there."""
    from updown_charms import cos_agent

    for path in RULE_FILES:
        assert path.parent.relative_to(path.parents[2]) == cos_agent.LOG_RULES_DIR
    assert Path("src/loki_alert_rules") == cos_agent.LOG_RULES_DIR
