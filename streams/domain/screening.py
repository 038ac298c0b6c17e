"""Screening a create's payer against the sanctions list, as plain values: which names
a create carries, and what a hit does to it. Pure (the list is passed in).

Where: the keys stage (streams/stages/idempotency.py), which every create of every method passes
(before the risk stage, which scores every method's creates too). A create names its payer in metadata, as it
names its IP and device (streams/stages/risk.py RISK_METADATA): `payer_name` (the bank
account holder, the wallet's or BNPL customer's name) and `cardholder_name` (the name
on the card); a create without either is not screened. A hit holds the payment: the
create goes on with `fraud_action` review and the reason `sanctions_hit:<uid>:<score>`,
the payments stage parks it in requires_review before any provider call (no money
moves), and a FraudReview record with the match in `sanctions` joins the review queue
(`paystream fraud review`), where a reviewer approves (a false positive) or declines.
The fraud decision of the risk stage never lifts the hold (`keep_hold`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.ids import derive_command_id
from streams.domain.sanctions import THRESHOLD, Match, SanctionsList

#: Metadata keys holding a payer's name, screened in this order (the first hit holds).
SCREENED_METADATA = ("payer_name", "cardholder_name")
HIT_PREFIX = "sanctions_hit:"


def screened_names(cmd: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(metadata key, name) of each payer name a create carries."""
    meta = cmd.get("metadata") or {}
    return [(k, meta[k]) for k in SCREENED_METADATA if isinstance(meta.get(k), str) and meta[k].strip()]


def screen_create(
    cmd: dict[str, Any], slist: SanctionsList, threshold: int = THRESHOLD
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the create to forward, a FraudReview record or None). Only unrefused creates
    are screened; anything else passes unchanged."""
    if cmd["kind"] != "create" or cmd.get("rejection_reason") is not None:
        return cmd, None
    for field, name in screened_names(cmd):
        match = slist.screen(name, threshold=threshold)
        if match is not None:
            held = cmd | {
                "fraud_action": "review",
                "fraud_reasons": [match.reason()],
                "fraud_score_ppm": None,
                "fraud_model": None,
                "fraud_fallback": False,
            }
            return held, review_record(cmd, match, field, name, slist.version, threshold)
    return cmd, None


def is_held(cmd: Mapping[str, Any]) -> bool:
    """Held for sanctions review by the keys stage."""
    return cmd.get("fraud_action") == "review" and any(r.startswith(HIT_PREFIX) for r in cmd.get("fraud_reasons") or ())


def keep_hold(cmd: Mapping[str, Any], action: str, reasons: list[str]) -> tuple[str, list[str]]:
    """The risk stage's decision on a create the keys stage may have held: a hold stays
    a review (a reviewer must see a sanctions hit, whatever the fraud score), with the
    fraud reasons after the hit's."""
    if not is_held(cmd):
        return action, reasons
    hits = [r for r in cmd["fraud_reasons"] if r.startswith(HIT_PREFIX)]
    return "review", hits + [r for r in reasons if r not in hits]


def review_record(
    cmd: Mapping[str, Any], match: Match, field: str, name: str, list_version: str, threshold: int
) -> dict[str, Any]:
    """The FraudReview of a create held for a sanctions hit (card fields empty without a card)."""
    card = cmd.get("card") or {}
    return {
        "review_id": derive_command_id(cmd["payment_id"], "review", cmd["command_id"]),
        "payment_id": cmd["payment_id"],
        "merchant_id": cmd["merchant_id"],
        "command_id": cmd["command_id"],
        "card_token": card.get("token", ""),
        "card_bin": card.get("bin", ""),
        "card_last4": card.get("last4", ""),
        "amount_minor": cmd["amount_minor"],
        "currency": cmd["currency"],
        "score_ppm": None,
        "reasons": [match.reason()],
        "model_version": None,
        "rules_version": None,
        "fallback": False,
        "features": {},
        "occurred_at": cmd["occurred_at"],
        "sanctions": {
            "uid": match.uid,
            "entry_name": match.entry_name,
            "matched_name": match.matched_name,
            "score": match.score,
            "threshold": threshold,
            "programs": list(match.programs),
            "screened_field": field,
            "screened_name": name,
            "list_version": list_version,
        },
    }
