"""A labelled history (the replay CSV) and its features through the one feature spec.

`history_features` drives the same state classes the stream keeps in RocksDB, one
transaction at a time in event-time order, and reveals each label to them only
`feedback_delay` after its transaction, as chargebacks would arrive.
"""

from __future__ import annotations

import array
import gc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from models.features import N_FEATURES, StateStore, Txn
from schemas.money import CURRENCY_EXPONENTS

COLUMNS = ("tx_id", "timestamp", "card_id", "merchant_id", "amount_minor", "currency", "fraud")
# Optional (models/simulate_methods.py writes them): the payment method (absent or empty:
# card) and the device (empty: none), which the wallet and BNPL features read.
OPTIONAL_COLUMNS = ("method", "device")
METHODS = ("card", "wallet", "bank_transfer", "bnpl", "crypto")
DAY_MS = 86_400_000
MAX_ROWS = 50_000_000
PROGRESS_EVERY = 50_000


class HistoryError(ValueError):
    """An input file that is not a usable history; the message says which row and why."""


def load_history(path: Path | str) -> pd.DataFrame:
    """Read and validate the CSV; returns it sorted by event time (stable), with
    `ts_ms` (int64 epoch ms) and `row` (the input line order) added."""
    try:
        df = pd.read_csv(
            path,
            dtype={
                "tx_id": str,
                "card_id": str,
                "merchant_id": str,
                "currency": str,
                "timestamp": str,
                "method": str,
                "device": str,
            },
            keep_default_na=False,
        )
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise HistoryError(f"{path}: cannot read as CSV: {e}") from None
    return validate_history(df, str(path))


def validate_history(df: pd.DataFrame, name: str = "history") -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise HistoryError(f"{name}: missing columns {missing}; expected {','.join(COLUMNS)}")
    if len(df) > MAX_ROWS:
        raise HistoryError(f"{name}: {len(df)} rows is over the bound of {MAX_ROWS}")
    df = df.loc[:, list(COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in df.columns]].copy()
    for col in OPTIONAL_COLUMNS:
        df[col] = df[col].fillna("").astype(str) if col in df.columns else ""
    df.loc[df["method"] == "", "method"] = "card"

    def bad(mask, what):
        if mask.any():
            i = int(np.flatnonzero(np.asarray(mask))[0])
            raise HistoryError(f"{name}: data row {i + 1}: {what} ({df.iloc[i].to_dict()})")

    for col in ("tx_id", "card_id", "merchant_id"):
        bad(df[col].astype(str).str.len() == 0, f"empty {col}")
    ts = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601", errors="coerce")
    bad(ts.isna(), "timestamp is not ISO 8601")
    amount = pd.to_numeric(df["amount_minor"], errors="coerce")
    bad(amount.isna() | (amount < 0) | (amount != amount.round()), "amount_minor is not a non-negative integer")
    bad(~df["currency"].isin(list(CURRENCY_EXPONENTS)), "currency is not ISO 4217")
    fraud = pd.to_numeric(df["fraud"], errors="coerce")
    bad(~fraud.isin([0, 1]), "fraud is not 0 or 1")
    bad(~df["method"].isin(METHODS), f"method is not one of {', '.join(METHODS)}")
    df["ts_ms"] = ts.astype("datetime64[ms, UTC]").astype("int64")
    df["amount_minor"] = amount.astype("int64")
    df["fraud"] = fraud.astype("int8")
    df["row"] = np.arange(len(df))
    return df.sort_values(["ts_ms", "row"], kind="stable").reset_index(drop=True)


def history_features(
    df: pd.DataFrame, feedback_delay_ms: int, progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """Feature matrix (len(df) x N_FEATURES, float64) of a time-sorted history.

    Before each transaction, every label whose reveal time (its transaction's time +
    the delay) has come is applied, so a transaction's features see exactly the labels
    a live scorer would have seen at that moment.
    """
    assert feedback_delay_ms >= 0
    ts = df["ts_ms"].tolist()
    cards = df["card_id"].tolist()
    merchants = df["merchant_id"].tolist()
    amounts = df["amount_minor"].tolist()
    currencies = df["currency"].tolist()
    fraud = df["fraud"].tolist()
    devices = [d or None for d in df["device"].tolist()] if "device" in df.columns else [None] * len(ts)
    n = len(ts)
    store = StateStore()
    step, label = store.step, store.label
    out = array.array("d")
    extend = out.extend
    # Millions of small, acyclic state objects: the cyclic GC would rescan them over
    # and over (measured: 16% of the loop at 600k rows, more as state grows).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _feed(
            ts, cards, merchants, amounts, currencies, devices, fraud, feedback_delay_ms, step, label, extend, progress
        )
    finally:
        if gc_was_enabled:
            gc.enable()
    if progress is not None:
        progress(n % PROGRESS_EVERY)
    return np.frombuffer(out, dtype=np.float64).reshape(n, N_FEATURES)


def _feed(ts, cards, merchants, amounts, currencies, devices, fraud, delay, step, label, extend, progress) -> None:
    """The hot loop: labels due before each tx, then the tx (features, then update)."""
    j = 0
    for i in range(len(ts)):
        t = ts[i]
        assert i == 0 or t >= ts[i - 1], "history must be sorted by event time"
        while j < i and ts[j] + delay <= t:
            label(cards[j], merchants[j], ts[j] + delay, fraud[j] == 1)
            j += 1
        extend(step(Txn(t, cards[i], merchants[i], amounts[i], currencies[i], None, devices[i])))
        if progress is not None and (i + 1) % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
