"""A small simulated history and its features, shared by the model tests."""

from __future__ import annotations

import pandas as pd
import pytest

from models.history import DAY_MS, history_features, validate_history
from models.simulate import SimConfig, simulate


@pytest.fixture(scope="session")
def small_history() -> pd.DataFrame:
    df = simulate(SimConfig(days=28, n_cards=300, n_merchants=400, seed=5, terminal_rate=0.002, card_rate=0.003))
    return validate_history(df.drop(columns=["ts_ms"]))


@pytest.fixture(scope="session")
def small_features(small_history):
    return history_features(small_history, 7 * DAY_MS)
