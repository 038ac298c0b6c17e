"""The personal-data retention decision (docs/compliance.md, "Retention") as the broker
will be told it: every declared topic's config, read from the specs `paystream topics
ensure` creates the topics with."""

from __future__ import annotations

import json
from pathlib import Path

from streams.settings import Settings
from streams.topics import AML_RECORDS_RETENTION_MS, PERSONAL_DATA_RETENTION_MAX_MS, declared_topics

DAY_MS = 24 * 3600 * 1000
SCHEMAS = Path(__file__).resolve().parents[3] / "schemas" / "avro"


def configs() -> dict[str, dict[str, str]]:
    return {s.name: s.config() for s in declared_topics(Settings(namespace=""))}


def test_aml_records_are_compacted_and_deleted_after_five_years() -> None:
    assert 5 * 365 * DAY_MS < AML_RECORDS_RETENTION_MS <= 5 * 366 * DAY_MS
    for topic in ("monitoring-cases", "monitoring-decisions"):
        cfg = configs()[topic]
        assert cfg["cleanup.policy"] == "compact,delete", topic
        assert int(cfg["retention.ms"]) == AML_RECORDS_RETENTION_MS, topic


def test_topics_carrying_payer_names_keep_them_a_month_at_most() -> None:
    cfg = configs()
    # the create's metadata (payer_name, cardholder_name, device) on every command hop, a
    # held payment's screened name on fraud-review, a bad record's raw bytes on payment-dlq,
    # a device id on monitoring-activity
    carriers = (
        "payment-commands",
        "payment-commands-risk",
        "payment-commands-validated",
        "fraud-review",
        "payment-dlq",
        "monitoring-activity",
    )
    for topic in carriers:
        assert cfg[topic]["cleanup.policy"] == "delete", topic
        assert 0 < int(cfg[topic]["retention.ms"]) <= PERSONAL_DATA_RETENTION_MAX_MS, topic
    assert PERSONAL_DATA_RETENTION_MAX_MS == 30 * DAY_MS


def test_what_is_kept_forever_carries_no_payer_name() -> None:
    """The event store, the books and the payouts keep everything: their records have no
    metadata, names or owners (a screening hit is a list uid and a score)."""
    cfg = configs()
    forever = {t for t, c in cfg.items() if c.get("retention.ms") == "-1"}
    assert forever == {"payment-events", "ledger-entries", "payouts", "subscription-commands"}
    for schema in ("PaymentEvent", "LedgerEntry", "PayoutInstruction", "SubscriptionCommand"):
        fields = {f["name"] for f in json.loads((SCHEMAS / f"{schema}.avsc").read_text())["fields"]}
        assert not fields & {"metadata", "payer_name", "cardholder_name", "owners", "legal_name"}, schema
