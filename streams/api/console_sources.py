"""What the console reads from, and writes to, the topics (the read models do not
hold it): a payment's events with their signatures and chain links (payment-events),
the review queue (fraud-review), webhook attempts (webhook-deliveries); it writes
review decisions (the review_resolve command `paystream fraud review --resolve`
writes, streams/client/fraud.py) and hand retries of given-up webhooks (one attempt
through connectors/webhooks, recorded on webhook-deliveries like the runner's).

Bounded: a payment's window is at most WINDOW_RECORDS_MAX records; the followed topics
keep at most REVIEWS_MAX reviews and NOTIFICATIONS_MAX notifications (the latest),
ATTEMPTS_MAX attempts each. Each call holds a lock: one reader at a time."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from connectors.kafka.clients import TopicFollower, command_producer, connection
from connectors.vault.keys import FileKeyStore
from connectors.webhooks import registry
from connectors.webhooks.delivery import Outbox, Pending, notifications, settle
from connectors.webhooks.sender import post
from schemas.codec import Codec, DecodeError
from schemas.ids import derive_notification_id
from schemas.partitioning import partition_for
from schemas.times import to_ms
from streams.api.console import Notification
from streams.jobs.webhooks import backoff_of, event_body, registry_path
from streams.settings import Settings, client_config
from streams.topics import client_ids, topic_names

WINDOW_RECORDS_MAX = 50_000
BACKTRACK_OFFSETS = 256  # read this far before the first event: its predecessor and markers
CLOCK_SKEW_MS = 60_000  # a record's broker timestamp may precede its event time this much
READ_TIMEOUT_S = 10.0
REVIEWS_MAX = 10_000
NOTIFICATIONS_MAX = 20_000
ATTEMPTS_MAX = 64
FOLLOW_BATCH_MAX = 5_000
FLUSH_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0

_EVENTS, _REVIEWS, _DELIVERIES, _VALIDATED = (
    Codec("PaymentEvent"),
    Codec("FraudReview"),
    Codec("WebhookDelivery"),
    Codec("ValidatedCommand"),
)


class SourceError(RuntimeError):
    """A topic the console could not read or write; the message is for the page."""


def public_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """The event signing keys' public halves by key id (what `paystream audit` uses)."""
    return {k: Ed25519PublicKey.from_public_bytes(b) for k, b in FileKeyStore(settings.keys_dir).public_keys().items()}


