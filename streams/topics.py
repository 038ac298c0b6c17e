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
TABLES = ("payments", "payments-dedup")

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicNames:
    commands: str
    validated: str
    outcomes: str
    dlq: str


def topic_names(settings: Settings) -> TopicNames:
    prefix = f"{settings.namespace}." if settings.namespace else ""
    return TopicNames(*(prefix + n for n in ("payment-commands", "payment-commands-validated", "payment-outcomes", "payment-dlq")))


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"


def declared_topics(settings: Settings) -> list[TopicSpec]:
    n, rf = settings.partitions, settings.replication_factor
    names = topic_names(settings)
    retention_days = {names.commands: 7, names.validated: 7, names.outcomes: 30, names.dlq: 30}
    pipeline = [TopicSpec(name, n, rf, retention_ms=retention_days[name] * _DAY_MS) for name in astuple(names)]
    changelogs = [TopicSpec(changelog_topic(settings.app_id, t), n, rf, compacted=True) for t in TABLES]
    return pipeline + changelogs
