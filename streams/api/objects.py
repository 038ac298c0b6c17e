"""The merchant API's own objects (Customers, saved PaymentMethods): what no payment
command carries, kept on the compacted `api-objects` topic, keyed by object id, one
JSON document per object (a tombstone deletes it).

Every API process reads the whole topic and then tails it, so all instances answer
alike and a restart loses nothing. A write waits until this process's reader has
applied it (read-your-writes), and only the reader changes the view: an echo of an
older write can never overwrite a newer one. Each document names its merchant, and
`get` answers only the merchant's own (another's is unknown, as Stripe answers).

The view is in memory (like the merchants table of a worker): bounded by what the
merchants store, never by traffic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from connectors.kafka.clients import POLL_TIMEOUT_S, committed_reader, consume_available, end_offsets, id_assigned
from streams.api.bus import BusUnavailable
from streams.settings import Settings, client_config
from streams.topics import topic_names

log = logging.getLogger(__name__)

WRITE_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0


class Objects(Protocol):
    async def get(self, merchant_id: str, object_id: str) -> dict[str, Any] | None:
        """The merchant's object, or None (unknown, deleted, or another merchant's)."""

    async def put(self, doc: dict[str, Any]) -> None:
        """Store `doc` (its `id` and `merchant_id` name it); BusUnavailable if not stored."""

    async def delete(self, merchant_id: str, object_id: str) -> None:
        """Forget the merchant's object; BusUnavailable if not done."""

    async def list(
        self, merchant_id: str, kind: str, where: Callable[[dict[str, Any]], bool] = lambda _d: True
    ) -> list[dict[str, Any]]:
        """The merchant's objects of `kind` (`object` field) that `where` keeps, by id."""


class _View:
    """The documents by id, with a per-merchant index; changed by one thread."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.by_merchant: dict[str, set[str]] = {}
        self.lock = threading.Lock()

    def apply(self, object_id: str, doc: dict[str, Any] | None) -> None:
        with self.lock:
            old = self.docs.pop(object_id, None)
            if old is not None:
                self.by_merchant.get(old["merchant_id"], set()).discard(object_id)
            if doc is not None:
                self.docs[object_id] = doc
                self.by_merchant.setdefault(doc["merchant_id"], set()).add(object_id)

    def get(self, merchant_id: str, object_id: str) -> dict[str, Any] | None:
        with self.lock:
            doc = self.docs.get(object_id)
        return doc if doc is not None and doc["merchant_id"] == merchant_id else None

    def list(self, merchant_id: str, kind: str, where: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock:
            docs = [self.docs[i] for i in sorted(self.by_merchant.get(merchant_id, ()))]
        return [d for d in docs if d["object"] == kind and where(d)]


class MemoryObjects:
    """One process's objects, for unit tests and the OpenAPI document's app."""

    def __init__(self) -> None:
        self._view = _View()

    async def get(self, merchant_id: str, object_id: str) -> dict[str, Any] | None:
        return self._view.get(merchant_id, object_id)

    async def put(self, doc: dict[str, Any]) -> None:
        self._view.apply(doc["id"], json.loads(json.dumps(doc)))  # a copy, as the topic would give back

    async def delete(self, merchant_id: str, object_id: str) -> None:
        if self._view.get(merchant_id, object_id) is not None:
            self._view.apply(object_id, None)

    async def list(
        self, merchant_id: str, kind: str, where: Callable[[dict[str, Any]], bool] = lambda _d: True
    ) -> list[dict[str, Any]]:
        return self._view.list(merchant_id, kind, where)


class KafkaObjects:
    """The topic's reader (a daemon thread, read_committed, from the beginning) and an
    idempotent producer (acks=all). A write is acknowledged by the brokers, then
    awaited until the reader passed its offset."""

    def __init__(self, settings: Settings) -> None:
        conf = client_config(settings)
        self._topic = topic_names(settings).api_objects
        self._view = _View()
        self._producer = id_assigned(conf, linger_ms=0)  # the first write must not wait for its id
        self._consumer = committed_reader(conf, [])
        ends = end_offsets(self._consumer, self._topic, settings.partitions)
        self._consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in ends])
        self._applied = dict.fromkeys(ends, 0)  # partition -> next offset to apply
        self._initial_ends = ends
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, name="api-objects", daemon=True),
            threading.Thread(target=self._serve_producer, name="api-objects-producer", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _caught_up(self, targets: dict[int, int]) -> bool:
        return all(self._applied.get(p, 0) >= off for p, off in targets.items())

    async def _wait_applied(self, targets: dict[int, int], timeout_s: float) -> None:
        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: self._caught_up(targets), timeout_s)

        if not await asyncio.to_thread(wait):
            raise BusUnavailable("the api-objects reader is behind")

    async def _ready(self) -> None:
        await self._wait_applied(self._initial_ends, READY_TIMEOUT_S)

    async def get(self, merchant_id: str, object_id: str) -> dict[str, Any] | None:
        await self._ready()
        return self._view.get(merchant_id, object_id)

    async def list(
        self, merchant_id: str, kind: str, where: Callable[[dict[str, Any]], bool] = lambda _d: True
    ) -> list[dict[str, Any]]:
        await self._ready()
        return self._view.list(merchant_id, kind, where)

    async def put(self, doc: dict[str, Any]) -> None:
        await self._write(doc["id"], json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())

    async def delete(self, merchant_id: str, object_id: str) -> None:
        if await self.get(merchant_id, object_id) is not None:
            await self._write(object_id, None)

    async def _write(self, object_id: str, value: bytes | None) -> None:
        await self._ready()
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[tuple[int, int]] = loop.create_future()

        def on_delivery(error: Any, msg: Any) -> None:
            result = BusUnavailable(str(error)) if error is not None else (msg.partition(), msg.offset())
            loop.call_soon_threadsafe(_settle, acked, result)

        try:
            self._producer.produce(self._topic, key=object_id.encode(), value=value, on_delivery=on_delivery)
        except BufferError:
            raise BusUnavailable("producer queue full") from None
        partition, offset = await asyncio.wait_for(acked, WRITE_TIMEOUT_S)
        await self._wait_applied({partition: offset + 1}, WRITE_TIMEOUT_S)

    def _serve_producer(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def _read(self) -> None:
        while not self._stop.is_set():
            msgs = consume_available(self._consumer, 500, POLL_TIMEOUT_S)
            positions = {}
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("api-objects reader: %s", err.name())
                    continue
                try:
                    doc = None if msg.value() is None else json.loads(msg.value())
                    self._view.apply(msg.key().decode(), doc)
                except (ValueError, AttributeError, KeyError, TypeError):
                    log.warning("undecodable api object at %s[%d]@%d", msg.topic(), msg.partition(), msg.offset())
                positions[msg.partition()] = msg.offset() + 1
            # read_committed skips transaction markers: the consumer's position is what was read.
            for tp in self._consumer.position([TopicPartition(self._topic, p) for p in self._applied]):
                if tp.offset >= 0:
                    positions[tp.partition] = max(positions.get(tp.partition, 0), tp.offset)
            with self._changed:
                for p, off in positions.items():
                    self._applied[p] = max(self._applied[p], off)
                self._changed.notify_all()

    def close(self, flush_timeout_s: float = 10.0) -> None:
        self._producer.flush(flush_timeout_s)
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._consumer.close()


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if fut.done():
        return
    if isinstance(result, Exception):
        fut.set_exception(result)
    else:
        fut.set_result(result)
