"""The Grafana dashboard and the Prometheus alerting rules in examples/ are valid and tested.

promtool (Debian's prometheus package, installed by scripts/setup.sh) checks the rule file,
runs its unit tests (tests/promtool/), and parses every dashboard query. That the metric
names they read exist in a real agent's /metrics is tests/integration/test_metric_names.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring import (
    DASHBOARD,
    GRAFANA_VARIABLES,
    PROMETHEUS_RULE,
    REPO,
    RULE_TESTS,
    RULES,
    alerts,
    dashboard,
    dashboard_expressions,
    exposed_names,
    grafana_expand,
    load_yaml,
    metric_names,
    names_used,
    panels,
    promtool,
    rule_groups,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEVERITIES = ("critical", "warning", "info")


def run_promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def rule_file(tmp_path: Path, name: str, rules: list[dict[str, Any]]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"groups": [{"name": name, "rules": rules}]}))
    return path


# --- alerting rules ------------------------------------------------------------------------


def test_rule_file_passes_promtool_check() -> None:
    done = run_promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_promtool_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The check above can fail: promtool parses each expression."""
    broken = rule_file(tmp_path, "broken", [{"alert": "X", "expr": "rate(up[5m] > 0"}])
    done = run_promtool("check", "rules", str(broken))
    assert done.returncode != 0
    assert "parse error" in done.stdout + done.stderr


def test_alerts_pass_their_promtool_unit_tests() -> None:
    done = run_promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_fail_when_an_alert_changes(tmp_path: Path) -> None:
    """The unit tests evaluate the real rule file: firing one minute early breaks them."""
    rules = tmp_path / RULES.relative_to(REPO)
    tests = tmp_path / RULE_TESTS.relative_to(REPO)
    rules.parent.mkdir(parents=True)
    tests.parent.mkdir(parents=True)
    text = RULES.read_text(encoding="utf-8")
    assert text.count("for: 5m") == 1
    rules.write_text(text.replace("for: 5m", "for: 4m"))
    shutil.copy(RULE_TESTS, tests)
    done = run_promtool("test", "rules", str(tests))
    assert done.returncode != 0
    assert "IPMasqAgentDown" in done.stdout + done.stderr


def test_unit_tests_cover_every_alert_firing_and_quiet_when_healthy() -> None:
    """Each alert has a case where it fires, and one test group checks every alert stays
    quiet on a healthy agent (so a new alert without tests fails here)."""
    suite = load_yaml(RULE_TESTS)
    assert suite["rule_files"] == [str(Path("../..") / RULES.relative_to(REPO))]
    firing: set[str] = set()
    quiet_together: list[set[str]] = []
    for group in suite["tests"]:
        quiet: set[str] = set()
        for case in group.get("alert_rule_test", []):
            assert case["alertname"] in alerts(), case["alertname"]
            if case["exp_alerts"]:
                firing.add(case["alertname"])
            else:
                quiet.add(case["alertname"])
        quiet_together.append(quiet)
    assert firing == set(alerts())
    assert set(alerts()) in quiet_together


def test_alerts_name_the_instance_and_carry_severity_and_for() -> None:
    assert alerts(), "no alerting rule"
    for name, rule in alerts().items():
        assert name.startswith("IPMasqAgent"), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule.get("for"), f"{name}: no `for:`, so one bad evaluation would fire it"
        for key in ("summary", "description"):
            assert "{{ $labels.instance }}" in rule["annotations"][key], (name, key)


def test_only_prometheus_up_depends_on_the_scrape_job_name() -> None:
    """The rules assume the job `ip-masq-agent` (documented) where they must: for `up`,
    which every target has; the agent's own series need no job selector."""
    for name, rule in alerts().items():
        if "up" in metric_names(rule["expr"]):
            assert 'up{job="ip-masq-agent"}' in rule["expr"], name
        else:
            assert "job" not in rule["expr"], name


def test_prometheusrule_spec_groups_equal_the_rule_file() -> None:
    manifest = load_yaml(PROMETHEUS_RULE)
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"]["groups"] == rule_groups()


def test_groups_differ_when_the_manifest_drifts() -> None:
    """The comparison above is deep: one changed annotation is a difference."""
    manifest = load_yaml(PROMETHEUS_RULE)
    manifest["spec"]["groups"][0]["rules"][0]["annotations"]["summary"] += "."
    assert manifest["spec"]["groups"] != rule_groups()


# --- dashboard -----------------------------------------------------------------------------


def test_dashboard_is_grafana_json_with_unique_ids_and_no_overlap() -> None:
    doc = dashboard()
    assert doc["uid"] == "ip-masq-agent"
    assert doc["title"]
    assert isinstance(doc["schemaVersion"], int)
    every = panels(doc)
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel.get("description"), panel["title"]


