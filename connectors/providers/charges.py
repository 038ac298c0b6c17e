"""The double-charge check: the providers' own books against the payment events.

The approvals come from the rails' records (journal.py keeps them on disk under
PAYSTREAM_PROVIDERS_DIR, shared by every worker), the way a real provider's report
would say what it charged: `approvals(build_rails(journal_dir=...))`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.providers.rails import Rail

# The events that decide an authorization; a bank transfer's approval is its submission (no hold).
APPROVALS = ("authorized", "bank_submitted")
DECISIONS = (*APPROVALS, "declined", "authorization_pending")


def approvals(rails: Mapping[str, Rail]) -> dict[str, tuple[str, ...]]:
    """payment_id -> the rails that approved an authorization of it, one entry per
    approved record (the same rail twice: two idempotency keys, two charges)."""
    out: dict[str, list[str]] = {}
    for name in sorted(rails):
        rails[name].authorized()  # reads what every process journaled
        for record in rails[name].records.values():
            if record.operation == "authorize" and record.result.status == "approved" and record.payment_id:
                out.setdefault(record.payment_id, []).append(name)
    return {pid: tuple(names) for pid, names in out.items()}


@dataclass(frozen=True)
class ChargeCheck:
    payments: int  # payments with an authorization decision in the events
    double_charged: tuple[str, ...]  # approved twice or more by the rails (their own records)
    mismatched: tuple[str, ...]  # events say authorized at X, the rails say not at X
    unreported: tuple[str, ...]  # a rail approved it, the events never say authorized


def double_charges(approved: Mapping[str, tuple[str, ...]], events: Mapping[str, list[dict[str, Any]]]) -> ChargeCheck:
    """The rails' approvals (`approvals`) against the payment events (`events`:
    payment_id -> its events, the ledger's input); payments without a decision are
    not checked."""
    held = {pid: {e["provider"] for e in es if e["type"] in APPROVALS} for pid, es in events.items()}
    decided = {pid for pid, es in events.items() if any(e["type"] in DECISIONS for e in es)}
    double = tuple(sorted(pid for pid in decided if len(approved.get(pid, ())) > 1))
    mismatched = tuple(sorted(pid for pid, ps in held.items() if ps and not ps <= set(approved.get(pid, ()))))
    unreported = tuple(sorted(pid for pid in decided if approved.get(pid) and not held.get(pid)))
    return ChargeCheck(len(decided), double, mismatched, unreported)
