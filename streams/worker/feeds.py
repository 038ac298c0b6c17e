"""The sanctions list as workers and jobs hold it: the shipped list
(connectors/sanctions/list.toml) with the compacted `sanctions-list` topic applied over
it, in offset order (an entry per uid, a tombstone delists). Kafka IO only; the
matching is streams/domain/sanctions.py's.

A worker follows the topic as it follows the fraud blocklist (both through
connectors.kafka.clients.TopicFollower): all of it before its first screen, then what is new every
SANCTIONS_POLL_S, so a list update reaches every worker within seconds. A job (the
payouts run, the KYC checks, the CLI) reads a snapshot with `read_list`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from connectors.kafka.clients import MissingTopic, TopicFollower, read_to_end
from schemas.codec import Codec, DecodeError
from streams import metrics, topics
from streams.domain.sanctions import Entry, SanctionsError, SanctionsList, load_list
from streams.settings import Settings, client_config

log = logging.getLogger("paystream.sanctions")

ENTRY_CODEC = Codec("SanctionsEntry")
SANCTIONS_POLL_S = 1.0
POLL_BATCH_MAX = 1_000


def apply_message(slist: SanctionsList, key: bytes | None, value: bytes | None) -> bool:
    """One topic message applied to `slist`; False (and nothing applied) when unusable."""
    if not key:
        return False
    try:
        uid = key.decode()
        record = None if value is None else ENTRY_CODEC.decode(value)
        slist.apply(uid, None if record is None else Entry.from_record(record))
        if record is not None:
            slist.version = record["list_version"]
    except (UnicodeDecodeError, DecodeError, SanctionsError):
        return False
    return True


def fold(
    messages: Iterable[tuple[bytes | None, bytes | None]], base: SanctionsList | None = None
) -> tuple[SanctionsList, int]:
    """The list after (key, value) messages in offset order over `base` (default: the
    shipped list), and how many could not be applied."""
    slist = base if base is not None else load_list()
    bad = sum(not apply_message(slist, k, v) for k, v in messages)
    return slist, bad


def read_list(settings: Settings) -> tuple[SanctionsList, int]:
    """A snapshot: the shipped list with the whole topic applied (no topic yet: the shipped list)."""

    try:
        msgs = [
            (m.key(), m.value())
            for m in read_to_end(client_config(settings), [topics.topic_names(settings).sanctions], settings.partitions)
        ]
    except MissingTopic:
        msgs = []
    return fold(msgs)


class SanctionsReader:
    """A worker's list, kept current from the topic (see the module doc). An unusable
    record is counted as a dead letter of stage "sanctions", not applied."""

    def __init__(self, settings: Settings) -> None:
        self.list = load_list()
        self.follower = TopicFollower(
            client_config(settings), topics.topic_names(settings).sanctions, settings.partitions, POLL_BATCH_MAX
        )

    def ensure_loaded(self) -> SanctionsList:
        if self.follower.start(self._apply):
            log.info("sanctions list %s loaded: %d entries", self.list.version, len(self.list))
        return self.list

    def poll(self) -> int:
        return self.follower.poll(self._apply)

    def _apply(self, msg: Any) -> None:
        if not apply_message(self.list, msg.key(), msg.value()):
            metrics.DEAD_LETTERS.labels(stage="sanctions", reason="unusable_entry").inc()
