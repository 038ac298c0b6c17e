"""A deterministic stand-in acquirer until the providers issue lands.

Declines follow the public test cards (by BIN + last four, since the PAN never
travels past ingest) and a per-payment amount ceiling.
"""

from __future__ import annotations

# (bin, last4) -> decline code, after the public test card numbers.
DECLINED_CARDS = {
    ("400000", "0002"): "card_declined",
    ("400000", "9995"): "insufficient_funds",
    ("400000", "0069"): "expired_card",
    ("400000", "0127"): "incorrect_cvc",
}
# Above this many minor units a single authorization is refused.
AMOUNT_CEILING_MINOR = 100_000_000


def authorize(card_bin: str, card_last4: str, amount_minor: int) -> str | None:
    """None when approved, else the decline code."""
    declined = DECLINED_CARDS.get((card_bin, card_last4))
    if declined:
        return declined
    if amount_minor > AMOUNT_CEILING_MINOR:
        return "amount_limit_exceeded"
    return None
