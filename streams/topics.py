"""Every topic of the topology, declared in one place.

All pipeline topics share one partition count: a stage writes its changelogs and
same-keyed outputs to the partition number it read from, inside that source
partition's transaction (streams/runtime/). A re-keying hop (by card token to risk,
back by payment_id to payments, by merchant to the ledger) names its target partition
with the producers' partitioner (schemas/partitioning.py).

  payment-commands (by merchant) -> ingest and keys (one transaction)
  -> payment-commands-validated (by payment_id) -> payments
  -> payment-outcomes, payment-events (by payment_id), payment-dlq, and each event's
  entry -> ledger-entries (by merchant: the ledger shard) -> ledger
  keys -> creates -> payment-commands-risk (by card token) -> risk -> validated;
  fraud-labels (by card token) -> risk -> fraud-labels-merchant (a copy by merchant)
  -> keys (the merchant's label counts); fraud-review; fraud-blocklist and merchants
  (compacted; the blocklist is read whole by every worker, merchants by merchant);
  fx-rates (compacted, by pair) and payouts (by merchant) are `paystream settle`'s:
  it reads rates and the registry, and posts payout entries to ledger-entries
  payment-events -> `paystream webhooks run` -> webhook-deliveries (by payment_id, every attempt)
  clock (a tick on every partition, `paystream scheduler run`) -> subscription-commands (by subscription
  id; also the charges' outcomes, from payment-outcomes) -> subscriptions -> payment-commands
  (docs/subscriptions.md); and the same tick -> payment-commands-validated -> payments (expiry timers)
  job-runs (by '<job>/<day>'): each daily job the scheduler ran, and how it ended
  sanctions-list (compacted, by entry uid): list updates, read whole by every worker and job (docs/compliance.md)
  api-objects (compacted, by object id): the merchant API's Customers and saved PaymentMethods
  payments -> monitoring-activity (by '<subject kind>:<id>': card token, merchant, device; one record per
  subject of a capture, refund or device create, in the event's transaction) -> monitoring -> monitoring-cases
  (compacted, by case id); monitoring-decisions (compacted, by decision id): the case queue's audit trail
  (`paystream cases`, docs/compliance.md)
  card-vault (compacted, by card token): sealed cards, written by ingest in the transaction that
  forwards the token, read whole by every worker; vault-reveals (by card token): the audit of
  every reveal, written with the provider call's events (connectors/vault/topic.py, docs/security.md)
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from connectors.kafka import admin
from connectors.kafka.admin import TopicSpec, min_insync_for
from connectors.kafka.clients import READER_GROUP_PREFIX, SNAPSHOT_GROUP_PREFIX
from streams.settings import Settings, client_config

# The worker's tables. All of them share one compacted changelog, "<app id>-tables-changelog"
# (streams/runtime/changelog.py: each record's key starts with its table's name): a
# transaction's commit time grows with the partitions it writes (docs/decisions.md, "One
# changelog topic"). Until then each had its own, "<app id>-<table>-changelog";
# `paystream topics migrate-changelogs` carries a deployment's state over.
TABLES = (
    "payments",
    "payments-dedup",
    "payments-timers",
    "keys",
    "ledger-balances",
    "ledger-applied",
    "risk",
    "merchants",
    "subscriptions",
    "dlq-marks",
    "monitoring",
)

_DAY_MS = 24 * 3600 * 1000
VAULT_REVEALS_RETENTION_MS = 400 * _DAY_MS
# AML records (monitoring cases and their decisions) are kept five years, then deleted
# (FATF Recommendation 11, EU AMLD art. 40; docs/compliance.md, "Retention"): 1,827 days
# covers the leap days.
AML_RECORDS_RETENTION_MS = 1_827 * _DAY_MS
# The topics that carry a payer's name (a create's metadata, a review's screened name) or
# raw command bytes: none is kept longer than a month (docs/compliance.md, "Retention").
PERSONAL_DATA_RETENTION_MAX_MS = 30 * _DAY_MS


@dataclass(frozen=True)
class TopicNames:
    commands: str
    validated: str
    outcomes: str
    dlq: str
    events: str
    ledger: str
    risk: str
    labels: str
    review: str
    blocklist: str
    merchants: str
    fx_rates: str
    payouts: str
    webhooks: str
    merchant_labels: str
    subscription_commands: str
    clock: str
    job_runs: str
    sanctions: str
    api_objects: str
    monitoring_activity: str
    monitoring_cases: str
    monitoring_decisions: str
    card_vault: str
    vault_reveals: str


def prefixed(settings: Settings, base: str) -> str:
    """A topic's name under the settings' namespace."""
    return f"{settings.namespace}.{base}" if settings.namespace else base


def topic_names(settings: Settings) -> TopicNames:
    names = (
        "payment-commands",
        "payment-commands-validated",
        "payment-outcomes",
        "payment-dlq",
        "payment-events",
        "ledger-entries",
        "payment-commands-risk",
        "fraud-labels",
        "fraud-review",
        "fraud-blocklist",
        "merchants",
        "fx-rates",
        "payouts",
        "webhook-deliveries",
        "fraud-labels-merchant",
        "subscription-commands",
        "clock",
        "job-runs",
        "sanctions-list",
        "api-objects",
        "monitoring-activity",
        "monitoring-cases",
        "monitoring-decisions",
        "card-vault",
        "vault-reveals",
    )
    return TopicNames(*(prefixed(settings, n) for n in names))


@dataclass(frozen=True)
class ClientIds:
    """Every consumer group and transactional id paystream's processes use, named here
    once: the clients are built from it, and deploy/kafka-security/acls.sh grants each
    (tests/unit/deploy/test_kafka_acls.py fails on one the script misses). A name that
    ends in "-" is a prefix: the process adds its worker name or a random suffix."""

    worker_group: str  # the worker's group: its offsets commit inside its transactions
    worker_transactions: str  # + the worker's name: one transactional producer per worker
    sink_group: str  # the ClickHouse sink
    rebuild_groups: str  # a read-model rebuild reads from offset 0 in a group of its own
    webhooks_group: str  # the webhook runner
    settle_transaction: str  # settle fences a concurrent settle
    payouts_transaction: str  # and payouts a concurrent payouts run
    migrate_transaction: str  # `paystream topics migrate-changelogs`: one transaction per partition
    reader_groups: str  # read_committed readers and topic followers (never commit)
    snapshot_groups: str  # read_to_end: restores, audits, the jobs' reads (never commit)
    console_groups: str  # the dashboard's reads of one event window (never commit)
    sizer_group: str  # the audit's reads of end offsets (never joins, never commits)


def client_ids(settings: Settings) -> ClientIds:
    app = settings.app_id
    return ClientIds(
        worker_group=app,
        worker_transactions=f"{app}-",
        sink_group=f"{app}-sink",
        rebuild_groups=f"{app}-rebuild-",
        webhooks_group=f"{app}-webhooks",
        settle_transaction=f"{app}-settle",
        payouts_transaction=f"{app}-payouts",
        migrate_transaction=f"{app}-migrate-changelogs",
        reader_groups=READER_GROUP_PREFIX,
        snapshot_groups=SNAPSHOT_GROUP_PREFIX,
        console_groups="paystream-console-",
        sizer_group="paystream-sizer",
    )


def tables_changelog_topic(app_id: str) -> str:
    """The one changelog of every table in TABLES."""
    return f"{app_id}-tables-changelog"


def per_table_changelog_topic(app_id: str, table: str) -> str:
    """A table's changelog before they shared one: read only to migrate from it."""
    return f"{app_id}-{table}-changelog"


