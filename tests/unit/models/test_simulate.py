"""The simulator: deterministic for a seed, the wire columns, and each fraud scenario
leaves the trace it should."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.simulate import COLUMNS, SimConfig, simulate, write_csv

# Compromise rates raised so a small population shows every scenario.
CFG = SimConfig(days=20, n_cards=400, n_merchants=300, seed=11, terminal_rate=0.003, card_rate=0.003)


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return simulate(CFG)


def test_same_seed_same_data_other_seed_other_data(df):
    pd.testing.assert_frame_equal(df, simulate(CFG))
    other = simulate(SimConfig(days=20, n_cards=400, n_merchants=300, seed=12, terminal_rate=0.003, card_rate=0.003))
    assert not df["amount_minor"].equals(other["amount_minor"])


def test_columns_types_and_order(df, tmp_path):
    out = tmp_path / "tx.csv"
    write_csv(df, out)
    back = pd.read_csv(out)
    assert tuple(back.columns) == COLUMNS
    assert back["tx_id"].is_unique
    assert back["amount_minor"].dtype == np.int64 and (back["amount_minor"] > 0).all()
    assert set(back["fraud"]) == {0, 1}
    assert set(back["currency"]) <= {"USD", "EUR", "GBP"}
    ts = pd.to_datetime(back["timestamp"], utc=True, format="ISO8601")
    assert ts.is_monotonic_increasing
    assert back["timestamp"].str.endswith("Z").all()


def test_large_amounts_are_fraud(df):
    assert (df.loc[df.amount_minor > 22_000, "fraud"] == 1).all()


def test_compromised_terminals_turn_all_their_transactions_fraud(df):
    day = df.ts_ms // 86_400_000
    per = df.assign(day=day).groupby(["merchant_id", "day"]).fraud.agg(["mean", "size"])
    # some merchant-days are all fraud with several transactions (a compromised terminal)
    assert ((per["mean"] == 1) & (per["size"] >= 2)).sum() >= 5


def test_compromised_cards_change_spending(df):
    fraud_cards = df[(df.fraud == 1) & (df.amount_minor <= 22_000)].card_id.unique()
    assert len(fraud_cards) >= 10
    night = (df.ts_ms % 86_400_000) < 6 * 3_600_000
    assert night[df.fraud == 1].mean() > 2 * night[df.fraud == 0].mean()
    assert 0.002 < df.fraud.mean() < 0.05


def test_no_compromise_at_all_is_fine():
    quiet = simulate(SimConfig(days=2, n_cards=20, n_merchants=20, seed=1, terminal_rate=0, card_rate=0))
    assert (quiet.loc[quiet.fraud == 1, "amount_minor"] > 22_000).all()


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="days"):
        SimConfig(days=0)
