"""Alert rules and dashboards only use metrics (and labels) that streams/metrics.py
defines, in the shapes Prometheus and Grafana load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from streams import metrics

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
# Labels Prometheus adds or a histogram carries besides the metric's own.
IMPLICIT_LABELS = {"le", "job", "instance"}
SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
# A metric name, optionally followed by a label matcher block.
SELECTOR = re.compile(r"\b(paystream_[a-z0-9_]+)(\{[^}]*\})?")
LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")


def _defined() -> dict[str, set[str]]:
    """Sample names exposed by streams.metrics -> the metric's label names."""
    out: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for suffix in SAMPLE_SUFFIXES[obj._type]:
                out[obj._name + suffix] = set(obj._labelnames)
    return out


DEFINED = _defined()


def _check_expr(expr: str, where: str) -> list[str]:
    problems = []
    selectors = SELECTOR.findall(expr)
    if not selectors:
        problems.append(f"{where}: uses no paystream metric: {expr}")
    for name, matchers in selectors:
        if name not in DEFINED:
            problems.append(f"{where}: {name} is not defined in streams/metrics.py")
            continue
        unknown = set(LABEL.findall(matchers)) - DEFINED[name] - IMPLICIT_LABELS
        if unknown:
            problems.append(f"{where}: {name} has no label(s) {sorted(unknown)}")
    for by in re.findall(r"\bby \(([^)]*)\)", expr):
        labels = {x.strip() for x in by.split(",")}
        known = set().union(*(DEFINED.get(n, set()) for n, _ in selectors)) | IMPLICIT_LABELS
        if labels - known:
            problems.append(f"{where}: groups by unknown label(s) {sorted(labels - known)}")
    if expr.count("(") != expr.count(")"):
        problems.append(f"{where}: unbalanced parentheses")
    return problems


def test_the_checker_catches_unknown_names_and_labels() -> None:
    assert _check_expr("rate(paystream_outcomes_total[5m])", "ok") == []
    assert _check_expr("rate(paystream_nope_total[5m])", "x")
    assert _check_expr('rate(paystream_outcomes_total{colour="red"}[5m])', "x")
    assert _check_expr("sum by (colour) (paystream_breaker_state)", "x")
    assert _check_expr("paystream_stage_latency_seconds_bucket", "ok") == []
    assert _check_expr("paystream_stage_latency_seconds", "x")  # a histogram has no bare sample


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rules_are_well_formed() -> None:
    doc = yaml.safe_load(RULES.read_text())
    assert all(set(g) == {"name", "rules"} and g["rules"] for g in doc["groups"])
    names = [r["alert"] for r in _rules()]
    assert len(names) == len(set(names))
    for rule in _rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]


def test_rules_use_only_defined_metrics() -> None:
    problems = [p for r in _rules() for p in _check_expr(r["expr"], r["alert"])]
    assert not problems, "\n".join(problems)


def test_the_slo_rules_are_there() -> None:
    rules = {r["alert"]: r for r in _rules()}
    assert "< 0.95" in rules["PaystreamSuccessRateLow"]["expr"] and rules["PaystreamSuccessRateLow"]["for"] == "5m"
    assert "paystream_settlement_discrepancies_total" in rules["PaystreamSettlementDiscrepancy"]["expr"]
    assert "offset 1d" in rules["PaystreamFraudSpike"]["expr"]
    p99 = rules["PaystreamLatencyP99High"]["expr"]
    assert "histogram_quantile(0.99" in p99 and "> 0.2" in p99
    # 0.2 s must be a bucket boundary, or the p99 around the SLO is interpolated.
    assert 0.2 in metrics.LATENCY_BUCKETS_S


def test_prometheus_config_loads_the_rules() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert cfg["scrape_configs"][0]["job_name"] == "paystream-worker"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_grafana_json_using_defined_metrics(path: Path) -> None:
    dash = json.loads(path.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    datasource_uids = {
        d["uid"]
        for d in yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    }
    problems = []
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert panel["datasource"]["uid"] in datasource_uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            problems += _check_expr(target["expr"], f"{path.name}: {panel['title']}")
    assert not problems, "\n".join(problems)


def test_dashboards_exist() -> None:
    assert DASHBOARDS
