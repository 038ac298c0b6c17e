"""The other methods' simulator: deterministic, the risk stage's instrument keys, and
fraud in each method's own pattern (docs/fraud.md, "Every method"); its history goes
through the one feature code and trains the methods model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.features import FEATURE_NAMES, METHODS_MODEL_FEATURES
from models.history import DAY_MS, HistoryError, history_features, load_history, validate_history
from models.simulate_methods import COLUMNS, HOUR_MS, METHODS, MethodSimConfig, simulate_methods, write_csv
from models.train import FEATURE_NAMES as CARD_FEATURES
from models.train import ModelArtifactError, load_model, train_methods_artifact

CFG = MethodSimConfig(days=28, n_instruments=300, n_merchants=400, seed=3)


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return simulate_methods(CFG)


def test_same_seed_same_data_other_seed_other_data(df):
    pd.testing.assert_frame_equal(df, simulate_methods(CFG))
    assert not df.equals(simulate_methods(MethodSimConfig(days=28, n_instruments=300, n_merchants=400, seed=4)))


def test_every_method_has_genuine_and_fraud_rows_keyed_as_the_risk_stage_keys_them(df, tmp_path):
    assert list(df.columns) == [*COLUMNS, "ts_ms"] and df["ts_ms"].is_monotonic_increasing
    prefixes = {"wallet": "wallet:google_pay:", "bank_transfer": "bank:", "bnpl": "bnpl:later:", "crypto": "crypto:0x"}
    for method in METHODS:
        rows = df[df.method == method]
        assert 0 < rows.fraud.sum() < len(rows) / 5, method
        assert rows.card_id.str.startswith(prefixes[method]).all(), method
    assert (df[df.method.isin(["bank_transfer", "crypto"])].device == "").all()  # no device on those rails
    write_csv(df, tmp_path / "m.csv")
    back = load_history(tmp_path / "m.csv")
    assert list(back.method) == list(df.method) and list(back.device) == list(df.device)


def test_the_fraud_follows_each_methods_pattern(df):
    fraud = df[df.fraud == 1]
    # wallet: fraud devices work several wallet tokens; genuine devices are a household's
    per_device = df[df.method == "wallet"].groupby("device").card_id.nunique()
    farm = fraud[(fraud.method == "wallet") & (fraud.device != "")].device.unique()
    assert per_device[farm].median() >= 3 > per_device.drop(farm, errors="ignore").median()
    # crypto and BNPL: bursts from one address / customer
    for method, span_ms in (("crypto", HOUR_MS), ("bnpl", 5 * DAY_MS)):
        bursts = fraud[fraud.method == method].groupby("card_id").ts_ms.agg(["count", "min", "max"])
        assert (bursts["count"] >= 2).all() and ((bursts["max"] - bursts["min"]) <= span_ms).all(), method
    # bank: a taken-over account is debited more than it usually is
    bank = df[df.method == "bank_transfer"]
    usual = bank[bank.fraud == 0].groupby("card_id").amount_minor.mean()
    hit = bank[bank.fraud == 1]
    assert (hit.amount_minor.to_numpy() > usual.reindex(hit.card_id).to_numpy()).mean() > 0.9


def test_the_history_columns_are_optional_and_checked():
    base = {
        "tx_id": ["a"],
        "timestamp": ["2026-04-06T10:00:00Z"],
        "card_id": ["c"],
        "merchant_id": ["m"],
        "amount_minor": [100],
        "currency": ["USD"],
        "fraud": [0],
    }
    card = validate_history(pd.DataFrame(base))
    assert list(card.method) == ["card"] and list(card.device) == [""]
    with pytest.raises(HistoryError, match="method is not one of"):
        validate_history(pd.DataFrame(base | {"method": ["cheque"]}))


def test_the_device_reaches_the_features(df):
    hist = validate_history(df.drop(columns=["ts_ms"]))
    X = history_features(hist, 7 * DAY_MS)
    has_device = hist.device.to_numpy() != ""
    col = FEATURE_NAMES.index("device_cnt_1d")
    assert np.isfinite(X[has_device, col]).all() and np.isnan(X[~has_device, col]).all()


def test_the_methods_artifact_measures_both_designs_and_is_verified_at_load(df, tmp_path):
    hist = validate_history(df.drop(columns=["ts_ms"]))
    X = history_features(hist, 7 * DAY_MS)
    manifest = train_methods_artifact(hist, X, tmp_path / "a", feedback_delay_days=7)
    assert manifest["features"] == list(METHODS_MODEL_FEATURES)
    for design in ("shared", "per_method"):
        assert set(manifest["metrics"][design]) >= {"all", *METHODS}
        assert manifest["metrics"][design]["all"]["auc"] > 0.8
    design = manifest["design"]
    assert manifest["metrics"][design]["all"]["ap"] >= max(m["all"]["ap"] for m in manifest["metrics"].values())
    again = train_methods_artifact(hist, X, tmp_path / "b", feedback_delay_days=7)
    assert again["sha256"] == manifest["sha256"]  # seeded: the same bytes
    assert load_model(tmp_path / "a", METHODS_MODEL_FEATURES).version == manifest["model_version"]
    with pytest.raises(ModelArtifactError, match="features"):
        load_model(tmp_path / "a", CARD_FEATURES)
    with pytest.raises(ValueError, match="methods history"):
        train_methods_artifact(hist.assign(method="card"), X, tmp_path / "c", feedback_delay_days=7)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="days"):
        MethodSimConfig(days=0)
    with pytest.raises(ValueError, match="n_instruments"):
        MethodSimConfig(n_instruments=0)


def test_the_per_method_model_sends_each_row_to_its_methods_model():
    from models.features import N_FEATURES, NON_CARD_METHODS
    from models.train import PerMethodModel, method_indicators

    class Const:
        def __init__(self, p):
            self.p = p

        def predict_proba(self, X):
            assert X.shape[1] == N_FEATURES
            return np.tile([1 - self.p, self.p], (len(X), 1))

    model = PerMethodModel({m: Const(i / 10) for i, m in enumerate(NON_CARD_METHODS)})
    methods = ["crypto", "wallet", "bnpl", "crypto", "bank_transfer"]
    X = np.hstack([np.zeros((len(methods), N_FEATURES)), method_indicators(methods)])
    assert list(model.predict_proba(X)[:, 1]) == [0.3, 0.0, 0.2, 0.3, 0.1]
    with pytest.raises(ValueError, match="indicator"):
        model.predict_proba(np.zeros((1, N_FEATURES + len(NON_CARD_METHODS))))
