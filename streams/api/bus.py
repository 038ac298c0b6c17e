"""The command bus the API writes through: publish one command, await its committed
outcome by command_id. `KafkaBus` is the real one; `InMemoryBus` answers with a
function, for tests of the HTTP logic."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from connectors.kafka.clients import POLL_TIMEOUT_S, committed_reader, consume_available, end_offsets, id_assigned
from schemas.codec import DecodeError
from streams.client.observe import MAX_BATCH, OUTCOME_CODEC
from streams.client.publish import COMMAND_CODEC, command_key
from streams.settings import Settings, client_config
from streams.topics import topic_names

log = logging.getLogger(__name__)


class BusUnavailable(RuntimeError):
    """The command could not be handed to Kafka (nothing was published)."""


class CommandBus(Protocol):
    async def publish(self, command: dict[str, Any]) -> None:
        """Publish one command, acknowledged by the brokers; BusUnavailable if not."""

    async def outcome(self, command_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The committed outcome of a command this bus published, or None after `timeout_s`."""


@dataclass
class _Slot:
    outcome: dict[str, Any] | None = None
    waiters: list[asyncio.Future[dict[str, Any] | None]] = field(default_factory=list)


class Outcomes:
    """Outcomes of the commands this process published, bounded (oldest forgotten),
    fed from any thread, awaited on the event loop."""

    def __init__(self, max_slots: int) -> None:
        assert max_slots >= 1
        self.max_slots = max_slots
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def expect(self, command_id: str) -> None:
        with self._lock:
            if command_id not in self._slots:
                self._slots[command_id] = _Slot()
                while len(self._slots) > self.max_slots:
                    _, old = self._slots.popitem(last=False)
                    for w in old.waiters:  # a waiter past the bound gets its timeout now
                        w.get_loop().call_soon_threadsafe(_resolve, w, None)

    def deliver(self, outcome: dict[str, Any]) -> bool:
        """Record an outcome; False if no command of ours (another producer's)."""
        with self._lock:
            slot = self._slots.get(outcome["command_id"])
            if slot is None or slot.outcome is not None:
                return False
            slot.outcome, waiters, slot.waiters = outcome, slot.waiters, []
        for w in waiters:
            w.get_loop().call_soon_threadsafe(_resolve, w, outcome)
        return True

    async def wait(self, command_id: str, timeout_s: float) -> dict[str, Any] | None:
        fut: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        with self._lock:
            slot = self._slots.get(command_id)
            if slot is None:
                return None
            if slot.outcome is not None:
                return slot.outcome
            slot.waiters.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return None
        finally:
            with self._lock:
                slot = self._slots.get(command_id)
                if slot is not None and fut in slot.waiters:
                    slot.waiters.remove(fut)


def _resolve(fut: asyncio.Future[dict[str, Any] | None], outcome: dict[str, Any] | None) -> None:
    if not fut.done():
        fut.set_result(outcome)


class InMemoryBus:
    """Answers each published command with `respond(command)`; None leaves it
    unanswered until `answer()` (a slow pipeline)."""

    def __init__(self, respond: Callable[[dict[str, Any]], dict[str, Any] | None], max_slots: int = 10_000) -> None:
        self.respond = respond
        self.published: list[dict[str, Any]] = []
        self.outcomes = Outcomes(max_slots)
        self.available = True

    async def publish(self, command: dict[str, Any]) -> None:
        if not self.available:
            raise BusUnavailable("in-memory bus switched off")
        self.outcomes.expect(command["command_id"])
        self.published.append(command)
        answer = self.respond(command)
        if answer is not None:
            self.outcomes.deliver(answer)

    def answer(self, outcome: dict[str, Any]) -> None:
        self.outcomes.deliver(outcome)

    async def outcome(self, command_id: str, timeout_s: float) -> dict[str, Any] | None:
        return await self.outcomes.wait(command_id, timeout_s)


class KafkaBus:
    """confluent-kafka: an idempotent producer (murmur2 keys, like every producer of
    commands) and one read_committed consumer of payment-outcomes, started at the end
    offsets before the first publish, feeding `Outcomes`. Two daemon threads: one
    serves the producer's delivery callbacks, one polls outcomes."""

    def __init__(self, settings: Settings, max_slots: int) -> None:
        names = topic_names(settings)
        self._topic, self._encode, self._key = names.commands, COMMAND_CODEC.encode, command_key
        # The first merchant's request must not wait for the producer's id.
        self._producer = id_assigned(client_config(settings), linger_ms=settings.producer_linger_ms)
        self._consumer = committed_reader(client_config(settings), [])
        self._consumer.assign(
            [
                TopicPartition(names.outcomes, p, high)
                for p, high in end_offsets(self._consumer, names.outcomes, settings.partitions).items()
            ]
        )
        self.outcomes = Outcomes(max_slots)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_producer, name="api-producer", daemon=True),
            threading.Thread(target=self._read_outcomes, name="api-outcomes", daemon=True),
        ]
        for t in self._threads:
            t.start()

    async def publish(self, command: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: Any, _msg: Any) -> None:
            loop.call_soon_threadsafe(_settle, acked, None if error is None else BusUnavailable(str(error)))

        self.outcomes.expect(command["command_id"])  # before producing: the outcome may be quick
        try:
            self._producer.produce(
                self._topic, key=self._key(command), value=self._encode(command), on_delivery=on_delivery
            )
        except BufferError:
            raise BusUnavailable("producer queue full") from None
        await acked

    async def outcome(self, command_id: str, timeout_s: float) -> dict[str, Any] | None:
        return await self.outcomes.wait(command_id, timeout_s)

    def _serve_producer(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def _read_outcomes(self) -> None:
        while not self._stop.is_set():
            for msg in consume_available(self._consumer, MAX_BATCH, POLL_TIMEOUT_S):
                if msg.error() is not None:
                    continue  # end of partition and transient errors; the client recovers itself
                try:
                    self.outcomes.deliver(OUTCOME_CODEC.decode(msg.value()))
                except DecodeError:
                    log.warning("undecodable outcome at %s[%d]@%d", msg.topic(), msg.partition(), msg.offset())

    def close(self, flush_timeout_s: float = 10.0) -> None:
        self._producer.flush(flush_timeout_s)
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._consumer.close()


def _settle(fut: asyncio.Future[None], error: Exception | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
