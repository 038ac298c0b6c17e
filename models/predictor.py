"""A fitted HistGradientBoostingClassifier's probabilities without scikit-learn's
per-call overhead, the same numbers bit for bit.

`predict_proba` on a batch spends more in scikit-learn's Python around the trees
(input validation, the OpenMP thread count looked up per call, a `partial` and a
strided column add per tree) than in the trees: ~1.2 ms a call of 150 trees, and the
risk stage makes one per batch for cards and one per non-card method. `TreeSum` calls
the same compiled tree predictors on the same float64 input, adds their outputs in
the same order onto the same baseline and applies the same link: every score is
identical. A few rows (a low rate's batch) walk all the trees at once in numpy
instead, the same splits and the same sums. `TreeSum.of` refuses a model it cannot
reproduce (not binary, categorical splits, or a probe batch that does not come out
identical by either path), and the caller keeps scikit-learn's own path then.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

try:  # what `TreePredictor.predict` calls; private, so another scikit-learn may lack it
    from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data
except ImportError:  # then `TreeSum.of`'s probe fails and the caller keeps scikit-learn's path
    _predict_from_raw_data = None

# The probe at construction: rows with every feature, with NaNs, and at extremes.
_PROBE_ROWS = 256
_PROBE_SEED = 21


# Rows up to which `TreeSum` walks every tree at once, a level per numpy step: each
# compiled tree call costs ~4.7 us whatever the rows (~0.7 ms for 150 trees), and the
# risk stage's batches are a few rows at a low rate (the methods model's, one per
# method, are at most a few dozen in any batch). Measured on the card model (150
# trees, depth <= 17), CPU ms a call, walk against trees: 1 row 0.09 against 0.67,
# 16 rows 0.36 against 0.80, 48 rows 0.74 against 0.88, 64 rows 0.95 against 1.05,
# 80 rows 1.17 against 1.21.
WALK_ROWS_MAX = 64


class TreeSum:
    """`predict_proba` of one binary HistGradientBoostingClassifier, single-threaded."""

    def __init__(self, model: HistGradientBoostingClassifier) -> None:
        self.trees = [predictors[0] for predictors in model._predictors]
        self.known_cat_bitsets, self.f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        self.baseline = model._baseline_prediction
        self.link = model._loss
        self.n_features = model.n_features_in_
        # Every tree's nodes in one array, children as indices into it; a leaf is its own
        # child (feature 0), so a walk of max-depth steps ends on each row's leaf.
        nodes = np.concatenate([tree.nodes for tree in self.trees])
        sizes = [len(tree.nodes) for tree in self.trees]
        self.roots = np.cumsum([0, *sizes[:-1]])
        at, leaf = np.arange(len(nodes)), nodes["is_leaf"].astype(bool)
        offset = np.repeat(self.roots, sizes)
        left = np.where(leaf, at, nodes["left"].astype(np.intp) + offset)
        right = np.where(leaf, at, nodes["right"].astype(np.intp) + offset)
        # The walk's arrays by step index k = 2 * node + 1: node's children at k - 1 (left)
        # and k (right), so `k - (x <= threshold)` picks the child in one subtraction.
        # A node whose missing values go left reads its feature from a second copy of the
        # row with NaN as -inf (left of every threshold); NaN itself goes right of all.
        missing_left = nodes["missing_go_to_left"].astype(bool)
        column = np.where(leaf, 0, nodes["feature_idx"].astype(np.intp) + self.n_features * missing_left)
        self.column = np.repeat(column, 2)
        self.threshold = np.repeat(nodes["num_threshold"].astype(np.float64), 2)
        self.child = 2 * np.stack([left, right], axis=1).ravel() + 1
        self.value = nodes["value"].astype(np.float64)
        self.depth = int(nodes["depth"].max())

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
        expected = model.predict_proba(probe)
        try:
            paths = (fast._by_tree(probe), fast._by_level(probe))  # both, whatever the rows
        except (TypeError, ValueError):  # another scikit-learn's private signatures, or none
            return None
        if not all(np.array_equal(fast.link.predict_proba(raw), expected, equal_nan=True) for raw in paths):
            return None
        return fast

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)  # scikit-learn's own input dtype
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}, the model reads {self.n_features} features")
        return self.link.predict_proba(self._by_level(X) if len(X) <= WALK_ROWS_MAX else self._by_tree(X))

    def _by_tree(self, X: np.ndarray) -> np.ndarray:
        """The raw scores (rows x 1), one compiled call per tree."""
        raw = np.zeros((X.shape[0], 1), dtype=self.baseline.dtype, order="F")
        raw += self.baseline
        column = raw[:, 0]
        out = np.empty(X.shape[0], dtype=np.float64)  # scikit-learn's Y_DTYPE
        for tree in self.trees:  # in the fitted order: the same float sums
            # What `tree.predict` calls, into one buffer for all trees (its wrapper's
            # allocation was ~1 us a tree).
            _predict_from_raw_data(
                tree.nodes, X, tree.raw_left_cat_bitsets, self.known_cat_bitsets, self.f_idx_map, 1, out
            )
            column += out
        return raw

    def _by_level(self, X: np.ndarray) -> np.ndarray:
        """The raw scores (rows x 1), every row down every tree a level per step, with
        scikit-learn's split (`x <= threshold`; NaN the node's missing side) and its sum:
        0, the baseline, then each tree's leaf in the fitted order (cumsum adds in order)."""
        X = np.asarray(X, dtype=np.float64)
        rows = len(X)
        flat = np.hstack([X, np.where(np.isnan(X), -np.inf, X)]).ravel()
        row_at = (np.arange(rows) * (2 * self.n_features))[:, None]
        k = np.broadcast_to(2 * self.roots + 1, (rows, len(self.roots)))
        for _ in range(self.depth):
            k = self.child[k - (flat[row_at + self.column[k]] <= self.threshold[k])]
        terms = np.zeros((rows, len(self.roots) + 2), dtype=self.baseline.dtype)
        terms[:, 1] = self.baseline.reshape(-1)[0]
        terms[:, 2:] = self.value[k >> 1]
        return np.asfortranarray(np.cumsum(terms, axis=1)[:, -1:])


def _probe(n_features: int) -> np.ndarray:
    rng = np.random.default_rng(_PROBE_SEED)
    shape = (_PROBE_ROWS, n_features)
    X = rng.lognormal(0.0, 3.0, size=shape) * rng.choice([-1.0, 0.0, 1.0], shape)
    X[rng.random(X.shape) < 0.2] = np.nan
    return X
