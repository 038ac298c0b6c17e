"""Replay: labels are revealed only after the delay (a model never sees a label early),
every input row gets a score in [0, 1] in input order, and the metrics are computed on
the last days. Plus the history loader's clear errors and card precision@k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.features import FEATURE_NAMES
from models.history import DAY_MS, HistoryError, history_features, load_history
from models.metrics import card_precision_at_k
from models.replay import ReplayConfig, replay, write_scores
from models.simulate import COLUMNS


def test_labels_reach_features_only_after_the_delay(small_history):
    risk = FEATURE_NAMES.index("merch_labeled_30d")
    X0 = history_features(small_history, 0)
    X7 = history_features(small_history, 7 * DAY_MS)
    ts = small_history["ts_ms"].to_numpy()
    first_week = ts < ts[0] + 7 * DAY_MS
    assert (X7[first_week, risk] == 0).all()  # nothing revealed in the first 7 days
    assert X0[first_week, risk].sum() > 0  # with no delay, labels arrive at once
    # label-free columns do not depend on the delay
    amount = FEATURE_NAMES.index("card_cnt_1d")
    assert np.array_equal(X0[:, amount], X7[:, amount])


def test_replay_scores_every_row_in_input_order(small_history, tmp_path):
    result = replay(small_history, ReplayConfig(feedback_delay_days=7, retrain_every_days=7, hindsight=True))
    assert result.retrains >= 1
    assert ((result.scores >= 0) & (result.scores <= 1)).all()
    # the first week has no revealed label, hence no model: the no-model score
    ts = small_history["ts_ms"].to_numpy()
    assert (result.scores[ts < ts[0] + 7 * DAY_MS] == 0).all()
    m = result.metrics
    assert m["rows"] == int((ts >= ts[-1] - 7 * DAY_MS).sum())
    assert 0.5 < m["auc"] <= 1 and 0 < m["ap"] <= 1 and 0 <= m["card_p_at_100"] <= 1
    assert result.hindsight is not None
    s = result.summary()
    assert s["scoring_tx_per_s"] > 0 and s["rows"] == len(small_history)

    out = tmp_path / "scores.csv"
    shuffled = small_history.sample(frac=1, random_state=0)  # "row" keeps the input order
    write_scores(shuffled, result.scores[shuffled.index.to_numpy()], out)
    back = pd.read_csv(out)
    assert list(back.columns) == ["tx_id", "score"]
    assert back["tx_id"].tolist() == small_history.sort_values("row")["tx_id"].tolist()


def test_replay_is_deterministic(small_history):
    a = replay(small_history, ReplayConfig(retrain_every_days=14))
    b = replay(small_history, ReplayConfig(retrain_every_days=14))
    assert np.array_equal(a.scores, b.scores)


def test_card_precision_at_k():
    ts = np.array([0, 0, 0, DAY_MS, DAY_MS])
    cards = np.array(["a", "a", "b", "a", "b"])
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8])
    fraud = np.array([0, 1, 0, 0, 0])
    # day 0: top-1 card is a (max 0.9), compromised that day; day 1: top is b, genuine
    assert card_precision_at_k(ts, cards, scores, fraud, k=1) == 0.5
    assert card_precision_at_k(ts, cards, scores, fraud, k=2) == 0.25


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.drop(columns=["fraud"]), "missing columns"),
        (lambda d: d.assign(timestamp="yesterday"), "ISO 8601"),
        (lambda d: d.assign(amount_minor="12.5"), "non-negative integer"),
        (lambda d: d.assign(currency="XXX"), "ISO 4217"),
        (lambda d: d.assign(fraud=2), "0 or 1"),
    ],
)
def test_bad_history_is_a_clear_error(tmp_path, small_history, edit, message):
    path = tmp_path / "in.csv"
    edit(small_history.loc[:20, list(COLUMNS)]).to_csv(path, index=False)
    with pytest.raises(HistoryError, match=message):
        load_history(path)


def test_not_a_csv(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"")
    with pytest.raises(HistoryError, match="cannot read"):
        load_history(path)
