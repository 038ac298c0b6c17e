"""Stripe's idempotency rules for one API process, in front of the pipeline's own.

A write's command_id is derived from (merchant, Idempotency-Key, route), so this
process publishes each at most once. The record of a key here answers a retry
without Kafka: the stored response (replay), `idempotency_key_in_use` while another
request holds it, `idempotency_conflict` for another body. The pipeline keeps the
authoritative record (24 h, across instances); this one is bounded and per process
(docs/api.md: the multi-instance limit).
"""

from __future__ import annotations

import hmac
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["publish", "await", "replay", "in_use", "conflict"]


def fingerprint(secret: bytes, route: str, body: dict[str, Any]) -> str:
    """A canonical digest of the request, keyed by a per-process secret: the body
    holds a card number, which a plain hash would let anyone holding it guess."""
    canonical = json.dumps([route, body], sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(secret, canonical, "sha256").hexdigest()


@dataclass(frozen=True)
class Response:
    status_code: int
    body: dict[str, Any]


@dataclass
class _Record:
    fingerprint: str
    payment_id: str
    response: Response | None = None
    held: bool = True  # a request is waiting on it right now


@dataclass(frozen=True)
class Begin:
    action: Action
    response: Response | None = None


class InFlightFull(RuntimeError):
    pass


@dataclass
class IdempotencyRecords:
    max_records: int
    max_in_flight: int
    _records: OrderedDict[str, _Record] = field(default_factory=OrderedDict)
    _held: int = 0

    def __post_init__(self) -> None:
        assert 1 <= self.max_in_flight <= self.max_records

    def begin(self, command_id: str, fp: str, payment_id: str) -> Begin:
        """Claim `command_id` for one request. Raises InFlightFull past the bound."""
        rec = self._records.get(command_id)
        if rec is not None:
            self._records.move_to_end(command_id)
            if rec.fingerprint != fp:
                return Begin("conflict")
            if rec.response is not None:
                return Begin("replay", rec.response)
            if rec.held:
                return Begin("in_use")
            self._hold(rec)
            return Begin("await")
        if self._held >= self.max_in_flight:
            raise InFlightFull(f"{self._held} writes in flight")
        self._evict()
        rec = _Record(fp, payment_id, held=False)
        self._hold(rec)
        self._records[command_id] = rec
        return Begin("publish")

    def finish(self, command_id: str, response: Response) -> None:
        rec = self._records[command_id]
        rec.response = response
        self._release(rec)

    def leave(self, command_id: str) -> None:
        """The waiter gave up (timeout): the command is out, a retry awaits it."""
        self._release(self._records[command_id])

    def forget(self, command_id: str) -> None:
        """Nothing was published (the broker refused): a retry may publish."""
        self._release(self._records.pop(command_id))

    def payment_id(self, command_id: str) -> str:
        return self._records[command_id].payment_id

    def __len__(self) -> int:
        return len(self._records)

    @property
    def held(self) -> int:
        return self._held

    def _hold(self, rec: _Record) -> None:
        rec.held = True
        self._held += 1

    def _release(self, rec: _Record) -> None:
        assert rec.held
        rec.held = False
        self._held -= 1

    def _evict(self) -> None:
        # Oldest first, never one a request holds (there are at most max_in_flight).
        while len(self._records) >= self.max_records:
            for cid, rec in self._records.items():
                if not rec.held:
                    del self._records[cid]
                    break
            else:  # pragma: no cover - excluded by max_in_flight <= max_records
                raise AssertionError("every record is held")
