"""Every topic of the topology, declared in one place.

All pipeline topics share one partition count: a stage writes to the same
partition number it read from, inside that source partition's transaction
(streams/eos.py), so every output topic needs at least as many partitions.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from connectors.kafka.admin import TopicSpec
from streams.settings import Settings

# Faust names a table's changelog "<app id>-<table>-changelog".
TABLES = ("payments", "payments-dedup", "payments-timers")

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicNames:
    commands: str
    validated: str
    outcomes: str
    dlq: str
    events: str


def topic_names(settings: Settings) -> TopicNames:
    prefix = f"{settings.namespace}." if settings.namespace else ""
    names = ("payment-commands", "payment-commands-validated", "payment-outcomes", "payment-dlq", "payment-events")
    return TopicNames(*(prefix + n for n in names))


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"


def declared_topics(settings: Settings) -> list[TopicSpec]:
    n, rf = settings.partitions, settings.replication_factor
    names = topic_names(settings)
    # payment-events is the event store: kept forever, never compacted.
    retention_ms = {names.commands: 7 * _DAY_MS, names.validated: 7 * _DAY_MS, names.outcomes: 30 * _DAY_MS,
                    names.dlq: 30 * _DAY_MS, names.events: -1}
    pipeline = [TopicSpec(name, n, rf, retention_ms=retention_ms[name]) for name in astuple(names)]
    changelogs = [TopicSpec(changelog_topic(settings.app_id, t), n, rf, compacted=True) for t in TABLES]
    return pipeline + changelogs
