"""A fitted HistGradientBoostingClassifier's probabilities without scikit-learn's
per-call overhead, the same numbers bit for bit.

`predict_proba` on a batch spends more in scikit-learn's Python around the trees
(input validation, the OpenMP thread count looked up per call, a `partial` and a
strided column add per tree) than in the trees: ~1.2 ms a call of 150 trees, and the
risk stage makes one per batch for cards and one per non-card method. `TreeSum` calls
the same compiled tree predictors on the same float64 input, adds their outputs in
the same order onto the same baseline and applies the same link: every score is
identical. `TreeSum.of` refuses a model it cannot reproduce (not binary, categorical
splits, or a probe batch that does not come out identical), and the caller keeps
scikit-learn's own path then.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

# The probe at construction: rows with every feature, with NaNs, and at extremes.
_PROBE_ROWS = 256
_PROBE_SEED = 21


class TreeSum:
    """`predict_proba` of one binary HistGradientBoostingClassifier, single-threaded."""

    def __init__(self, model: HistGradientBoostingClassifier) -> None:
        self.trees = [predictors[0] for predictors in model._predictors]
        self.known_cat_bitsets, self.f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        self.baseline = model._baseline_prediction
        self.link = model._loss
        self.n_features = model.n_features_in_

    @classmethod
    def of(cls, model: Any) -> TreeSum | None:
        """The fast path of `model`, or None when it would not give scikit-learn's numbers."""
        if (
            not isinstance(model, HistGradientBoostingClassifier)
            or getattr(model, "n_trees_per_iteration_", None) != 1
            or model.is_categorical_ is not None
        ):
            return None
        fast = cls(model)
        probe = _probe(model.n_features_in_)
        if not np.array_equal(fast.predict_proba(probe), model.predict_proba(probe), equal_nan=True):
            return None
        return fast

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)  # scikit-learn's own input dtype
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}, the model reads {self.n_features} features")
        raw = np.zeros((X.shape[0], 1), dtype=self.baseline.dtype, order="F")
        raw += self.baseline
        column = raw[:, 0]
        for tree in self.trees:  # in the fitted order: the same float sums
            column += tree.predict(X, self.known_cat_bitsets, self.f_idx_map, 1)
        return self.link.predict_proba(raw)


def _probe(n_features: int) -> np.ndarray:
    rng = np.random.default_rng(_PROBE_SEED)
    shape = (_PROBE_ROWS, n_features)
    X = rng.lognormal(0.0, 3.0, size=shape) * rng.choice([-1.0, 0.0, 1.0], shape)
    X[rng.random(X.shape) < 0.2] = np.nan
    return X
