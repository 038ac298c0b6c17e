"""Split payments (marketplaces): one payment divided among connected merchant
accounts and the platform's fee. Pure: no Kafka, no clock.

A create may carry `splits` (at most MAX_SPLITS of {merchant_id, amount_minor}) and
`platform_fee_minor`; splits + platform fee = amount. The payment keeps one `Share`
per account (the connected ones in the create's order, then the platform, i.e. the
payment's own merchant, for the fee) with what each has had captured, refunded,
disputed and lost. Every money-moving event of the payment carries how its amount
divides (`Allocation`), and the ledger credits or debits each account's pending
balance by its part in one entry (streams/domain/ledger.py).

Pro rata rule (docs/payments.md, Splits): an amount is divided by the largest
remainder method over the accounts' *remaining* amounts (a capture over what each
has not had captured yet; a refund or a dispute over what each still holds: captured
- refunded - disputed - lost). Each gets floor(amount * remaining_i / total); the
units left go one each to the largest remainders, ties to the earlier account.
Since amount <= total, no part exceeds its account's remaining amount, so refunds
and disputes never take more from an account than it was given, and the parts sum
exactly to the amount. A won dispute returns exactly what its opening took.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from schemas.errors import ReasonedError
from streams.domain.merchants import MERCHANT_ID_MAX_LEN

MAX_SPLITS = 10  # connected accounts per payment; with the platform, 11 ledger credits

#: The event kinds a split divides, and what each moves.
CAPTURE, REFUND, DISPUTE_OPEN, DISPUTE_WON, DISPUTE_LOST = (
    "captured",
    "refunded",
    "dispute_opened",
    "dispute_won",
    "dispute_lost",
)
SPLIT_KINDS = frozenset({CAPTURE, REFUND, DISPUTE_OPEN, DISPUTE_WON, DISPUTE_LOST})


class SplitError(ReasonedError, ValueError):
    """Splits a create cannot carry; `reason` is a stable rejection code."""


@dataclass(frozen=True)
class Share:
    """One account's part of a split payment and what became of it (minor units)."""

    merchant_id: str
    share_minor: int
    captured_minor: int = 0
    refunded_minor: int = 0
    disputed_minor: int = 0  # the open dispute's part
    lost_minor: int = 0

    def __post_init__(self) -> None:
        assert 0 <= self.captured_minor <= self.share_minor, self
        assert min(self.refunded_minor, self.disputed_minor, self.lost_minor) >= 0, self
        assert self.refunded_minor + self.disputed_minor + self.lost_minor <= self.captured_minor, self

    @property
    def held_minor(self) -> int:
        """Captured and still with the account: what a refund or a dispute can take."""
        return self.captured_minor - self.refunded_minor - self.disputed_minor - self.lost_minor


@dataclass(frozen=True)
class Allocation:
    """How one event's amount divides: the connected accounts' parts (zero parts left
    out) and the platform's."""

    splits: tuple[tuple[str, int], ...]
    platform_minor: int

    @property
    def total_minor(self) -> int:
        return sum(a for _, a in self.splits) + self.platform_minor

    def to_record(self) -> dict[str, Any]:
        """The event's `splits` and `platform_fee_minor` fields."""
        return {
            "splits": [{"merchant_id": m, "amount_minor": a} for m, a in self.splits],
            "platform_fee_minor": self.platform_minor,
        }