def namespace_topics(settings: Settings) -> tuple[list[str], list[str]]:
    """Every topic a namespace may own, as (names, prefixes) for admin.delete_topics: its
    changelogs (the shared one and the per-table ones it may migrate from) and whatever
    starts with "<namespace>.". Refused without a namespace: that would name the pipeline's own."""
    if not settings.namespace:
        raise ValueError("no namespace: the un-namespaced topics are the pipeline's, never scratch")
    app = settings.app_id
    changelogs = [tables_changelog_topic(app), *(per_table_changelog_topic(app, t) for t in TABLES)]
    return changelogs, [prefixed(settings, "")]


def discard_namespace(settings: Settings, timeout_s: float = 30) -> None:
    """Delete every topic the namespace owns (`namespace_topics`) at a scratch run's end:
    a failure is a warning (admin.discard_topics), never the run's own error."""
    names, prefixes = namespace_topics(settings)
    admin.discard_topics(client_config(settings), names, prefixes=prefixes, timeout_s=timeout_s)


# The cleaner compacts a log once this share of it is superseded (the broker's default, 0.5,
# lets a changelog grow to twice its live keys before a pass).
CHANGELOG_DIRTY_RATIO = "0.2"


def changelog_config(settings: Settings) -> dict[str, str]:
    """Compaction that runs while the pipeline does: segments roll by time, so a restart's
    table recovery reads the live keys, not the history (settings.changelog_segment_ms)."""
    return {"segment.ms": str(settings.changelog_segment_ms), "min.cleanable.dirty.ratio": CHANGELOG_DIRTY_RATIO}


