"""The provider journal: what the simulated rails processed and what the router did,
as JSON lines a worker appends when `PAYSTREAM_PROVIDER_JOURNAL_DIR` is set (the demo's
`--chaos-providers` sets it).

The rails live inside the worker process; the journal is their side of the story,
the way a real provider's dashboard or report is: every call a rail *processed*
(refused calls record nothing, as at a real provider), and every routed create's
attempts, failovers and breaker transitions. `read_journal` folds the files of a
directory into a `JournalView`; `double_charges` holds it against the payment events.

A command re-processed after a crash or rebalance appears twice; the view counts each
payment's routing once (the last) and each breaker transition once.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable

from connectors.providers.rails import Record
from connectors.providers.router import Routed

MAX_JOURNAL_BYTES = 256 * 1024 * 1024  # per worker file; past it the journal stops (and says so)
MAX_LINE_BYTES = 64 * 1024


class Journal:
    """Appends to `<dir>/<worker>.jsonl`, one line per fact, flushed per line so a
    killed worker loses nothing it reported."""

    def __init__(self, directory: Path, worker: str, max_bytes: int = MAX_JOURNAL_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{worker}.jsonl"
        self.max_bytes = max_bytes
        self.full = False
        self._file: IO[str] = self.path.open("a", encoding="utf-8")

    def _write(self, doc: dict[str, Any]) -> None:
        if self.full:
            return
        line = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        assert len(line) <= MAX_LINE_BYTES
        if self._file.tell() + len(line) + 1 > self.max_bytes:
            self.full = True
            line = json.dumps({"fact": "journal_full"})
        self._file.write(line + "\n")
        self._file.flush()

    def rail_record(self, provider: str, record: Record) -> None:
        self._write({"fact": "rail", "provider": provider, "operation": record.operation, "key": record.key,
                     "payment_id": record.payment_id, "status": record.result.status, "at_ms": record.at_ms})

    def routed(self, partition: int, payment_id: str, routed: Routed) -> None:
        self._write({
            "fact": "routed", "partition": partition, "payment_id": payment_id, "provider": routed.provider,
            "failovers": routed.failovers, "attempts": [[a.provider, a.status] for a in routed.attempts],
            "transitions": [[t.provider, t.from_state, t.to_state, t.at_ms, t.reason] for t in routed.transitions],
        })

    def close(self) -> None:
        self._file.close()


@dataclass
class JournalView:
    authorized: dict[str, set[str]] = field(default_factory=dict)  # payment -> providers that approved its authorization
    routed: dict[str, dict[str, Any]] = field(default_factory=dict)  # payment -> its (last) routing
    transitions: set[tuple[int, str, str, str, int, str]] = field(default_factory=set)  # (partition, provider, from, to, at_ms, reason)
    full: bool = False  # a worker's journal hit its size bound: counts are lower bounds

    @property
    def failovers(self) -> int:
        return sum(r["failovers"] for r in self.routed.values())

    def trips(self) -> Counter[tuple[str, str]]:
        """(provider, to_state) -> breaker transitions: opens, half-opens, closes."""
        return Counter((provider, to) for _, provider, _, to, _, _ in self.transitions)


def fold(lines: Iterable[str]) -> JournalView:
    view = JournalView()
    for line in lines:
        doc = json.loads(line)
        if doc["fact"] == "rail":
            if doc["operation"] == "authorize" and doc["status"] == "approved" and doc["payment_id"]:
                view.authorized.setdefault(doc["payment_id"], set()).add(doc["provider"])
        elif doc["fact"] == "routed":
            view.routed[doc["payment_id"]] = doc
            view.transitions.update((doc["partition"], *t) for t in doc["transitions"])
        elif doc["fact"] == "journal_full":
            view.full = True
    return view


def read_journal(directory: Path) -> JournalView:
    """Every worker's journal under `directory`, folded. A torn last line (a worker
    killed mid-write) is skipped."""
    def lines() -> Iterable[str]:
        for path in sorted(directory.glob("*.jsonl")):
            with path.open(encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        yield line
    return fold(lines())


@dataclass(frozen=True)
class ChargeCheck:
    payments: int  # payments with an authorization decision in the events
    double_charged: tuple[str, ...]  # authorized at two or more providers (the rails' own records)
    mismatched: tuple[str, ...]  # events say authorized at X, the rails say not at X
    unreported: tuple[str, ...]  # a rail approved it, the events never say authorized


def double_charges(view: JournalView, events: dict[str, list[dict[str, Any]]]) -> ChargeCheck:
    """The rails' approved authorizations per payment against the payment events
    (`events`: payment_id -> its events, the ledger's input)."""
    held = {pid: {e["provider"] for e in es if e["type"] == "authorized"} for pid, es in events.items()}
    decided = {pid for pid, es in events.items() if any(e["type"] in ("authorized", "declined", "authorization_pending") for e in es)}
    double = tuple(sorted(pid for pid in decided if len(view.authorized.get(pid, ())) > 1))
    mismatched = tuple(sorted(pid for pid, ps in held.items() if ps and not ps <= view.authorized.get(pid, set())))
    unreported = tuple(sorted(pid for pid in decided if view.authorized.get(pid) and not held.get(pid)))
    return ChargeCheck(len(decided), double, mismatched, unreported)
