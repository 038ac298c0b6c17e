"""The merchant registry read back from the compacted `merchants` topic."""

from __future__ import annotations

import logging

from connectors.kafka.clients import MissingTopic, read_to_end
from schemas.codec import Codec, DecodeError
from streams.domain import merchants
from streams.settings import Settings, client_config
from streams.topics import topic_names

log = logging.getLogger("paystream.merchants")


MERCHANT_CODEC = Codec("MerchantRecord")


def read_registry(settings: Settings) -> merchants.Registry:
    """The merchant registry as the topic holds it now (every record folded, in offset
    order); an undecodable record is skipped and logged."""
    registry: merchants.Registry = {}
    try:
        for msg in read_to_end(client_config(settings), [topic_names(settings).merchants], settings.partitions):
            value = msg.value()
            try:
                record = None if value is None else MERCHANT_CODEC.decode(value)
            except DecodeError as e:
                log.warning("merchants: skipped an undecodable record at offset %d: %s", msg.offset(), e.reason)
                continue
            registry = merchants.fold(registry, msg.key().decode(), record)
    except MissingTopic:
        return {}
    return registry
