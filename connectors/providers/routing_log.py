"""The routing log: what the router did, as JSON lines a worker appends when
`PAYSTREAM_ROUTING_LOG_DIR` is set (the demo's `--chaos-providers` sets it).

Our side of a routed create, which the providers never see: its attempts, its
failovers and the breaker transitions it caused. What the rails *processed* is not
here: that is the providers' own books (journal.py, under PAYSTREAM_PROVIDERS_DIR).
`read_routing_log` folds a directory's files (one per worker) into a `RoutingView`.

A command re-processed after a crash or rebalance is logged twice; the view counts
each payment's routing once (the last) and each breaker transition once.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from connectors.providers.router import Routed

log = logging.getLogger("paystream.providers")

MAX_LOG_BYTES = 256 * 1024 * 1024  # per worker file; past it the log stops (and says so)
MAX_LINE_BYTES = 64 * 1024


class RoutingLog:
    """Appends to `<dir>/<worker>.jsonl`, one line per routed create, flushed per line
    so a killed worker loses nothing it logged."""

    def __init__(self, directory: Path, worker: str, max_bytes: int = MAX_LOG_BYTES) -> None:
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
            line = json.dumps({"fact": "log_full"})
        self._file.write(line + "\n")
        self._file.flush()

    def routed(self, partition: int, payment_id: str, routed: Routed) -> None:
        self._write(
            {
                "fact": "routed",
                "partition": partition,
                "payment_id": payment_id,
                "provider": routed.provider,
                "failovers": routed.failovers,
                "attempts": [[a.provider, a.status] for a in routed.attempts],
                "transitions": [[t.provider, t.from_state, t.to_state, t.at_ms, t.reason] for t in routed.transitions],
            }
        )

    def close(self) -> None:
        self._file.close()


@dataclass
class RoutingView:
    routed: dict[str, dict[str, Any]] = field(default_factory=dict)  # payment -> its (last) routing
    transitions: set[tuple[int, str, str, str, int, str]] = field(
        default_factory=set
    )  # (partition, provider, from, to, at_ms, reason)
    full: bool = False  # a worker's log hit its size bound: counts are lower bounds
    skipped: int = 0  # lines that were not ours (a torn write glued to the next line)

    @property
    def failovers(self) -> int:
        return sum(r["failovers"] for r in self.routed.values())

    def trips(self) -> Counter[tuple[str, str]]:
        """(provider, to_state) -> breaker transitions: opens, half-opens, closes."""
        return Counter((provider, to) for _, provider, _, to, _, _ in self.transitions)


def fold(lines: Iterable[str]) -> RoutingView:
    view = RoutingView()
    for line in lines:
        try:
            doc = json.loads(line)
            if doc["fact"] == "routed":
                transitions = [(doc["partition"], *t) for t in doc["transitions"]]
                assert isinstance(doc["failovers"], int) and all(len(t) == 6 for t in transitions)
                view.routed[doc["payment_id"]] = doc
                view.transitions.update(transitions)
            elif doc["fact"] == "log_full":
                view.full = True
        except (ValueError, KeyError, TypeError, AssertionError):
            view.skipped += 1
    return view


def read_routing_log(directory: Path) -> RoutingView:
    """Every worker's log under `directory`, folded. A line still being written (no
    newline) is left out; a torn one (a killed worker, restarted) is skipped and counted."""

    def lines() -> Iterable[str]:
        for path in sorted(directory.glob("*.jsonl")):
            with path.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.endswith("\n"):
                        yield line

    view = fold(lines())
    if view.skipped:
        log.warning("%s: skipped %d routing log line(s) that were not records", directory, view.skipped)
    return view
