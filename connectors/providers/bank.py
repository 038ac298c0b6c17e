"""A simulated bank payout rail (credit transfers to merchants' bank accounts).

Deterministic like `rails.py`: every choice is a hash of (seed, payout id, what is
drawn), never a global RNG or the clock, so a payout sent at the same event time
always gets the same answer. A payout is confirmed (`paid`) `confirm_days` after it
is sent, or fails `fail_days` later with a reason (the beneficiary bank returns it):
at `fail_per_mille`, and always for an account listed as closed. Nothing answers
later than `window_days` after sending: past that a payout without an answer is an
error (the audit checks it, streams/domain/payouts.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DAY_MS = 86_400_000
FAILURE_REASONS = ("account_closed", "invalid_account", "beneficiary_bank_rejected")
MAX_WINDOW_DAYS = 30


@dataclass(frozen=True)
class BankAnswer:
    status: str  # "paid" or "failed"
    at_ms: int  # event time the bank answers
    reason: str | None = None  # why it failed

    def __post_init__(self) -> None:
        assert self.status in ("paid", "failed") and (self.reason is None) == (self.status == "paid"), self


@dataclass(frozen=True)
class BankRail:
    seed: int = 0
    fail_per_mille: int = 20
    confirm_days: int = 1
    fail_days: int = 3  # a return takes longer than a confirmation
    closed_accounts: frozenset[str] = frozenset()  # merchant ids whose account is closed: every payout fails

    def __post_init__(self) -> None:
        assert 0 <= self.fail_per_mille <= 1000, self.fail_per_mille
        assert 0 < self.confirm_days <= self.window_days and 0 < self.fail_days <= MAX_WINDOW_DAYS, self

    @property
    def window_days(self) -> int:
        """The latest any answer comes, in days after sending."""
        return max(self.confirm_days, self.fail_days)

    @property
    def window_ms(self) -> int:
        return self.window_days * DAY_MS

    def answer(self, payout_id: str, merchant_id: str, sent_at_ms: int) -> BankAnswer:
        """What the bank answers to a payout sent at `sent_at_ms`, and when."""
        if merchant_id in self.closed_accounts:
            return BankAnswer("failed", sent_at_ms + self.fail_days * DAY_MS, "account_closed")
        if self._u(payout_id, "fail") * 1000 < self.fail_per_mille:
            reason = FAILURE_REASONS[int(self._u(payout_id, "reason") * len(FAILURE_REASONS))]
            return BankAnswer("failed", sent_at_ms + self.fail_days * DAY_MS, reason)
        return BankAnswer("paid", sent_at_ms + self.confirm_days * DAY_MS)

    def _u(self, key: str, what: str) -> float:
        digest = hashlib.sha256(f"{self.seed}\x1fbank\x1f{key}\x1f{what}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64
