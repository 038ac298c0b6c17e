"""Labelled traffic of the other payment methods (wallet, bank debit, BNPL, crypto), so
their model is trained and measured on data the project makes itself, as the cards'
(models/simulate.py). Deterministic for a seed.

Each row is keyed as the risk stage keys the method (`streams.domain.methods.risk_key`:
`card_id` holds the instrument key) and carries the device where the method has one,
so the one feature code (models/features.py) reads the very states the stream keeps.
Genuine payers have a profile (mean amount, daily rate, a few usual merchants near
home) and start at a random day, so a new instrument is not fraud by itself. Fraud
follows each method's known patterns, on the features that method is judged by
(docs/fraud.md, "Every method"):

- **wallet**, device/account: a fraud device provisions several stolen wallet tokens
  (fresh wallet accounts) and spends with each in a burst at merchants the token never
  used; and account takeovers: a known wallet pays from a fraudster's device shared
  with other taken-over wallets, at higher amounts;
- **bank_transfer**, account/mandate: a taken-over account is debited several times
  in a day or two at new payees for several times its usual amount;
- **bnpl**, customer: synthetic identities stack plans: a new customer opens several
  plans at different merchants within days, near the top of the amount range;
- **crypto**, payer address: a fresh address pays several merchants in a burst
  within the hour, large amounts (genuine payers mostly reuse their address; some
  use a fresh one each time, as privacy-minded payers do).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from models.simulate import COLUMNS as CARD_COLUMNS
from schemas.money import exponent

METHODS = ("wallet", "bank_transfer", "bnpl", "crypto")
COLUMNS = (*CARD_COLUMNS, "method", "device")
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MAX_ROWS = 10_000_000
_CURRENCIES = {"wallet": ("USD", "EUR", "GBP"), "bank_transfer": ("USD", "EUR"), "bnpl": ("USD", "EUR", "GBP")}
_CURRENCY_P = {"wallet": (0.7, 0.2, 0.1), "bank_transfer": (0.7, 0.3), "bnpl": (0.6, 0.3, 0.1)}
# method -> (mean amount range in major units, daily rate range, usual merchants range)
_PROFILE = {
    "wallet": ((5, 80), (0.1, 2.0), (3, 12)),
    "bank_transfer": ((30, 400), (0.05, 0.4), (1, 5)),
    "bnpl": ((60, 400), (0.01, 0.12), (2, 8)),
    "crypto": ((20, 600), (0.02, 0.5), (1, 6)),
}


@dataclass(frozen=True)
class MethodSimConfig:
    days: int = 60
    n_instruments: int = 1_000  # per method
    n_merchants: int = 2_000
    seed: int = 0
    start: datetime = datetime(2026, 4, 6, tzinfo=UTC)  # a Monday, as the cards' simulator
    # Fraud attacks per day per method (Poisson means).
    wallet_farms_per_day: float = 0.3
    wallet_takeovers_per_day: float = 1.0
    bank_takeovers_per_day: float = 1.0
    bnpl_stacks_per_day: float = 0.5
    crypto_bursts_per_day: float = 1.0
    crypto_fresh_payers: float = 0.3  # share of genuine crypto payers using a fresh address each time
    neighbourhood: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.days <= 3660:
            raise ValueError("days must be in 1..3660")
        if not 1 <= self.n_instruments <= 1_000_000 or not 1 <= self.n_merchants <= 10_000_000:
            raise ValueError("n_instruments must be in 1..1,000,000 and n_merchants in 1..10,000,000")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


class _Rows:
    """Column lists the simulator appends to; one row per transaction."""

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.key: list[str] = []
        self.merchant: list[int] = []
        self.amount_major: list[float] = []  # drawn in major units; the frame carries integer amount_minor
        self.currency: list[str] = []
        self.fraud: list[int] = []
        self.method: list[str] = []
        self.device: list[str] = []

    def add(self, ts, key, merchant, amount_major, currency, fraud, method, device) -> None:
        if len(self.ts) >= MAX_ROWS:
            raise ValueError(f"more than {MAX_ROWS} rows")
        self.ts.append(int(ts))
        self.key.append(key)
        self.merchant.append(int(merchant))
        self.amount_major.append(float(amount_major))
        self.currency.append(currency)
        self.fraud.append(int(fraud))
        self.method.append(method)
        self.device.append(device)


def simulate_methods(cfg: MethodSimConfig) -> pd.DataFrame:
    """Transactions of every non-card method sorted by time: COLUMNS plus `ts_ms`."""
    rng = np.random.default_rng(cfg.seed)
    rows = _Rows()
    start_ms = int(cfg.start.timestamp() * 1000)
    means = {method: _genuine(rng, cfg, method, start_ms, rows) for method in METHODS}
    _wallet_fraud(rng, cfg, start_ms, rows, means["wallet"])
    _bank_fraud(rng, cfg, start_ms, rows, means["bank_transfer"])
    _bnpl_fraud(rng, cfg, start_ms, rows)
    _crypto_fraud(rng, cfg, start_ms, rows)
    return _frame(rows)


def _key(method: str, i: int | str) -> str:
    """The instrument's key as streams.domain.methods.risk_key makes it."""
    if method == "wallet":
        return f"wallet:google_pay:wtok_{i}"
    if method == "bank_transfer":
        return "bank:" + hashlib.sha256(f"acct{i}".encode()).hexdigest()
    if method == "bnpl":
        return f"bnpl:later:cust_{i}"
    return "crypto:0x" + hashlib.sha256(f"addr{i}".encode()).hexdigest()[:40]