def declared_topics(settings: Settings) -> list[TopicSpec]:
    n, rf = settings.partitions, settings.replication_factor
    names = topic_names(settings)
    # payment-events (the event store) and ledger-entries (the books): kept forever, never compacted.
    # payouts (settle's instructions, beside their entries): kept forever too.
    # fraud-labels: the training history, kept a year (fraud-labels-merchant is only the hop to the keys
    # stage, kept as the other hops); fraud-blocklist, merchants and fx-rates are compacted.
    retention_ms = {
        names.commands: 7 * _DAY_MS,
        names.validated: 7 * _DAY_MS,
        names.outcomes: 30 * _DAY_MS,
        names.dlq: 30 * _DAY_MS,
        names.events: -1,
        names.ledger: -1,
        names.risk: 7 * _DAY_MS,
        names.labels: 365 * _DAY_MS,
        names.review: 30 * _DAY_MS,
        names.payouts: -1,
        names.webhooks: 30 * _DAY_MS,
        names.merchant_labels: 7 * _DAY_MS,
        # subscription-commands is the log the charges derive from (a replay re-derives them): kept forever.
        names.subscription_commands: -1,
        names.clock: 7 * _DAY_MS,
        # monitoring-activity is a hop, kept as the others; replaying it rebuilds the cases.
        names.monitoring_activity: 7 * _DAY_MS,
        # vault-reveals: the audit of every PAN reveal, kept past PCI DSS 10.5.1's year.
        names.vault_reveals: VAULT_REVEALS_RETENTION_MS,
    }
    # job-runs is compacted too: the latest run per job and day is what the scheduler reads at start.
    # sanctions-list too: the latest version of each listed party (a tombstone delists it).
    # api-objects: the merchant API's Customers and saved PaymentMethods (streams/api/objects.py).
    # monitoring-cases: one record per case id (a recomputed case is the same record); monitoring-decisions:
    # one per decision id, so compaction keeps every decision (the audit trail) and drops only a retried write.
    # card-vault: the latest sealed record per card token (a rewrap republishes it).
    # The AML records are compacted and deleted past their retention too ("compact,delete": by the
    # records' timestamps, a segment at a time, so a record goes at most a segment after its retention).
    aml_records = {names.monitoring_cases, names.monitoring_decisions}
    compacted = {
        names.blocklist,
        names.merchants,
        names.fx_rates,
        names.job_runs,
        names.sanctions,
        names.api_objects,
        names.monitoring_cases,
        names.monitoring_decisions,
        names.card_vault,
    }
    # RF 3 gets min.insync.replicas 2 (admin.min_insync_for); RF 1 keeps the broker default.
    min_isr = min_insync_for(rf) if rf > 1 else None
    pipeline = [
        TopicSpec(
            name,
            n,
            rf,
            compacted=True,
            retention_ms=AML_RECORDS_RETENTION_MS,
            min_insync_replicas=min_isr,
            extra_config={"cleanup.policy": "compact,delete"},
        )
        if name in aml_records
        else TopicSpec(name, n, rf, compacted=True, min_insync_replicas=min_isr)
        if name in compacted
        else TopicSpec(name, n, rf, retention_ms=retention_ms[name], min_insync_replicas=min_isr)
        for name in astuple(names)
    ]
    changelog = TopicSpec(
        tables_changelog_topic(settings.app_id),
        n,
        rf,
        compacted=True,
        min_insync_replicas=min_isr,
        extra_config=changelog_config(settings),
    )
    return [*pipeline, changelog]
