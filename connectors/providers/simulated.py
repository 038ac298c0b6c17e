"""A deterministic stand-in acquirer until the providers issue lands.

Every answer is a pure function of the call (provider key, card, amount), so the
provider is idempotent by construction: the same key always gets the same answer and
is one charge, however often it is sent (after a crash, a redelivery or a timeout).
An optional `journal` keeps the provider-side record of what was asked, so tests can
count calls per key; the worker runs without one (it would grow without bound).

Behaviour follows the public test cards, by BIN + last four (the PAN never travels
past ingest), plus two cards of our own for the saga's failure paths.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# (bin, last4) -> decline code, after the public test card numbers.
DECLINED_CARDS = {
    ("400000", "0002"): "card_declined",
    ("400000", "9995"): "insufficient_funds",
    ("400000", "0069"): "expired_card",
    ("400000", "0127"): "incorrect_cvc",
}
# 4000 0000 0000 0119: the authorization response is lost (a timeout); the provider
# did approve it, which a status query with the same key reveals.
TIMEOUT_THEN_APPROVED = ("400000", "0119")
# 4000 0000 0000 3055: the authorization times out and the provider stays unreachable.
UNREACHABLE = ("400000", "3055")
# 4000 0000 0000 0341: approved, but the capture is refused (the saga must void).
CAPTURE_FAILS = ("400000", "0341")
# Above this many minor units a single authorization is refused.
AMOUNT_CEILING_MINOR = 100_000_000
# Card-present pricing of a typical acquirer: 2.9 % + 30 minor units per capture.
FEE_PER_MILLE = 29
FEE_FIXED_MINOR = 30


@dataclass(frozen=True)
class ProviderResult:
    status: str  # "approved" | "declined" | "unknown" (no answer: a timeout)
    reason: str | None = None  # decline code, or why the outcome is unknown
    fee_minor: int = 0
    # A declined call the provider guarantees it did not process (unavailable,
    # overloaded): safe to retry, or to send to another provider.
    retryable: bool = False
    latency_ms: int = 0  # simulated time the call took (never slept)

    def __post_init__(self) -> None:
        assert self.status in ("approved", "declined", "unknown"), self.status
        assert (self.reason is None) == (self.status == "approved"), self
        assert self.fee_minor >= 0 and self.latency_ms >= 0
        assert not self.retryable or self.status == "declined", self


@dataclass(frozen=True)
class Call:
    """What the saga knows about a provider call beyond its arguments: the payment it
    belongs to (the merchant reference on settlement reports), its currency and its
    event time (outage schedules and settlement days are by event time)."""

    payment_id: str
    currency: str
    at_ms: int
    # The PAN, revealed from the vault for the one call that needs it: a merchant-initiated
    # charge on a saved card (streams/domain/payments.py `needs_pan`). Never recorded or shown.
    card_number: str | None = field(default=None, repr=False, compare=False)


def number_mismatch(call: Call | None, card_bin: str, card_last4: str) -> ProviderResult | None:
    """A revealed card number that is not the card the payment names (BIN and last 4):
    declined as the networks decline a wrong number, never charged."""
    if call is None or call.card_number is None:
        return None
    if (call.card_number[:6], call.card_number[-4:]) != (card_bin, card_last4):
        return ProviderResult("declined", "incorrect_number")
    return None


APPROVED = ProviderResult("approved")


@dataclass
class SimulatedProvider:
    name: str = "simcard"
    # (operation, provider key) -> times asked; never part of an answer.
    journal: Counter[tuple[str, str]] | None = None

    def _saw(self, operation: str, key: str) -> None:
        if self.journal is not None:
            self.journal[operation, key] += 1

    def authorize(self, key: str, card_bin: str, card_last4: str, amount_minor: int, currency: str,
                  call: Call | None = None) -> ProviderResult:
        self._saw("authorize", key)
        mismatch = number_mismatch(call, card_bin, card_last4)
        if mismatch is not None:
            return mismatch
        if (card_bin, card_last4) in (TIMEOUT_THEN_APPROVED, UNREACHABLE):
            return ProviderResult("unknown", "provider_timeout")
        return _authorization(card_bin, card_last4, amount_minor)

    def status(self, key: str, card_bin: str, card_last4: str, amount_minor: int, call: Call | None = None) -> ProviderResult:
        """What became of the authorization sent under `key`. The caller passes the
        request again because this provider keeps no durable state of its own."""
        self._saw("status", key)
        if (card_bin, card_last4) == UNREACHABLE:
            return ProviderResult("unknown", "provider_unreachable")
        return _authorization(card_bin, card_last4, amount_minor)

    def capture(self, key: str, card_bin: str, card_last4: str, amount_minor: int, call: Call | None = None) -> ProviderResult:
        self._saw("capture", key)
        if (card_bin, card_last4) == CAPTURE_FAILS:
            return ProviderResult("declined", "capture_refused")
        return ProviderResult("approved", fee_minor=fee_minor(amount_minor))

    def void(self, key: str, call: Call | None = None) -> ProviderResult:
        self._saw("void", key)
        return APPROVED

    def refund(self, key: str, amount_minor: int, call: Call | None = None) -> ProviderResult:
        self._saw("refund", key)
        return APPROVED


def _authorization(card_bin: str, card_last4: str, amount_minor: int) -> ProviderResult:
    declined = DECLINED_CARDS.get((card_bin, card_last4))
    if declined:
        return ProviderResult("declined", declined)
    if amount_minor > AMOUNT_CEILING_MINOR:
        return ProviderResult("declined", "amount_limit_exceeded")
    return APPROVED


def fee_minor(amount_minor: int) -> int:
    """The capture fee, rounded down to the minor unit, never more than the amount."""
    return min(amount_minor, amount_minor * FEE_PER_MILLE // 1000 + FEE_FIXED_MINOR)