def largest_remainder(amount_minor: int, weights: Sequence[int]) -> tuple[int, ...]:
    """`amount_minor` divided in proportion to `weights` (non-negative ints, positive
    sum, amount <= sum): floors, then one unit each to the largest remainders, ties to
    the lower index. The parts sum to the amount and part_i <= weights_i."""
    total = sum(weights)
    assert total > 0 and min(weights) >= 0 and 0 <= amount_minor <= total, (amount_minor, weights)
    parts = [amount_minor * w // total for w in weights]
    remainders = [amount_minor * w % total for w in weights]
    left = amount_minor - sum(parts)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        parts[i] += 1
    assert sum(parts) == amount_minor and all(p <= w for p, w in zip(parts, weights, strict=True))
    return tuple(parts)


def checked_splits(splits: Any, platform_fee_minor: Any, *, merchant_id: str, amount_minor: int) -> tuple[Share, ...]:
    """The shares of a create's splits, or SplitError. `splits` is the command's list
    of {merchant_id, amount_minor}; `merchant_id` the platform (the create's merchant).
    Whether the accounts are connected and verified is the registry's check
    (streams/domain/merchants.py `admit`)."""
    if not splits:
        if platform_fee_minor is not None:
            raise SplitError("invalid_splits", "platform_fee_minor needs splits")
        return ()
    if len(splits) > MAX_SPLITS:
        raise SplitError("too_many_splits", f"at most {MAX_SPLITS} splits per payment")
    fee = 0 if platform_fee_minor is None else platform_fee_minor
    if type(fee) is not int or fee < 0:
        raise SplitError("invalid_splits", "platform_fee_minor must be a non-negative integer")
    seen: set[str] = set()
    shares = []
    for split in splits:
        account, part = split.get("merchant_id"), split.get("amount_minor")
        if not isinstance(account, str) or not 0 < len(account) <= MERCHANT_ID_MAX_LEN or not account.isprintable():
            raise SplitError(
                "invalid_splits", f"a split's merchant_id must be 1..{MERCHANT_ID_MAX_LEN} printable chars"
            )
        if account == merchant_id or account in seen:
            raise SplitError("invalid_splits", "each split names another merchant than the platform, once")
        if type(part) is not int or part <= 0:
            raise SplitError("invalid_splits", f"split to {account[:64]}: amount_minor must be a positive integer")
        seen.add(account)
        shares.append(Share(account, part))
    if sum(s.share_minor for s in shares) + fee != amount_minor:
        raise SplitError("splits_mismatch", "splits + platform_fee_minor must equal amount_minor")
    return (*shares, Share(merchant_id, fee))


def allocate(shares: tuple[Share, ...], kind: str, amount_minor: int) -> tuple[tuple[Share, ...], Allocation]:
    """The shares after an event of `kind` moving `amount_minor`, and how it divides.
    The last share is the platform's. The caller (the payment's state machine) has
    checked the amount against the payment's totals, which the shares sum to."""
    assert shares and amount_minor >= 0, (shares, amount_minor)
    if kind == CAPTURE:
        parts = largest_remainder(amount_minor, [s.share_minor - s.captured_minor for s in shares])
        new = tuple(replace(s, captured_minor=s.captured_minor + p) for s, p in zip(shares, parts, strict=True))
    elif kind in (REFUND, DISPUTE_OPEN):
        parts = largest_remainder(amount_minor, [s.held_minor for s in shares])
        field = "refunded_minor" if kind == REFUND else "disputed_minor"
        new = tuple(replace(s, **{field: getattr(s, field) + p}) for s, p in zip(shares, parts, strict=True))
    elif kind in (DISPUTE_WON, DISPUTE_LOST):
        parts = tuple(s.disputed_minor for s in shares)  # the dispute closes as a whole
        assert sum(parts) == amount_minor, (parts, amount_minor)
        lost = kind == DISPUTE_LOST
        new = tuple(
            replace(s, disputed_minor=0, lost_minor=s.lost_minor + (p if lost else 0))
            for s, p in zip(shares, parts, strict=True)
        )
    else:
        raise AssertionError(f"splits do not divide {kind!r}")
    return new, _allocation(shares, parts)


def _allocation(shares: tuple[Share, ...], parts: Sequence[int]) -> Allocation:
    connected = tuple((s.merchant_id, p) for s, p in zip(shares[:-1], parts[:-1], strict=True) if p)
    return Allocation(connected, parts[-1])


def allocation_of(event: Mapping[str, Any]) -> Allocation | None:
    """The allocation an event carries, None for an event of an unsplit payment."""
    splits = event.get("splits") or ()
    if not splits:
        return None
    return Allocation(
        tuple((s["merchant_id"], s["amount_minor"]) for s in splits), event.get("platform_fee_minor") or 0
    )