def _day_secs(rng: np.random.Generator, n: int) -> np.ndarray:
    secs = rng.normal(43_200, 20_000, n)
    outside = (secs < 0) | (secs >= 86_400)
    secs[outside] = rng.uniform(0, 86_400, int(outside.sum()))
    return secs


def _currency(rng: np.random.Generator, method: str) -> str:
    if method == "crypto":
        return "USD"  # quoted in USD, paid in the asset
    return str(rng.choice(_CURRENCIES[method], p=_CURRENCY_P[method]))


def _genuine(
    rng: np.random.Generator, cfg: MethodSimConfig, method: str, start_ms: int, rows: _Rows
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine traffic of `method`; returns each payer's mean amount (major units) and first day."""
    (lo_a, hi_a), (lo_r, hi_r), (lo_f, hi_f) = _PROFILE[method]
    n, m, d = cfg.n_instruments, cfg.n_merchants, cfg.days
    mean = rng.uniform(lo_a, hi_a, n)
    rate = rng.uniform(lo_r, hi_r, n)
    home = rng.integers(0, m, n)
    k_fav = rng.integers(lo_f, hi_f + 1, n)
    fav = (home[:, None] + rng.integers(-cfg.neighbourhood, cfg.neighbourhood + 1, (n, hi_f))) % m
    first_day = rng.integers(-30, d, n)  # a third were there before the history: new payers keep arriving
    fresh = rng.random(n) < (cfg.crypto_fresh_payers if method == "crypto" else 0.0)
    for i in range(n):
        days = np.arange(max(first_day[i], 0), d)
        counts = rng.poisson(rate[i], len(days))
        total = int(counts.sum())
        if total == 0:
            continue
        cur = _currency(rng, method)
        day = np.repeat(days, counts)
        secs = _day_secs(rng, total)
        merchants = fav[i, (rng.random(total) * k_fav[i]).astype(np.int64)]
        amounts = np.abs(rng.normal(mean[i], mean[i] / 3, total))
        # Genuine look-alikes of the attacks: now and then a payer's spree (a holiday's
        # shopping, the month's bills) within hours at merchants it rarely uses.
        spree = rng.random(total) < 0.04
        merchants[spree] = rng.integers(0, m, int(spree.sum()))
        amounts[spree] *= rng.uniform(1, 3, int(spree.sum()))
        # Households share a device; a payer's new phone is a new device.
        household = i - i % 3 if rng.random() < 0.2 else i
        sends_device = rng.random() < 0.7  # not every merchant sends the device
        for j in range(total):
            key = _key(method, f"g{i}x{j}") if fresh[i] else _key(method, f"g{i}")
            device = ""
            if method in ("wallet", "bnpl") and sends_device:
                device = f"dev_{method}_g{household}" + (f"_{j}" if rng.random() < 0.05 else "")
            at = start_ms + day[j] * DAY_MS + secs[j] * 1000
            rows.add(at, key, merchants[j], amounts[j], cur, 0, method, device)
            if spree[j]:
                for _ in range(int(rng.integers(1, 4))):
                    at += int(rng.integers(60_000, 4 * HOUR_MS))
                    rows.add(at, key, rng.integers(0, m), amounts[j] * rng.uniform(0.5, 1.5), cur, 0, method, device)
    return mean, first_day


def _attacks(rng: np.random.Generator, cfg: MethodSimConfig, per_day: float) -> np.ndarray:
    """The day of each attack: Poisson per day."""
    return np.repeat(np.arange(cfg.days), rng.poisson(per_day, cfg.days))


def _burst(rng: np.random.Generator, start: int, n: int, span_ms: int) -> np.ndarray:
    return np.sort(start + rng.integers(0, span_ms, n))


def _victim(rng: np.random.Generator, payers: tuple[np.ndarray, np.ndarray], day: int) -> int | None:
    """A payer already paying by `day` (an account is taken over once it exists)."""
    known = np.flatnonzero(payers[1] <= day)
    return int(rng.choice(known)) if len(known) else None


def _wallet_fraud(rng: np.random.Generator, cfg: MethodSimConfig, start_ms: int, rows: _Rows, payers) -> None:
    m = cfg.n_merchants
    for a, day in enumerate(_attacks(rng, cfg, cfg.wallet_farms_per_day)):
        device = f"dev_farm_{a}"
        t0 = start_ms + int(day) * DAY_MS + int(rng.integers(0, DAY_MS))
        for tok in range(int(rng.integers(4, 13))):  # stolen cards provisioned as fresh wallet tokens
            n = int(rng.integers(2, 6))
            for ts in _burst(rng, t0 + tok * int(rng.integers(60_000, 1_800_000)), n, 3 * HOUR_MS):
                amount = rng.uniform(10, 300)
                rows.add(ts, _key("wallet", f"farm{a}t{tok}"), rng.integers(0, m), amount, "USD", 1, "wallet", device)
    for a, day in enumerate(_attacks(rng, cfg, cfg.wallet_takeovers_per_day)):
        # A taken-over wallet pays from the fraudster's device, which works a few at once.
        victim = _victim(rng, payers, int(day))
        if victim is None:
            continue
        device = f"dev_ato_{a // 3}"
        t0 = start_ms + int(day) * DAY_MS + int(rng.integers(0, DAY_MS))
        for ts in _burst(rng, t0, int(rng.integers(2, 7)), 2 * DAY_MS):
            amount = payers[0][victim] * rng.uniform(1, 4)
            rows.add(ts, _key("wallet", f"g{victim}"), rng.integers(0, m), amount, "USD", 1, "wallet", device)


def _bank_fraud(rng: np.random.Generator, cfg: MethodSimConfig, start_ms: int, rows: _Rows, payers) -> None:
    m = cfg.n_merchants
    for day in _attacks(rng, cfg, cfg.bank_takeovers_per_day):
        victim = _victim(rng, payers, int(day))
        if victim is None:
            continue
        t0 = start_ms + int(day) * DAY_MS + int(rng.integers(0, DAY_MS))
        for ts in _burst(rng, t0, int(rng.integers(2, 8)), int(rng.integers(1, 3)) * DAY_MS):
            amount = payers[0][victim] * rng.uniform(1.5, 6)
            rows.add(ts, _key("bank_transfer", f"g{victim}"), rng.integers(0, m), amount, "USD", 1, "bank_transfer", "")


def _bnpl_fraud(rng: np.random.Generator, cfg: MethodSimConfig, start_ms: int, rows: _Rows) -> None:
    m = cfg.n_merchants
    for a, day in enumerate(_attacks(rng, cfg, cfg.bnpl_stacks_per_day)):
        key, device = _key("bnpl", f"synth{a}"), f"dev_bnpl_synth{a}" if rng.random() < 0.7 else ""
        t0 = start_ms + int(day) * DAY_MS + int(rng.integers(0, DAY_MS))
        for ts in _burst(rng, t0, int(rng.integers(2, 8)), int(rng.integers(1, 5)) * DAY_MS):
            rows.add(ts, key, rng.integers(0, m), rng.uniform(60, 700), "USD", 1, "bnpl", device)


def _crypto_fraud(rng: np.random.Generator, cfg: MethodSimConfig, start_ms: int, rows: _Rows) -> None:
    m = cfg.n_merchants
    for a, day in enumerate(_attacks(rng, cfg, cfg.crypto_bursts_per_day)):
        key = _key("crypto", f"burst{a}")
        t0 = start_ms + int(day) * DAY_MS + int(rng.integers(0, DAY_MS))
        for ts in _burst(rng, t0, int(rng.integers(2, 7)), HOUR_MS):
            rows.add(ts, key, rng.integers(0, m), rng.uniform(50, 3_000), "USD", 1, "crypto", "")


def _frame(rows: _Rows) -> pd.DataFrame:
    ts = np.asarray(rows.ts, dtype=np.int64)
    exps = np.array([exponent(c) for c in rows.currency], dtype=np.int64)
    amount_minor = np.maximum(np.rint(np.asarray(rows.amount_major) * 10.0**exps), 1).astype(np.int64)
    keys = np.asarray(rows.key)
    order = np.lexsort((keys, ts))
    ts = ts[order]
    n = len(ts)
    stamps = np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms")
    width = len(str(max(n - 1, 1)))
    return pd.DataFrame(
        {
            "tx_id": [f"mtx_{i:0{width}d}" for i in range(n)],
            "timestamp": np.char.add(stamps.astype(str), "Z"),
            "card_id": keys[order],
            "merchant_id": np.char.add("m_", np.asarray(rows.merchant)[order].astype(str)),
            "amount_minor": amount_minor[order],
            "currency": np.asarray(rows.currency)[order],
            "fraud": np.asarray(rows.fraud, dtype=np.int8)[order],
            "method": np.asarray(rows.method)[order],
            "device": np.asarray(rows.device)[order],
            "ts_ms": ts,
        }
    )


def write_csv(df: pd.DataFrame, out) -> None:
    df.to_csv(out, columns=list(COLUMNS), index=False)
