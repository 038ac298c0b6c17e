"""The demo's payment-method flow: after the day, the banks' notifications about the
day's bank transfers (settled, or returned days later by event time), published from
the rails' own decisions (`Rail.transfer_notices`), and the summary line by method."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.providers.rails import Rail, build_rails
from schemas.times import from_ms, to_ms
from streams.client.observe import Observer
from streams.client.publish import publish_commands
from streams.settings import Settings

RETURN_TYPES = ("bank_returned", "bank_reversed")


@dataclass(frozen=True)
class BankNotices:
    """The banks' notices this run sent, and what came of them."""

    sent: int = 0
    answered: int = 0
    settled: int = 0  # bank_settle applied
    returned: int = 0  # bank_return applied (before or after the settlement)


def bank_notice_commands(events: Mapping[str, list[dict[str, Any]]], rails: Mapping[str, Rail],
                         run_id: str) -> list[dict[str, Any]]:
    """One bank_settle / bank_return per notice the submitting rail gives for each
    submitted transfer (rails that are not bank rails, e.g. the test provider, give none).
    In event-time order, so a payment's settlement comes before its return."""
    notices = []
    for pid, evs in sorted(events.items()):
        submitted = next((e for e in evs if e["type"] == "bank_submitted"), None)
        rail = rails.get(submitted["provider"]) if submitted else None
        if rail is None or rail.config.kind != "bank_transfer":
            continue
        for kind, at_ms, code in rail.transfer_notices(submitted["provider_ref"], to_ms(submitted["occurred_at"])):
            notices.append((at_ms, pid, kind, code, submitted["merchant_id"]))
    out = []
    for at_ms, pid, kind, code, merchant in sorted(notices):
        out.append({
            "command_id": f"cmd_{run_id}_bank_{len(out)}", "kind": f"bank_{kind}", "merchant_id": merchant,
            "idempotency_key": f"{pid}-bank-{kind}", "payment_id": pid, "amount_minor": None, "currency": None,
            "capture_method": None, "card": None, "metadata": {}, "occurred_at": from_ms(at_ms),
            "bank_notice": {"return_code": code} if code else None,
        })
    return out


def run_bank_notices(settings: Settings, observer: Observer, run_id: str, timeout_s: float) -> BankNotices:
    """Publish the banks' notices for this run's transfers (the rails as the worker built
    them: same file, same seed), wait for every answer, count what applied."""
    rails = build_rails(seed=settings.provider_seed)
    commands = bank_notice_commands(observer.events, rails, run_id)
    publish_commands(settings, commands)
    ids = {c["command_id"] for c in commands}
    observer.wait_for(ids, 0, timeout_s)
    applied = Counter(c["kind"] for c in commands
                      if observer.outcomes.get(c["command_id"]) and observer.outcomes[c["command_id"]][0]["status"] == "succeeded")
    answered = sum(1 for c in ids if observer.outcomes.get(c))
    return BankNotices(len(commands), answered, applied["bank_settle"], applied["bank_return"])


def payments_by_method(events: Mapping[str, list[dict[str, Any]]]) -> Counter[str]:
    """Payments with events, by method (an event's null method is a card)."""
    return Counter((evs[0].get("method") or "card") for evs in events.values() if evs)


def methods_summary(events: Mapping[str, list[dict[str, Any]]], bank: BankNotices) -> str:
    by = payments_by_method(events)
    returns = sum(1 for evs in events.values() for e in evs if e["type"] in RETURN_TYPES)
    methods = ", ".join(f"{m} {n}" for m, n in sorted(by.items()))
    return (f"payments by method: {methods}; bank notices {bank.sent} (settled {bank.settled}, returned "
            f"{bank.returned}); returns {returns}")
