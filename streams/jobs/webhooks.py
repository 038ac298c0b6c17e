"""`paystream webhooks run`: merchants' webhooks delivered from `payment-events`.

A process of its own (consumer group `<app_id>-webhooks`), never an agent in the
payment worker: an HTTP call must not sit inside a payments transaction. It reads
`payment-events` read_committed (every fact about a payment, expiries included, each
with a stable `event_id` the notification id derives from; `payment-outcomes` also
answers refused commands, which change no payment), turns each event into one
notification per endpoint of its merchant (`<data_dir>/webhooks.json`, re-read when
it changes) whose body is the event as Stripe's `Event` (streams/domain/stripe_shapes.py,
the builder `GET /v1/events` answers with), and sends them with the pure schedule of connectors/webhooks/delivery.py
(in order per payment and endpoint, exponential backoff by event time, given up
after 3 days). Every attempt is a WebhookDelivery record on `webhook-deliveries`.

At least once: the group's offset moves past an event only once all its notifications
are delivered or given up and those attempts are flushed to the topic
(connectors/webhooks/progress.py), so a crash or restart re-delivers what was open.
Bounded: at most `max_pending` notifications open (the consumer pauses beyond), at
most `MAX_CONCURRENT` HTTP calls at once, each at most `http_timeout_s` of real time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from connectors.kafka.clients import require_topics
from connectors.vault.keys import FileKeyStore, KeyStore
from connectors.webhooks import registry
from connectors.webhooks.delivery import Backoff, Outbox, enqueue, notifications
from connectors.webhooks.progress import EventClock, Offsets
from connectors.webhooks.sender import MAX_CONCURRENT, deliver_due
from schemas.codec import Codec, DecodeError
from schemas.times import to_ms
from streams.domain.stripe_shapes import event_object
from streams.settings import Settings, client_config
from streams.topics import client_ids, topic_names

log = logging.getLogger("paystream.webhooks")

EVENT_CODEC = Codec("PaymentEvent")
DELIVERY_CODEC = Codec("WebhookDelivery")
MAX_PENDING = 1_000  # open notifications before the consumer pauses
READ_BATCH = 500
IDLE_WAIT_S = 0.05  # a quiet loop's pause before it looks for records and due retries again
FLUSH_TIMEOUT_S = 30.0
REGISTRY_CHECK_S = 1.0
# Payments with an open dispute whose opening this runner saw: a close's Event names
# its dispute by the opening's id, which a close carries since PaymentEvent v5; for
# disputes opened before, the runner remembers. Past this, the oldest are forgotten.
MAX_OPENINGS = 100_000
_CLOSES = ("dispute_won", "dispute_lost")


def event_body(event: dict, opened_event_id: str | None = None) -> bytes:
    """A payment event's webhook body: Stripe's Event, the object `GET /v1/events/{id}` answers."""
    row = event | {"opened_event_id": opened_event_id} if event["type"] in _CLOSES else event
    return json.dumps(event_object(row), sort_keys=True, separators=(",", ":")).encode()


def registry_path(settings: Settings) -> Path:
    return settings.data_dir / "webhooks.json"


def backoff_of(settings: Settings) -> Backoff:
    base, cap, horizon = (
        settings.webhook_backoff_base_s,
        settings.webhook_backoff_max_delay_s,
        settings.webhook_give_up_after_s,
    )
    if not base <= cap <= horizon:
        raise ValueError(
            f"webhook backoff needs base_s <= max_delay_s <= give_up_after_s, got {base}, {cap}, {horizon}"
        )
    return Backoff(base, cap, horizon)


@dataclass
class RunStats:
    events: int = 0
    notifications: int = 0
    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    gave_up: int = 0
    undecodable: int = 0
    commits: int = 0


class WebhookRunner:
    """One runner process's loop; `run(stop)` until `stop` is set. Cancelling the task
    is a crash: nothing more is committed, a new runner re-delivers what was open."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: KeyStore | None = None,
        max_pending: int = MAX_PENDING,
        http_timeout_s: float = 10.0,
    ) -> None:
        assert 1 <= max_pending <= 100_000 and 0 < http_timeout_s <= 60
        self.settings = settings
        self.topic = topic_names(settings).events
        self.deliveries_topic = topic_names(settings).webhooks
        self.store = store or FileKeyStore(settings.keys_dir)
        self.backoff = backoff_of(settings)
        self.max_pending = max_pending
        self.http_timeout_s = http_timeout_s
        self.stats = RunStats()
        self.outbox = Outbox()
        self.offsets = Offsets()
        self.clock = EventClock()
        self.registry = registry.Registry()
        self._registry_mtime_ns: int | None = None
        self._registry_checked_s = float("-inf")
        self._send_failures = 0
        self._committed: dict[int, int] = {}
        self._openings: OrderedDict[str, str] = OrderedDict()  # payment_id -> its open dispute's opening event

    # --- Kafka ---

    def _consumer(self) -> Consumer:
        consumer = Consumer(
            client_config(self.settings)
            | {
                "group.id": client_ids(self.settings).webhooks_group,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        require_topics(consumer, [self.topic, self.deliveries_topic])
        consumer.subscribe([self.topic], on_revoke=self._on_revoke)
        return consumer

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [tp.partition for tp in partitions]
        self.offsets.revoke(revoked)
        for p in revoked:
            self._committed.pop(p, None)

    def _producer(self) -> Producer:
        return Producer(client_config(self.settings) | {"enable.idempotence": True, "acks": "all", "log_level": 3})

    def _delivered(self, err: object, _msg: object) -> None:
        if err is not None:
            self._send_failures += 1

    # --- the loop ---

    def _reload_registry(self, mono_s: float) -> None:
        if mono_s - self._registry_checked_s < REGISTRY_CHECK_S:
            return
        self._registry_checked_s = mono_s
        path = registry_path(self.settings)
        mtime_ns = path.stat().st_mtime_ns if path.exists() else None
        if mtime_ns != self._registry_mtime_ns:
            try:
                self.registry = registry.load(path)
                self._registry_mtime_ns = mtime_ns
            except registry.RegistryError as e:  # keep the last good registry; the file is being fixed
                log.error("webhooks: %s", e)

    def _take(self, partition: int, offset: int, raw: bytes | None) -> None:
        self.stats.events += 1
        try:
            event = EVENT_CODEC.decode(raw or b"")
        except DecodeError as e:  # the pipeline wrote it: a bug to look at, never a stop
            self.stats.undecodable += 1
            log.error("webhooks: undecodable payment event at %s/%d: %s", partition, offset, e)
            self.offsets.read(partition, offset, [])
            return
        created_ms = to_ms(event["occurred_at"])
        self.clock.observe(created_ms, time.monotonic())
        body = self._body(event)  # every event: an opening is remembered for its close
        notes = notifications(event, self.registry.of(event["merchant_id"]), created_ms, body)
        fresh = set(self.offsets.read(partition, offset, [n.notification_id for n in notes]))
        self.outbox = enqueue(self.outbox, [n for n in notes if n.notification_id in fresh])
        self.stats.notifications += len(fresh)

    def _body(self, event: dict) -> bytes:
        pid = event["payment_id"]
        if event["type"] == "dispute_opened":
            self._openings[pid] = event["event_id"]
            self._openings.move_to_end(pid)
            while len(self._openings) > MAX_OPENINGS:
                self._openings.popitem(last=False)
        if event["type"] not in _CLOSES:
            return event_body(event)
        # A close names its opening (PaymentEvent v5); one of a dispute opened before that, the runner's memory.
        return event_body(event, event.get("dispute_event_id") or self._openings.get(pid))

    def _record(self, producer: Producer, records: list[dict]) -> None:
        """Every attempt onto webhook-deliveries, flushed; only then do given-up and
        delivered notifications count as done."""
        for r in records:
            producer.produce(
                self.deliveries_topic,
                key=r["payment_id"].encode(),
                value=DELIVERY_CODEC.encode(r),
                on_delivery=self._delivered,
            )
        if producer.flush(FLUSH_TIMEOUT_S) or self._send_failures:
            raise RuntimeError(
                f"webhook-deliveries: {self._send_failures} attempt record(s) not written; stopping uncommitted"
            )
        for r in records:
            self.stats.attempts += 1
            setattr(self.stats, r["status"], getattr(self.stats, r["status"]) + 1)
            if r["status"] != "failed":
                self.offsets.done(r["notification_id"])

    def _commit(self, consumer: Consumer) -> None:
        ready = {p: o for p, o in self.offsets.committable().items() if self._committed.get(p) != o}
        if ready:
            try:
                consumer.commit(
                    offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(ready.items())], asynchronous=False
                )
            except KafkaException as e:  # a rebalance under way: the next round commits (a later offset is as safe)
                log.warning("webhooks: commit deferred: %s", e)
                return
            self._committed |= ready
            self.stats.commits += 1

    async def run(self, stop: asyncio.Event) -> RunStats:
        consumer, producer = self._consumer(), self._producer()
        paused = False
        try:
            async with aiohttp.ClientSession() as session:
                while not stop.is_set():
                    mono_s = time.monotonic()
                    self._reload_registry(mono_s)
                    full = self.offsets.outstanding >= self.max_pending
                    if full != paused:  # backpressure: the consumer keeps its group while paused
                        (consumer.pause if full else consumer.resume)(consumer.assignment())
                        paused = full
                    # librdkafka fetches in the background: take what is there, never block the loop.
                    msgs = consumer.consume(READ_BATCH, 0)
                    for msg in msgs:
                        if msg.error() is None:
                            self._take(msg.partition(), msg.offset(), msg.value())
                        else:
                            log.warning("webhooks: consumer: %s", msg.error())
                    heads = [q[0].next_ms for q in self.outbox.queues.values()]
                    if not msgs and not (heads and min(heads) <= self.clock.now_ms(time.monotonic())):
                        await asyncio.sleep(IDLE_WAIT_S)  # quiet: nothing read, nothing due
                        continue
                    now_ms = self.clock.now_ms(time.monotonic())
                    self.outbox, records = await deliver_due(
                        session,
                        self.store,
                        self.outbox,
                        now_ms,
                        self.backoff,
                        limit=MAX_CONCURRENT * 4,
                        signed_at_s=int(time.time()),
                        timeout_s=self.http_timeout_s,
                    )
                    if records:
                        self._record(producer, records)
                    self._commit(consumer)
        finally:
            consumer.close()  # no auto commit: only _commit moves the group's offset
        return self.stats