def test_dashboard_datasource_is_a_template_variable() -> None:
    doc = dashboard()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    for panel in panels(doc):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]

    def uids(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["uid"]] if isinstance(node.get("uid"), str) else []
            return own + [u for v in node.values() for u in uids(v)]
        if isinstance(node, list):
            return [u for v in node for u in uids(v)]
        return []

    # No data source is pinned by uid anywhere (Grafana's own annotation source aside).
    assert set(uids(doc)) == {doc["uid"], "${datasource}", "-- Grafana --"}


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    """Every panel query and variable selector, Grafana's variables expanded, is valid
    PromQL: promtool parses each as the expression of a recording rule."""
    expressions = dashboard_expressions()
    records = [
        {"record": f"dashboard:query_{n}", "expr": grafana_expand(expr)}
        for n, expr in enumerate(expressions.values())
    ]
    path = rule_file(tmp_path, "dashboard-queries.yaml", records)
    done = run_promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr + "\n" + "\n".join(expressions)
    assert f"SUCCESS: {len(records)} rules found" in done.stdout


def test_dashboard_uses_only_known_grafana_variables() -> None:
    doc = dashboard()
    defined = {v["name"] for v in doc["templating"]["list"]}
    assert defined - {"datasource"} <= set(GRAFANA_VARIABLES)
    for expr in dashboard_expressions(doc).values():
        assert "$" not in grafana_expand(expr)
    with pytest.raises(KeyError, match="node"):
        grafana_expand('up{instance=~"$node"}')


def test_dashboard_shows_what_operators_ask_for() -> None:
    """Sync rate and failures, sync duration, last success age, conflicts, rule writes,
    and per-CIDR traffic by action."""
    exprs = [grafana_expand(e) for e in dashboard_expressions().values()]
    used = {name for expr in exprs for name in metric_names(expr)}
    assert {
        "ip_masq_agent_syncs_total",
        "ip_masq_agent_sync_duration_seconds_bucket",
        "ip_masq_agent_last_success_timestamp_seconds",
        "ip_masq_agent_config_conflicts",
        "ip_masq_agent_rule_writes_total",
        "ip_masq_agent_packets_total",
        "ip_masq_agent_bytes_total",
    } <= used
    for counter in ("packets", "bytes"):
        assert any(
            f"ip_masq_agent_{counter}_total" in e and "by (cidr, action)" in e for e in exprs
        ), counter
    assert any('result="failure"' in e for e in exprs)
    assert any("histogram_quantile" in e for e in exprs)


def test_every_metric_read_is_an_agent_metric_or_up() -> None:
    """A typo in a name is caught here already; tests/integration/test_metric_names.py
    checks the names against a running agent's /metrics."""
    for name, where in names_used().items():
        assert name == "up" or name.startswith("ip_masq_agent_"), (name, sorted(where))


# --- the PromQL name reader ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="ip-masq-agent"} == 0', {"up"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m])))",
            {"a_bucket"},
        ),
        (
            "sum(rate(a_sum[1h30m])) / sum without (x, y) (rate(a_count[5m] offset 1d))",
            {
                "a_sum",
                "a_count",
            },
        ),
        ('count_values("version", b_info) > bool 1e-3', {"b_info"}),
        ("a * on (instance) group_left (version) b and c unless d or e", set("abcde")),
        (
            '{__name__="c_total", cidr=~"10\\\\.0.*"} + rate(up[5m:1m]) # by (x) f',
            {
                "c_total",
                "up",
            },
        ),
        ("max_over_time(x[15m]) == 0 or timestamp(y) - y > Inf", {"x", "y"}),
        ('label_replace(z, "dst", "$1", "src", "(.*)")', {"z"}),
    ],
)
def test_metric_names_reads_only_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exposed_names_are_the_stored_series_names() -> None:
    """A histogram is stored as _bucket/_sum/_count and a counter as _total: comparing the
    queries with the exposition's family names would miss a query of the bare name."""
    text = (
        "# HELP d Durations.\n# TYPE d histogram\n"
        'd_bucket{le="1.0"} 1.0\nd_bucket{le="+Inf"} 1.0\nd_count 1.0\nd_sum 0.5\n'
        "# HELP s Syncs.\n# TYPE s counter\n"
        's_total{result="success"} 3.0\n'
        "# HELP g A gauge.\n# TYPE g gauge\ng 2.0\n"
    )
    assert exposed_names(text) == {"d_bucket", "d_count", "d_sum", "s_total", "g"}


def test_docs_name_the_monitoring_files() -> None:
    for doc in ("README.md", "docs/observability.md"):
        text = (REPO / doc).read_text(encoding="utf-8")
        for path in (DASHBOARD, RULES, PROMETHEUS_RULE):
            assert str(path.relative_to(REPO)) in text, (doc, path.name)
