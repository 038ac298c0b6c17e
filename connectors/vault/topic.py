"""The vault as Kafka-native state: sealed cards on the compacted `card-vault` topic.

- **Written** in the transaction that forwards the token: ingest seals each new card
  (connectors/vault/vault.py `CardSealer`) and its batch sends the records with the
  validated commands, so no token travels without its sealed card committed. Outside
  the pipeline (`paystream produce --tokenize`, `subscriptions create --card-number`)
  `publish_sealed` writes them, acknowledged, before any command is published.
- **Read** by every worker: `TopicVault` follows the whole topic (read_committed,
  outside any group, as the blocklist is read) into a `SealedCards` map of records
  still encrypted, at most `max_cards` of them; a token not in the map (pushed out, or
  sealed by another worker a moment ago) is read through from its partition within
  `read_through_s`.
- **Re-wrapped** in place: `rewrap_topic` republishes every record not under the
  active master key under the same token; compaction drops the old ones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from connectors.kafka.clients import Connection, MissingTopic, TopicFollower, command_producer, committed_reader, end_offsets, read_to_end
from connectors.vault.keys import VAULT_MASTER, KeyStore
from connectors.vault.tokenizer import TOKEN_PATTERN, StoreTokenizer
from connectors.vault.vault import CardSealer, Revealed, RewrapReport, SealedCards, VaultError, card_of, check_token, \
    master_key_id, open_record, rewrap
from schemas.partitioning import partition_for

FOLLOW_BATCH_MAX = 1_000  # records applied per poll of the topic
PUBLISH_TIMEOUT_S = 30.0
REWRAP_TIMEOUT_S = 600.0  # per partition


class TopicVault:
    """Every sealed card of the card-vault topic, for ingest (what is held already)
    and the provider edge (reveal). It connects on first use: building a worker needs
    no broker."""

    def __init__(self, conn: Connection, topic: str, partitions: int, keys: KeyStore, *, max_cards: int,
                 read_through_s: float) -> None:
        assert read_through_s > 0
        self.conn, self.topic, self.partitions = conn, topic, partitions
        self._keys = keys
        self._tokenizer = StoreTokenizer(keys)
        self.cards = SealedCards(max_cards)
        self.read_through_s = read_through_s
        self.follower = TopicFollower(conn, topic, partitions, FOLLOW_BATCH_MAX)
        self.unusable = 0  # records whose key is no token: counted (the worker's dead-letter metric), not applied

    def __repr__(self) -> str:
        return f"TopicVault({self.topic!r}, cards={len(self.cards)}, token_key={self._tokenizer.key_id!r})"

    def ensure_loaded(self) -> None:
        """Read the whole topic once (before the first batch that needs it)."""
        self.follower.start(self._apply)

    def poll(self) -> int:
        return self.follower.poll(self._apply)

    def sealer(self) -> CardSealer:
        """A tokenizer for one ingest batch: it seals the cards not held yet."""
        return CardSealer(self._keys, self._tokenizer, lambda token: token in self.cards)

    def sealed(self, token: str) -> bytes:
        """The token's sealed record: from the map, else read through from the topic."""
        check_token(token)
        self.ensure_loaded()
        blob = self.cards.get(token)
        if blob is None:
            blob = self._read_through(token)
        if blob is None:
            raise VaultError(token, "no such token on the card-vault topic")
        return blob

    def reveal(self, token: str) -> Revealed:
        """The PAN of a token. Only the provider edge calls this; never log the result."""
        return open_record(self._keys, token, self.sealed(token))

    def _apply(self, msg: Any) -> None:
        key = msg.key()
        token = key.decode("ascii", "replace") if key is not None else ""
        if not TOKEN_PATTERN.match(token):
            self.unusable += 1
            return
        self.cards.fold(token, msg.value())

    def _read_through(self, token: str) -> bytes | None:
        """The latest record of `token` on its partition, read to the partition's end
        now; VaultError when that takes longer than `read_through_s`. While the map has
        pushed nothing out it holds all the follower applied, so only the partition's
        tail past the follower is read (an unknown token costs that tail, not the log)."""
        partition = partition_for(token.encode(), self.partitions)
        start = 0 if self.cards.evicted else self.follower.position(partition)
        deadline = time.monotonic() + self.read_through_s
        consumer = committed_reader(self.conn, [])
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=self.read_through_s)
            found: bytes | None = None
            key = token.encode()
            tp = (self.topic, partition)
            for msg in read_to_end(self.conn, [self.topic], self.partitions, ends={tp: high}, starts={tp: start},
                                   timeout_s=max(0.1, deadline - time.monotonic())):
                if msg.key() == key:
                    found = msg.value()
        except (KafkaException, TimeoutError, MissingTopic) as e:
            raise VaultError(token, f"card-vault not read within {self.read_through_s}s: {str(e)[:200]}") from None
        finally:
            consumer.close()
        if found is not None:
            self.cards.fold(token, found)
        return found


