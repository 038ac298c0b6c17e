"""A transaction simulator with labelled fraud scenarios, so training, replay and tests
run on data the project makes itself. Deterministic for a seed; numpy-vectorized.

Modelled on the public "Reproducible Machine Learning for Credit Card Fraud
Detection" handbook (Le Borgne et al.), with cards in several currencies:

- genuine spending: each card has a mean amount, a daily rate and a handful of usual
  merchants near its home; transactions happen mostly in the day;
- **large amounts**: every transaction above 220 major units is fraud;
- **compromised terminals**: each day a few merchants are compromised for 28 days:
  all their transactions are fraud;
- **compromised cards**: each day a few cards are compromised for 14 days: a third of
  their transactions are fraudulent with 5x the amount, half of those at merchants the
  card never uses, plus extra night-time transactions (changed spending, velocity).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.money import exponent

COLUMNS = ("tx_id", "timestamp", "card_id", "merchant_id", "amount_minor", "currency", "fraud")
DAY_MS = 86_400_000
_CURRENCIES = ("USD", "EUR", "GBP")
_CURRENCY_P = (0.7, 0.2, 0.1)
MAX_ROWS = 50_000_000


@dataclass(frozen=True)
class SimConfig:
    days: int = 30
    n_cards: int = 5_000
    n_merchants: int = 10_000
    seed: int = 0
    start: datetime = datetime(2026, 4, 6, tzinfo=UTC)  # a Monday
    large_amount_major: int = 220
    # Compromises per entity per day: 2 terminals of 10,000 and 3 cards of 5,000 a
    # day on average, as in the handbook; rates so small populations stay realistic.
    terminal_rate: float = 2e-4
    terminal_days: int = 28
    card_rate: float = 6e-4
    card_days: int = 14
    neighbourhood: int = 50  # usual merchants lie within this many merchant ids of home

    def __post_init__(self) -> None:
        if not 1 <= self.days <= 3660:
            raise ValueError("days must be in 1..3660")
        if not 1 <= self.n_cards <= 10_000_000 or not 1 <= self.n_merchants <= 10_000_000:
            raise ValueError("n_cards and n_merchants must be in 1..10,000,000")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


def simulate(cfg: SimConfig) -> pd.DataFrame:
    """Transactions sorted by time: COLUMNS plus `ts_ms` (int64 epoch ms)."""
    rng = np.random.default_rng(cfg.seed)
    C, M, D = cfg.n_cards, cfg.n_merchants, cfg.days

    # Card profiles.
    mean_amount = rng.uniform(5, 100, C)
    sd_amount = mean_amount / 2
    rate = rng.uniform(0, 4, C)
    home = rng.integers(0, M, C)
    k_fav = rng.integers(3, 16, C)
    fav = (home[:, None] + rng.integers(-cfg.neighbourhood, cfg.neighbourhood + 1, (C, 15))) % M
    card_cur = rng.choice(len(_CURRENCIES), C, p=_CURRENCY_P)

    # Genuine transactions: Poisson per card-day, time of day ~ N(noon, 5.5 h).
    counts = rng.poisson(np.tile(rate, D))
    if counts.sum() > MAX_ROWS:
        raise ValueError(f"{counts.sum()} rows is over the bound of {MAX_ROWS}")
    card = np.repeat(np.tile(np.arange(C), D), counts)
    day = np.repeat(np.repeat(np.arange(D), C), counts)
    n = len(card)
    secs = rng.normal(43_200, 20_000, n)
    outside = (secs < 0) | (secs >= 86_400)
    secs[outside] = rng.uniform(0, 86_400, int(outside.sum()))  # no pile-up at midnight
    merchant = fav[card, (rng.random(n) * k_fav[card]).astype(np.int64)]
    amount = np.abs(rng.normal(mean_amount[card], sd_amount[card]))

    # Compromised cards: extra night-time transactions by the fraudster.
    comp_card, comp_card_day = _compromise(rng, C, D, cfg.card_rate)
    extra_per = rng.poisson(1.0, (len(comp_card), cfg.card_days))
    e_card = np.repeat(np.repeat(comp_card, cfg.card_days), extra_per.ravel())
    e_day = np.repeat((comp_card_day[:, None] + np.arange(cfg.card_days)).ravel(), extra_per.ravel())
    keep = e_day < D
    e_card, e_day = e_card[keep], e_day[keep]
    ne = len(e_card)
    card = np.concatenate([card, e_card])
    day = np.concatenate([day, e_day])
    secs = np.concatenate([secs, rng.uniform(0, 6 * 3600, ne)])
    merchant = np.concatenate([merchant, rng.integers(0, M, ne)])
    amount = np.concatenate([amount, np.abs(rng.normal(mean_amount[e_card], sd_amount[e_card])) * 5])
    n = len(card)
    fraud = np.zeros(n, dtype=np.int8)
    fraud[n - ne :] = 1

    # Compromised cards: a third of their genuine-looking transactions become fraud,
    # 5x the amount, half of them at a merchant the card does not use.
    active = _active(comp_card, comp_card_day, cfg.card_days, card, day, C)
    hit = active & (rng.random(n) < 1 / 3) & (fraud == 0)
    amount[hit] *= 5
    move = hit & (rng.random(n) < 0.5)
    merchant[move] = rng.integers(0, M, int(move.sum()))
    fraud[hit] = 1

    # Compromised terminals.
    comp_m, comp_m_day = _compromise(rng, M, D, cfg.terminal_rate)
    fraud[_active(comp_m, comp_m_day, cfg.terminal_days, merchant, day, M)] = 1

    # Money: integer minor units of the card's currency; large amounts are fraud.
    cur = card_cur[card]
    exps = np.array([exponent(c) for c in _CURRENCIES])[cur]
    amount_minor = np.maximum(np.rint(amount * 10.0**exps), 1).astype(np.int64)
    fraud[amount > cfg.large_amount_major] = 1

    start_ms = int(cfg.start.timestamp() * 1000)
    ts_ms = start_ms + day.astype(np.int64) * DAY_MS + (secs * 1000).astype(np.int64)
    order = np.lexsort((card, ts_ms))
    ts_ms = ts_ms[order]
    stamps = np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms")
    width = len(str(max(n - 1, 1)))
    return pd.DataFrame(
        {
            "tx_id": [f"tx_{i:0{width}d}" for i in range(n)],
            "timestamp": np.char.add(stamps.astype(str), "Z"),
            "card_id": np.char.add("card_", card[order].astype(str)),
            "merchant_id": np.char.add("m_", merchant[order].astype(str)),
            "amount_minor": amount_minor[order],
            "currency": np.array(_CURRENCIES)[cur[order]],
            "fraud": fraud[order],
            "ts_ms": ts_ms,
        }
    )


def _compromise(rng: np.random.Generator, population: int, days: int, rate: float):
    per_day = rng.poisson(rate * population, days)
    who = rng.integers(0, population, int(per_day.sum()))
    when = np.repeat(np.arange(days), per_day)
    return who, when


def _active(who, when, length, entity, day, population):
    """For each transaction (entity, day): is the entity compromised that day? Looks up
    the latest compromise of the entity that started on or before the day."""
    if len(who) == 0:
        return np.zeros(len(entity), dtype=bool)
    span = int(day.max(initial=0)) + length + 1
    keys = np.sort(who.astype(np.int64) * span + when)
    tx_keys = entity.astype(np.int64) * span + day
    i = np.searchsorted(keys, tx_keys, side="right") - 1
    valid = i >= 0
    k = keys[np.where(valid, i, 0)]
    return valid & (k // span == entity) & (day - k % span < length)


def write_csv(df: pd.DataFrame, out: Path) -> None:
    df.to_csv(out, columns=list(COLUMNS), index=False)
