"""The worker's /metrics during a run over the simulated rails with fraud scoring:
every series the issue lists has a sample, counted as the run says.

outcomes by kind and status, stage latency histograms (each stage and the whole
pipeline), consumer lag, dead letters, fraud decisions, breaker states per rail,
the ledger imbalance gauge (0), settlement discrepancies (registered at 0: the
reconcile job counts them in its own process)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.providers.rails import load_rail_configs
from streams.client.observe import Observer
from streams.client.processes import wait_until
from streams.client.publish import publish_commands
from streams.domain.reconcile import STATUSES
from tests.integration.support import PARTITIONS, WAIT_S, create, follow_up, make_settings, start_worker

pytestmark = pytest.mark.integration

CREATES, CAPTURES = 24, 12
STAGES = ("ingest", "keys", "risk", "payments", "ledger", "pipeline")
SCRAPE_WAIT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def card(i: int) -> dict:
    """A distinct Luhn-valid Visa per payment: no velocity rule holds them all."""
    body = f"424242{i:09d}"
    total = sum(d if n % 2 else sum(divmod(2 * d, 10)) for n, d in enumerate(int(c) for c in reversed(body)))
    return {"number": body + str(-total % 10), "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def scrape(port: int) -> dict[str, list]:
    """Samples by name (`name` -> [(labels, value)])."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_every_listed_series_is_scraped_from_a_running_worker(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "metrics").model_copy(
        update={"providers": "rails", "fraud_scoring": True, "metrics_port": free_port()}
    )
    m = f"m_{uuid.uuid4().hex[:6]}"
    creates = [create(m, f"k{i}", amount=1_000 + i, card=card(i)) for i in range(CREATES)]
    captures = [follow_up("capture", m, c["payment_id"], f"k{i}-cap") for i, c in enumerate(creates[:CAPTURES])]
    commands = [*creates, *captures]
    worker = start_worker(settings)
    try:
        with Observer(settings) as seen:
            publish_commands(settings, [*commands, (b"junk", b"\x00 not a command")])
            assert seen.wait_for({c["command_id"] for c in commands}, 1, WAIT_S, lambda *_: worker.supervise()), (
                worker.log_tail()
            )
            statuses = Counter((c["kind"], seen.outcomes[c["command_id"]][0]["status"]) for c in commands)
            assert seen.wait_until(seen.books_applied, WAIT_S), "the ledger did not apply every entry"

        rails = set(load_rail_configs())

        # Gauges refresh every few seconds and the pipeline histogram trails the outcomes by
        # nothing but the scrape: wait, bounded, until every series is there and settled.
        def ready() -> bool:
            s = scrape(settings.metrics_port)
            lag = [
                (labels, v)
                for labels, v in s.get("paystream_consumer_lag_messages", [])
                if labels["topic"].endswith(".payment-commands")
            ]
            return (
                bool(s.get("paystream_ledger_imbalance_minor"))
                and {labels["provider"] for labels, _ in s.get("paystream_breaker_state", [])} >= rails
                and len(lag) == PARTITIONS
                and all(v <= 1 for _, v in lag)
            )

        assert wait_until(ready, SCRAPE_WAIT_S), (scrape(settings.metrics_port).keys(), worker.log_tail())
        s = scrape(settings.metrics_port)

        # Outcomes, by kind and status, exactly as the pipeline answered.
        counted = Counter({(labels["kind"], labels["status"]): v for labels, v in s["paystream_outcomes_total"]})
        assert +counted == +Counter({k: float(n) for k, n in statuses.items()})
        # Each stage's latency histogram has observations; the pipeline's one per outcome.
        latency = {labels["stage"]: v for labels, v in s["paystream_stage_latency_seconds_count"]}
        assert all(latency.get(stage, 0) > 0 for stage in STAGES), latency
        assert latency["pipeline"] == len(commands)
        assert latency["ingest"] == len(commands)  # the junk record went to the DLQ, not on
        # The junk record: one dead letter from ingest.
        assert sum(v for labels, v in s["paystream_dead_letters_total"] if labels["stage"] == "ingest") == 1
        # One fraud decision per create.
        assert sum(v for _, v in s["paystream_fraud_decisions_total"]) == CREATES
        # Every rail's breaker, a valid level.
        breakers = {labels["provider"]: v for labels, v in s["paystream_breaker_state"]}
        assert rails <= set(breakers) and set(breakers.values()) <= {0.0, 1.0, 2.0}
        # The books balance: the imbalance gauge is 0 in every currency it has seen (USD here).
        imbalance = {labels["currency"]: v for labels, v in s["paystream_ledger_imbalance_minor"]}
        assert imbalance == {"USD": 0.0}
        # Consumer lag per owned source partition; the commands are all consumed.
        assert all(v >= 0 for _, v in s["paystream_consumer_lag_messages"])
        # Settlement discrepancies: every kind registered, none counted by the worker.
        kinds = {labels["kind"]: v for labels, v in s["paystream_settlement_discrepancies_total"]}
        assert set(kinds) == set(STATUSES) - {"matched"}  # the chain's custody_mismatch among them
        assert set(kinds.values()) == {0.0}
    finally:
        assert worker.stop() == 0, worker.log_tail()