class KafkaSources:
    def __init__(self, settings: Settings) -> None:
        self.settings, self.names, self.conn = settings, topic_names(settings), client_config(settings)
        self._lock = threading.Lock()
        self._reviews: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._deliveries: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._review_follower = TopicFollower(self.conn, self.names.review, settings.partitions, FOLLOW_BATCH_MAX)
        self._delivery_follower = TopicFollower(self.conn, self.names.webhooks, settings.partitions, FOLLOW_BATCH_MAX)
        self._producer = command_producer(self.conn)

    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        return public_keys(self.settings)  # read at each use: a rotation adds a key

    # --- a payment's chain window ---

    def chain_window(
        self, payment_id: str, since: datetime, event_ids: set[str], to_end: bool = False
    ) -> tuple[int, list[dict[str, Any]]]:
        """The payment's partition of payment-events, decoded, from a little before
        `since` (by the records' timestamps) until every one of `event_ids` and a
        signed event after the last of them were read (`to_end`: until the log's end),
        at most WINDOW_RECORDS_MAX records."""
        partition = partition_for(payment_id.encode(), self.settings.partitions)
        topic = self.names.events
        # read_committed with end-of-partition events: a log may end on a transaction
        # marker, which is never delivered, so an offset can not tell the end.
        consumer = Consumer(
            connection(self.conn)
            | {
                "group.id": f"{client_ids(self.settings).console_groups}{uuid.uuid4().hex[:12]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "log_level": 3,
            }
        )
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=READ_TIMEOUT_S)
            found = consumer.offsets_for_times(
                [TopicPartition(topic, partition, to_ms(since) - CLOCK_SKEW_MS)], timeout=READ_TIMEOUT_S
            )[0].offset
            start = max(low, (high if found < 0 else found) - BACKTRACK_OFFSETS)
            window, missing = self._read(consumer, partition, start, high, event_ids, to_end)
            if missing and start > max(low, high - WINDOW_RECORDS_MAX):
                # Event times ahead of the broker's clock put the start past them: read the log's tail.
                window, _ = self._read(
                    consumer, partition, max(low, high - WINDOW_RECORDS_MAX), high, event_ids, to_end
                )
            return partition, window
        finally:
            consumer.close()

    def _read(
        self, consumer: Consumer, partition: int, start: int, high: int, event_ids: set[str], to_end: bool
    ) -> tuple[list[dict[str, Any]], set[str]]:
        """From `start`: the decoded window, and which of `event_ids` it lacks."""
        window: list[dict[str, Any]] = []
        missing = set(event_ids)
        if start >= high:
            return window, missing
        consumer.assign([TopicPartition(self.names.events, partition, start)])
        signed_after, deadline = False, time.monotonic() + READ_TIMEOUT_S
        while len(window) < WINDOW_RECORDS_MAX and (to_end or missing or not signed_after):
            if time.monotonic() > deadline:
                raise SourceError(f"payment-events[{partition}]: not read within {READ_TIMEOUT_S:.0f} s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise SourceError(f"payment-events: {msg.error()}")
            try:
                event = _EVENTS.decode(msg.value())
            except DecodeError as e:
                event = {"event_id": None, "chain_seq": None, "undecodable": str(e)[:100]}
            window.append(event)
            missing.discard(event["event_id"])
            signed_after = not missing and event.get("signature") is not None
            if msg.offset() + 1 >= high:
                break
        return window, missing

    # --- reviews ---

    def reviews(self) -> list[dict[str, Any]]:
        """The latest review record per payment (the newest REVIEWS_MAX payments)."""
        with self._lock:
            self._follow(self._review_follower, self._take_review)
            return list(self._reviews.values())

    def _take_review(self, msg: Message) -> None:
        try:
            r = _REVIEWS.decode(msg.value())
        except DecodeError:
            return
        self._reviews[r["payment_id"]] = r
        self._reviews.move_to_end(r["payment_id"])
        while len(self._reviews) > REVIEWS_MAX:
            self._reviews.popitem(last=False)

    def resolve(self, key: bytes, command: dict[str, Any]) -> None:
        """Publish a review_resolve ValidatedCommand, as the CLI does, and wait for it."""
        self._produce(self.names.validated, key, _VALIDATED.encode(command, check=True))

    # --- webhook deliveries ---

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            self._follow(self._delivery_follower, self._take_delivery)
            return [d for attempts in self._deliveries.values() for d in attempts]

    def _take_delivery(self, msg: Message) -> None:
        try:
            d = _DELIVERIES.decode(msg.value())
        except DecodeError:
            return
        attempts = self._deliveries.setdefault(d["notification_id"], [])
        attempts[:] = [a for a in attempts if a["delivery_id"] != d["delivery_id"]][-(ATTEMPTS_MAX - 1) :] + [d]
        self._deliveries.move_to_end(d["notification_id"])
        while len(self._deliveries) > NOTIFICATIONS_MAX:
            self._deliveries.popitem(last=False)

    def retry(self, n: Notification, now: datetime) -> dict[str, Any]:
        """One more attempt of a given-up notification, now: its payload rebuilt from
        its payment event (the runner's, byte for byte), signed and sent; the attempt
        recorded on webhook-deliveries. Failing again, it stays given up."""
        last = n.last
        endpoint = next(
            (
                e
                for e in registry.load(registry_path(self.settings)).of(last["merchant_id"])
                if e.endpoint_id == last["endpoint_id"]
            ),
            None,
        )
        if endpoint is None:
            raise SourceError("that endpoint is no longer registered")
        # The event came at most the give-up horizon before its last attempt.
        since = last["attempted_at"] - timedelta(seconds=backoff_of(self.settings).give_up_after_s)
        _, window = self.chain_window(last["payment_id"], since, set(), to_end=True)
        events = [e for e in window if e.get("payment_id") == last["payment_id"]]
        event = next(
            (
                e
                for e in events
                if derive_notification_id(e["event_id"], endpoint.endpoint_id) == last["notification_id"]
            ),
            None,
        )
        if event is None:
            raise SourceError("the notification's payment event was not found")
        # The body the runner sent: a close names its opening (PaymentEvent v5 dispute_event_id).
        body = event_body(event, event.get("dispute_event_id"))
        [note] = notifications(event, (endpoint,), to_ms(event["occurred_at"]), body)
        # This attempt follows the recorded ones (its number names its delivery id).
        pending = Pending(note, attempts=last["attempt"], next_ms=to_ms(now))
        outbox = Outbox(MappingProxyType({(endpoint.endpoint_id, note.payment_id): (pending,)}))
        store = FileKeyStore(self.settings.keys_dir)

        async def send() -> Any:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                return await post(session, store, pending, int(now.timestamp()), HTTP_TIMEOUT_S)

        result = asyncio.run(send())
        _, record = settle(
            outbox,
            pending,
            to_ms(now),
            result.ok,
            backoff_of(self.settings),
            result.http_status,
            result.error,
            result.key_id,
        )
        self._produce(self.names.webhooks, record["payment_id"].encode(), _DELIVERIES.encode(record, check=True))
        return record

    # --- plumbing ---

    def _follow(self, follower: TopicFollower, apply: Any) -> None:
        try:
            while follower.poll(apply) >= FOLLOW_BATCH_MAX:
                pass
        except Exception as e:  # the page says what it could not read
            raise SourceError(f"{follower.topic}: {type(e).__name__}: {str(e)[:200]}") from None

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        failed: list[Any] = []
        self._producer.produce(
            topic, key=key, value=value, on_delivery=lambda err, _m: failed.append(err) if err is not None else None
        )
        if self._producer.flush(FLUSH_TIMEOUT_S) != 0 or failed:
            raise SourceError(f"not written to {topic}: {failed[0] if failed else 'timed out'}")

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT_S)
