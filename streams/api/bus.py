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
