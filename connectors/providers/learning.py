"""Routing that learns: approval odds per segment and provider, Thompson sampling
over them, cost-aware, as plain values and pure functions (the router calls them).

A **segment** is (payment method, BIN country, currency, amount band): the rails'
approval odds differ by issuer and by amount, so one rolling rate per provider (the
rule router's) cannot see that acq_south approves a weak issuer's cards better. Fine
segments fill slowly (each partition learns alone), so each answer also counts for
its coarse segment, (method, BIN country). The choice reads the fine segment once
every candidate holds `fine_observations` answers there (a young posterior explores
too much: the odds of two acquirers differ by a point or two), else the coarse one,
else (below `min_observations`) none.

An **arm** is the (segment, provider) pair's evidence: approvals and declines (the
provider's *answers*; refusals and timeouts are the breaker's business), in
thousandths, decayed by `decay_per_mille` at each new answer of that arm, so old
evidence fades (about 1000 / (1000 - decay) answers of memory) and a provider whose
issuers turn stricter is seen to. Integers, so the stored state is exact JSON.

**Choice**: for each eligible provider, theta = the Beta(1 + approvals, 1 + declines)
quantile at a uniform drawn from sha256(payment id, segment, provider) (Thompson
sampling without an RNG: the same payment and the same arms give the same theta);
the expected value of sending it there is theta * (margin - fee), margin = the
approval's value (`margin_bps` of the amount), fee = the rail's price of a capture
(paid only when approved). The best value wins; a tie keeps the rule's order. No
choice (None: the rule router decides) while the segment holds fewer than
`min_observations` answers over the eligible providers at either level.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.special import betaincinv

MILLI = 1_000  # one answer, in the arms' thousandths
MAX_ARMS = 4_096
UNKNOWN_COUNTRY = "ZZ"  # ISO 3166 user-assigned: a BIN the table does not know


@dataclass(frozen=True)
class Learn:
    """The `[learn]` table of routing.toml."""

    margin_bps: int  # what an approved payment is worth to the merchant, of its amount
    min_observations: int  # answers in the coarse segment (over the eligible providers) before it is trusted
    fine_observations: int  # answers of every eligible provider in the fine segment before it is read
    decay_per_mille: int  # each arm's evidence kept per new answer of that arm
    max_arms: int  # (segment, provider) pairs kept per partition; the stalest go first
    amount_bands_minor: tuple[int, ...]  # ascending band starts; band i: amounts >= bands[i-1]
    bin_countries: Mapping[str, str]  # BIN prefix -> ISO 3166 alpha-2 of the issuer (longest wins)

    def __post_init__(self) -> None:
        checks = {
            "margin_bps must be 0..10000": 0 <= self.margin_bps <= 10_000,
            "min_observations must be 1..100000": 1 <= self.min_observations <= 100_000,
            "fine_observations must be 1..100000": 1 <= self.fine_observations <= 100_000,
            "decay_per_mille must be 500..1000": 500 <= self.decay_per_mille <= 1_000,
            f"max_arms must be 1..{MAX_ARMS}": 1 <= self.max_arms <= MAX_ARMS,
            "amount_bands_minor must ascend, at most 32": (
                list(self.amount_bands_minor) == sorted(set(self.amount_bands_minor))
                and len(self.amount_bands_minor) <= 32
            ),
            "bin_countries: 1-8 digit prefixes to 2-letter countries": all(
                p.isdigit() and 1 <= len(p) <= 8 and len(c) == 2 and c.isalpha() and c.isupper()
                for p, c in self.bin_countries.items()
            ),
        }
        bad = [message for message, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"learn: {'; '.join(bad)}")


@dataclass(frozen=True)
class Arm:
    segment: str
    provider: str
    approved_milli: int
    declined_milli: int
    at_ms: int  # event time of its latest answer: the stalest arm is dropped first


def bin_country(card_bin: str, table: Mapping[str, str]) -> str:
    longest = max((p for p in table if card_bin.startswith(p)), key=len, default=None)
    return table[longest] if longest is not None else UNKNOWN_COUNTRY


def amount_band(amount_minor: int, bands: Sequence[int]) -> int:
    return sum(1 for start in bands if amount_minor >= start)


def segment_of(method: str, card_bin: str, currency: str, amount_minor: int, learn: Learn) -> str:
    country = bin_country(card_bin, learn.bin_countries) if card_bin else UNKNOWN_COUNTRY
    return f"{method}|{country}|{currency}|{amount_band(amount_minor, learn.amount_bands_minor)}"


def segments_of(segment: str) -> tuple[str, str]:
    """(fine, coarse): the segment and its (method, BIN country) level."""
    method, country, _, _ = segment.split("|")
    return segment, f"{method}|{country}|*|*"


def draw(payment_id: str, segment: str, provider: str) -> float:
    """A uniform in (0, 1) from the payment: the sampler's only randomness."""
    digest = hashlib.sha256(f"route\x1f{payment_id}\x1f{segment}\x1f{provider}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64


def theta(arm: Arm | None, u: float) -> float:
    """The Beta posterior's quantile at `u` (flat prior: one imaginary answer each way)."""
    a = 1 + (arm.approved_milli if arm else 0) / MILLI
    b = 1 + (arm.declined_milli if arm else 0) / MILLI
    return float(betaincinv(a, b, u))


def arms_of(arms: Sequence[Arm], segment: str) -> dict[str, Arm]:
    return {a.provider: a for a in arms if a.segment == segment}


def choose(
    arms: Sequence[Arm],
    learn: Learn,
    segment: str,
    candidates: Sequence[tuple[str, int]],
    amount_minor: int,
    payment_id: str,
) -> str | None:
    """The provider to try first among `candidates` ((provider, fee_minor), in the rule's
    order, every one eligible), or None: too little evidence, the rule decides. The
    evidence is the fine segment's when every candidate has enough there, else the
    coarse level's when the candidates have enough together."""
    if not candidates:
        return None
    fine, coarse = segments_of(segment)
    mine = arms_of(arms, fine)
    if all(
        p in mine and mine[p].approved_milli + mine[p].declined_milli >= learn.fine_observations * MILLI
        for p, _ in candidates
    ):
        return _best(mine, learn, fine, candidates, amount_minor, payment_id)
    mine = arms_of(arms, coarse)
    if (
        sum(mine[p].approved_milli + mine[p].declined_milli for p, _ in candidates if p in mine)
        >= learn.min_observations * MILLI
    ):
        return _best(mine, learn, coarse, candidates, amount_minor, payment_id)
    return None


def _best(
    mine: Mapping[str, Arm],
    learn: Learn,
    segment: str,
    candidates: Sequence[tuple[str, int]],
    amount_minor: int,
    payment_id: str,
) -> str:
    margin_minor = amount_minor * learn.margin_bps // 10_000
    best, best_value = candidates[0][0], float("-inf")
    for provider, fee_minor in candidates:
        # Where the fee eats the whole margin the cost stops mattering: the odds decide.
        value = theta(mine.get(provider), draw(payment_id, segment, provider)) * max(margin_minor - fee_minor, 1)
        if value > best_value:
            best, best_value = provider, value
    return best


def observe(
    arms: tuple[Arm, ...], learn: Learn, segment: str, provider: str, approved: bool, at_ms: int
) -> tuple[Arm, ...]:
    """The arms after one answer, counted in the segment and its coarse level."""
    for level in segments_of(segment):
        arms = _observe(arms, learn, level, provider, approved, at_ms)
    return arms


def _observe(
    arms: tuple[Arm, ...], learn: Learn, segment: str, provider: str, approved: bool, at_ms: int
) -> tuple[Arm, ...]:
    """One arm decayed and counted, the stalest dropped past `max_arms`; sorted by
    (segment, provider), so equal evidence is equal state."""
    d = learn.decay_per_mille
    old = next((a for a in arms if a.segment == segment and a.provider == provider), None)
    approved_milli = (old.approved_milli * d // MILLI if old else 0) + (MILLI if approved else 0)
    declined_milli = (old.declined_milli * d // MILLI if old else 0) + (0 if approved else MILLI)
    new = Arm(segment, provider, approved_milli, declined_milli, max(at_ms, old.at_ms if old else at_ms))
    kept = [a for a in arms if a is not old] + [new]
    if len(kept) > learn.max_arms:
        kept.remove(min(kept, key=lambda a: (a.at_ms, a.segment, a.provider)))
    return tuple(sorted(kept, key=lambda a: (a.segment, a.provider)))
