"""A payment's routing attempts in the read model: creates routed over the simulated
rails (soft declines retried at the other acquirer, failovers out of an outage), their
events through the Avro codec and the sink into chDB (migration 7), and the cookbook's
approval-by-attempt query (docs/analytics.md) agreeing with the events themselves."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.clickhouse.rows import RowError, rows_for
from connectors.clickhouse.sink import Sink
from connectors.providers.rails import Window, build_rails
from schemas.codec import Codec
from tests.unit.streams.conftest import T0
from tests.unit.streams.domain.test_payments_routing import CMDS, T0_MS, run, with_card

DOC = Path(__file__).resolve().parents[4] / "docs" / "analytics.md"
QUERY = next(b for b in re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S) if "n AS attempt," in b)
EVENTS = Codec("PaymentEvent")
DECIDING = ("authorized", "declined", "authorization_pending")
CARD = ("555555", "4444")


def routed_events() -> list[dict[str, Any]]:
    """400 card creates, 5555 cards (acq_north declines them more, a third do_not_honor),
    acq_north down for a stretch: soft retries and failovers both happen."""
    rails = build_rails(7, schedules={"acq_north": (Window(T0_MS + 20_000, T0_MS + 40_000, "outage"),)})
    creates = [
        with_card(CMDS.create(f"order-att-{i}", amount=5_000 + i, at=T0 + timedelta(milliseconds=250 * i)), *CARD)
        for i in range(400)
    ]
    _, events, _, _ = run(rails, creates)
    return [EVENTS.decode(EVENTS.encode(e, check=True)) for e in events]  # as the sink reads them


def calls_of(events: list[dict[str, Any]]) -> Counter[tuple[int, str, str]]:
    """(attempt, provider, status) of every call, from each payment's first deciding event."""
    out: Counter[tuple[int, str, str]] = Counter()
    seen = set()
    for e in sorted(events, key=lambda e: (e["payment_id"], e["version"])):
        if e["type"] not in DECIDING or e["provider"] is None or e["payment_id"] in seen:
            continue
        seen.add(e["payment_id"])
        outcome = {"authorized": "approved", "declined": "declined"}.get(e["type"], "unknown")
        calls = e["attempts"] or [{"provider": e["provider"], "status": outcome}]
        for n, a in enumerate(calls, 1):
            out[(n, a["provider"], a["status"])] += 1
    return out


def test_attempts_reach_the_read_model_and_approval_by_attempt_adds_up(ch) -> None:
    events = routed_events()
    multi = [e for e in events if e.get("attempts")]
    soft = [e for e in multi if e["attempts"][0]["reason_code"] == "do_not_honor"]
    failover = [e for e in multi if e["attempts"][0]["retryable"]]
    assert soft and failover, "the traffic shows both kinds of second attempt"
    Sink(ch).insert([r for e in events for r in rows_for("payment_event", e)])

    got = {
        eid: list(zip(p, s, rc, rt))
        for eid, p, s, rc, rt in ch.query(
            "SELECT event_id, attempts.provider, attempts.status, attempts.reason_code, attempts.retryable "
            "FROM payment_events FINAL"
        ).result_rows
    }
    assert len(got) == len(events)
    for e in events:
        want = [(a["provider"], a["status"], a["reason_code"] or "", a["retryable"]) for a in e.get("attempts") or []]
        assert got[e["event_id"]] == want, e["event_id"]

    rows = ch.query(QUERY).result_rows
    by_attempt = {(n, p): (calls, refused, approved) for n, p, calls, refused, approved, _ in rows}
    want_calls = calls_of(events)
    assert {k: v[0] for k, v in by_attempt.items()} == {
        (n, p): sum(c for (n2, p2, _), c in want_calls.items() if (n2, p2) == (n, p)) for n, p, _ in want_calls
    }
    assert {k: v[2] for k, v in by_attempt.items()} == {
        (n, p): want_calls[(n, p, "approved")] for n, p, _ in want_calls
    }
    # a second attempt exists exactly for the soft retries and failovers, and some of them approve
    assert sum(v[0] for (n, _), v in by_attempt.items() if n == 2) == len(multi)
    assert sum(v[2] for (n, _), v in by_attempt.items() if n == 2) > 0
    assert sum(v[1] for (n, _), v in by_attempt.items() if n == 1) == len(failover)


@pytest.mark.parametrize(
    "attempts",
    [
        "not a list",
        [{"provider": "acq_north", "status": "maybe", "reason_code": None, "retryable": False}],
        [{"provider": "acq_north", "status": "declined", "reason_code": None, "retryable": "no"}],
        [{"provider": "", "status": "declined", "reason_code": None, "retryable": False}],
        [{"status": "declined", "reason_code": None, "retryable": False}],
        [{"provider": "p", "status": "approved", "reason_code": None, "retryable": False}] * 17,
    ],
)
def test_bad_attempts_are_a_row_error(attempts: Any) -> None:
    event = next(e for e in routed_events()[:5] if e["version"] == 1)
    with pytest.raises(RowError):
        rows_for("payment_event", event | {"attempts": attempts})
