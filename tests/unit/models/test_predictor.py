"""TreeSum: the shipped models' scores without scikit-learn's per-call overhead are
scikit-learn's scores, bit for bit, on real feature rows and on odd ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from models import predictor
from models.features import FEATURE_NAMES, METHODS_MODEL_FEATURES
from models.predictor import WALK_ROWS_MAX, TreeSum
from models.train import SHIPPED_ARTIFACT, SHIPPED_METHODS_ARTIFACT, PerMethodModel, load_model, method_indicators


@pytest.fixture(scope="module")
def card_model():
    return load_model(SHIPPED_ARTIFACT)


@pytest.fixture(scope="module")
def methods_model():
    return load_model(SHIPPED_METHODS_ARTIFACT, METHODS_MODEL_FEATURES)


def feature_rows(small_features) -> np.ndarray:
    X = np.asarray(small_features, dtype=np.float64)  # a simulated history's vectors, in FEATURE_NAMES order
    assert X.shape[1] == len(FEATURE_NAMES)
    return X


def odd_rows(n_features: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    X = rng.normal(0, 1e3, size=(300, n_features))
    X[rng.random(X.shape) < 0.3] = np.nan
    X[:5] = np.nan  # a row of nothing
    X[5:10] = 0.0
    return X


def test_the_shipped_models_are_scored_by_treesum(card_model, methods_model):
    assert isinstance(card_model.scorer, TreeSum)
    assert isinstance(methods_model.scorer, PerMethodModel)
    assert all(isinstance(m, TreeSum) for m in methods_model.scorer.models.values())


def test_card_scores_are_scikit_learns(card_model, small_features):
    for X in (feature_rows(small_features), odd_rows(len(FEATURE_NAMES))):
        for rows in (X, X[:1], X[:17], X[:WALK_ROWS_MAX], X[: WALK_ROWS_MAX + 1]):  # both paths
            expected = card_model.model.predict_proba(rows)
            assert np.array_equal(card_model.scorer.predict_proba(rows), expected)
            assert np.array_equal(card_model.score(rows), expected[:, 1])


def test_methods_scores_are_scikit_learns(methods_model, small_features):
    X = feature_rows(small_features)[:400]
    methods = [("wallet", "bank_transfer", "bnpl", "crypto")[i % 4] for i in range(len(X))]
    full = np.hstack([X, method_indicators(methods)])
    for rows in (full, full[:9]):  # a few rows of each method: the level walk
        assert np.array_equal(methods_model.score(rows), methods_model.model.predict_proba(rows)[:, 1])


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, WALK_ROWS_MAX + 4), st.just(len(FEATURE_NAMES))),
        elements=st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(-50, 50),
            st.sampled_from([0.0, -0.0, 1.0]),
        ),
    )
)
def test_both_paths_are_scikit_learns_on_any_rows(card_model, X):
    expected = card_model.model.predict_proba(X)
    assert np.array_equal(card_model.scorer.predict_proba(X), expected)
    assert np.array_equal(card_model.scorer.link.predict_proba(card_model.scorer._by_level(X)), expected)
    assert np.array_equal(card_model.scorer.link.predict_proba(card_model.scorer._by_tree(X)), expected)


def test_a_model_treesum_cannot_reproduce_keeps_scikit_learns_path():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
    assert TreeSum.of(RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)) is None
    multi = HistGradientBoostingClassifier(max_iter=3).fit(X, rng.integers(0, 3, 200))
    assert TreeSum.of(multi) is None
    binary = TreeSum.of(HistGradientBoostingClassifier(max_iter=3).fit(X, y))
    assert binary is not None
    with pytest.raises(ValueError):
        binary.predict_proba(X[:, :2])


def test_a_scikit_learn_without_the_private_tree_call_keeps_its_own_path(monkeypatch):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
    model = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
    assert TreeSum.of(model) is not None
    monkeypatch.setattr(predictor, "_predict_from_raw_data", None)  # as when its import failed
    assert TreeSum.of(model) is None