def publish_sealed(conn: Connection, topic: str, sealed: Mapping[str, bytes], partitions: int,
                   timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
    """Sealed records onto the card-vault topic, each acknowledged by every in-sync
    replica before this returns (callers publish the tokens only after)."""
    if not sealed:
        return
    producer = command_producer(conn, linger_ms=0)
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(f"{msg.key().decode()}: {err}")

    for token, blob in sealed.items():
        producer.produce(topic, key=token.encode(), value=blob, partition=partition_for(token.encode(), partitions),
                         on_delivery=delivered)
    left = producer.flush(timeout_s)
    if left or failed:
        raise VaultError("-", f"{left} sealed card(s) not acknowledged within {timeout_s}s; {'; '.join(failed[:3])}"[:400])


IMPORT_CHUNK_MAX = 10_000  # records held and published at a time by import_local_vault


def import_local_vault(path: Path, conn: Connection, topic: str, partitions: int) -> int:
    """Every record of a local vault file (the RocksDB `<data_dir>/vault` of earlier
    versions: the same envelopes) onto the card-vault topic under its token, checked
    and unchanged; how many. Read-only on the file; a malformed record stops the import
    with a VaultError naming its token (what was published stays: run it again)."""
    from connectors.vault.scan import rocksdb_items

    if not (path / "CURRENT").is_file():
        raise VaultError("-", f"{path} is not a RocksDB vault (no CURRENT file)")
    chunk: dict[str, bytes] = {}
    count = 0
    for key, blob in rocksdb_items(path):
        token = key.decode("ascii", "replace")
        card_of(token, blob)  # a token and a well-formed record, or VaultError
        chunk[token] = blob
        if len(chunk) >= IMPORT_CHUNK_MAX:
            publish_sealed(conn, topic, chunk, partitions)
            count, chunk = count + len(chunk), {}
    publish_sealed(conn, topic, chunk, partitions)
    return count + len(chunk)


def rewrap_topic(conn: Connection, topic: str, partitions: int, keys: KeyStore,
                 timeout_s: float = REWRAP_TIMEOUT_S) -> RewrapReport:
    """Re-wrap every card's data key not under the active vault-master key (after a
    rotation): the latest record of each token is read, one partition at a time (so
    memory holds one partition's cards), and republished under the same token. The
    PAN ciphertext is untouched; an interrupted run is resumed by running it again.
    Workers may run meanwhile: a card ingest seals again at the same time is the same
    PAN under a fresh data key, and either record reveals it."""
    active = keys.active(VAULT_MASTER).key_id
    consumer = committed_reader(conn, [])
    try:
        ends = end_offsets(consumer, topic, partitions)
    finally:
        consumer.close()
    rewrapped = current = 0
    in_use: dict[str, int] = {}
    for partition, end in sorted(ends.items()):
        latest: dict[str, bytes | None] = {}
        for msg in read_to_end(conn, [topic], partitions, ends={(topic, partition): end}, timeout_s=timeout_s):
            key = msg.key()
            if key is not None and TOKEN_PATTERN.match(key.decode("ascii", "replace")):
                latest[key.decode()] = msg.value()
        moved: dict[str, bytes] = {}
        for token, blob in latest.items():
            if blob is None:
                continue
            again = rewrap(keys, token, blob)
            if again is None:
                current += 1
            else:
                moved[token] = again
            key_id = master_key_id(token, again or blob)
            in_use[key_id] = in_use.get(key_id, 0) + 1
        publish_sealed(conn, topic, moved, partitions)
        rewrapped += len(moved)
    return RewrapReport(rewrapped, current, active, in_use)
