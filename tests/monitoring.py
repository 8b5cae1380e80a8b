"""The monitoring examples (Grafana dashboard, Prometheus rules) as data for the tests.

Both the unit tests (tests/test_monitoring.py) and the namespace test that scrapes a real
agent (tests/integration/test_metric_names.py) need the same things from them: their PromQL
expressions, the metric names those expressions read, and promtool.

The metric names are read from the expressions by a small PromQL tokenizer rather than by
pattern-matching ``ip_masq_agent_*``: a name the dashboard reads but spells wrong, or a
name of another exporter, must show up, and label names, functions, keywords and strings
must not.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from ci import cannot_run
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
MONITORING = EXAMPLES / "monitoring"
RULES = MONITORING / "ip-masq-agent.rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_RULE = EXAMPLES / "prometheus-rule.yaml"
RULE_TESTS = REPO / "tests" / "promtool" / "ip-masq-agent.rules.test.yaml"

# Read from Prometheus itself, not exported by the agent.
PROMETHEUS_OWN = frozenset({"up"})

# Grafana's variables in the dashboard's queries, and a value of the same PromQL type for
# each (a duration, or a regex inside a label matcher), so that the expanded query is what
# Prometheus will be sent.
GRAFANA_VARIABLES = {
    "__rate_interval": "4m",
    "__interval": "1m",
    "__range": "6h",
    "job": "ip-masq-agent",
    "instance": ".*",
}
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)$", re.DOTALL)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = load_yaml(RULES)["groups"]
    return groups


def alerts() -> dict[str, dict[str, Any]]:
    """Every alerting rule of the rule file, by alert name."""
    return {rule["alert"]: rule for group in rule_groups() for rule in group["rules"]}


def rule_expressions() -> dict[str, str]:
    return {f"rule {name}": rule["expr"] for name, rule in alerts().items()}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too (rows themselves included)."""
    out: list[dict[str, Any]] = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_expressions(doc: dict[str, Any] | None = None) -> dict[str, str]:
    """Each PromQL expression of the dashboard with Grafana's variables still in it: every
    panel target, and the metric selector of every ``label_values(...)`` variable query."""
    doc = dashboard() if doc is None else doc
    out: dict[str, str] = {}
    for panel in panels(doc):
        for target in panel.get("targets", []):
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in doc["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        found = _LABEL_VALUES.match(text.strip())
        assert found is not None, f"variable {variable['name']}: not label_values(...): {text}"
        out[f"variable {variable['name']}"] = found["selector"]
    return out


def grafana_expand(expr: str) -> str:
    """The query with each Grafana variable replaced; an unknown variable is an error."""

    def value(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        if name not in GRAFANA_VARIABLES:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return _VARIABLE.sub(value, expr)


# --- PromQL metric names ------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<space>\s+|\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[A-Za-z0-9_]*)
    | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^(){}\[\],=<>@])
    """,
    re.VERBOSE,
)
# Binary operators, modifiers and literals spelled like identifiers (PromQL is
# case-insensitive about these).
_KEYWORDS = frozenset(
    {"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"}
    | {"by", "without", "on", "ignoring", "group_left", "group_right"}
)
# Keywords followed by a parenthesized list of label names (optional for group_*).
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot tokenize PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _closing(tokens: list[tuple[str, str]], start: int, open_: str, close: str) -> int:
    """Index of the token that closes the bracket opened at ``start``."""
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i] == ("op", open_):
            depth += 1
        elif tokens[i] == ("op", close):
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced {open_!r} in PromQL")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, exactly as written (with ``_total``,
    ``_bucket``, ``_sum``, ``_count``: the series names Prometheus stores).

    An identifier is a metric name unless it is a keyword, a function or aggregation (it is
    followed by ``(``, or by ``by``/``without``), a label name (inside ``{...}`` or a
    ``by``/``on``/... list) or a duration; ``{__name__="x"}`` selects ``x``.
    """
    tokens = _tokens(expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if (kind, text) == ("op", "{"):
            end = _closing(tokens, i, "{", "}")
            inner = tokens[i + 1 : end]
            for j in range(len(inner) - 2):
                if inner[j] == ("name", "__name__") and inner[j + 1] == ("op", "="):
                    names.add(inner[j + 2][1][1:-1])
            i = end + 1
            continue
        if (kind, text) == ("op", "["):
            i = _closing(tokens, i, "[", "]") + 1
            continue
        if kind == "name":
            lowered = text.lower()
            if lowered in _LABEL_LIST_KEYWORDS and following == ("op", "("):
                i = _closing(tokens, i + 1, "(", ")") + 1
                continue
            aggregation = following[0] == "name" and following[1].lower() in ("by", "without")
            if lowered not in _KEYWORDS and following != ("op", "(") and not aggregation:
                names.add(text)
        i += 1
    return names


def names_used() -> dict[str, set[str]]:
    """Metric name -> the expressions (rules, dashboard) that read it."""
    used: dict[str, set[str]] = {}
    expressions = {**rule_expressions(), **dashboard_expressions()}
    for where, expr in expressions.items():
        for name in metric_names(grafana_expand(expr)):
            used.setdefault(name, set()).add(where)
    return used


def exposed_names(exposition: str) -> set[str]:
    """The series names a scrape of this text stores: each sample's name, so a histogram
    gives ``_bucket``/``_sum``/``_count`` and a counter ``_total``, never the bare family."""
    return {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


# --- promtool ----------------------------------------------------------------------------


def promtool() -> str:
    """promtool's path. Missing, the test fails under CI=true (.ci/run installs it) and is
    skipped with the reason elsewhere."""
    path = shutil.which("promtool")
    if path is None:
        cannot_run("promtool not on PATH (scripts/setup.sh --promtool installs it)")
    return path
