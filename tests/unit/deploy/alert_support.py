"""Evaluating deploy/prometheus/alerts.yml against samples our code exposed.

There is no promtool here and no maintained PromQL evaluator on PyPI (promql-parser
only parses), so each alert's test renders the metrics the real code path produced
(the registry's text exposition, or a process's /metrics over HTTP) at two moments and
checks the rule's condition on those samples in Python: `increase(x[w])` is the
difference between the two scrapes, `offset 1d` an earlier pair of scrapes. Each test
first pins the rule's expression, so a changed rule fails its test until the check
follows (docs/decisions.md, Alerts tested). `sample` reads one value for any test that
checks what a code path counted."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

RULES_FILE = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "alerts.yml"
RULES = {r["alert"]: r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]}

Samples = dict[str, list[tuple[dict[str, str], float]]]


def expr(alert: str) -> str:
    """The rule's expression, whitespace folded."""
    return " ".join(RULES[alert]["expr"].split())


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def sample(name: str, **labels: str) -> float:
    """One sample of this process's registry through prometheus_client's public API (a
    Counter's sample name ends in _total); a labelled child not yet created counts 0."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def render() -> Samples:
    """This process's registry, as /metrics would serve it."""
    return parse(generate_latest(REGISTRY).decode())


def scrape(port: int) -> Samples:
    return parse(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of the samples whose labels fully match the given regexes (PromQL's =~)."""
    return sum(
        v for labels, v in samples.get(name, []) if all(re.fullmatch(rx, labels.get(k, "")) for k, rx in match.items())
    )


def by(samples: Samples, name: str, label: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in samples.get(name, []):
        if all(re.fullmatch(rx, labels.get(k, "")) for k, rx in match.items()):
            out[labels[label]] = out.get(labels[label], 0.0) + v
    return out


def increase(before: Samples, after: Samples, name: str, **match: str) -> float:
    return total(after, name, **match) - total(before, name, **match)


def increase_by(before: Samples, after: Samples, name: str, label: str, **match: str) -> dict[str, float]:
    a, b = by(after, name, label, **match), by(before, name, label, **match)
    return {k: v - b.get(k, 0.0) for k, v in a.items()}


def quantile(q: float, before: Samples, after: Samples, name: str, **match: str) -> float:
    """histogram_quantile over the increase of `name`_bucket between the scrapes (the
    same linear interpolation inside the bucket Prometheus does)."""
    buckets = sorted(
        ((float(le), v) for le, v in increase_by(before, after, f"{name}_bucket", "le", **match).items()),
        key=lambda x: x[0],
    )
    count = buckets[-1][1]
    assert count > 0, "no observations between the scrapes"
    rank, lower, below = q * count, 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower  # Prometheus answers the highest finite bound
            return lower + (upper - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = upper, cumulative
    return lower


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
