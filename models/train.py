"""Training and the model artifact.

An artifact is a directory: `model.pkl` (a pickled scikit-learn classifier) and
`manifest.json` with its sha256, the feature list, the training window and the
metrics. `load_model` checks the hash *before* unpickling and the feature list
against the code, and refuses with a clear `ModelArtifactError` otherwise: a worker
calls it once at start, so a bad artifact stops it there, not mid-stream.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from models.features import FEATURE_NAMES, METHODS_MODEL_FEATURES, N_FEATURES, NON_CARD_METHODS
from models.metrics import evaluate
from models.predictor import TreeSum

#: The artifacts shipped in the repository (see docs/fraud.md for how they were made):
#: the card model, and the model of every other method.
SHIPPED_ARTIFACT = Path(__file__).parent / "artifacts" / "fraud-v1"
SHIPPED_METHODS_ARTIFACT = Path(__file__).parent / "artifacts" / "fraud-methods-v1"
MODEL_FILE = "model.pkl"
MANIFEST_FILE = "manifest.json"
DAY_MS = 86_400_000
# Bounds on one training run: all fraud rows are kept, genuine rows are sampled down.
MAX_TRAIN_ROWS = 300_000
ALGOS = ("hgb", "rf")


class ModelArtifactError(RuntimeError):
    """A model artifact that must not be loaded; the message says what is wrong."""


def make_model(algo: str, seed: int = 0) -> Any:
    if algo == "hgb":
        return HistGradientBoostingClassifier(
            max_iter=150,
            learning_rate=0.1,
            max_leaf_nodes=31,
            min_samples_leaf=40,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        )
    if algo == "rf":
        return RandomForestClassifier(
            n_estimators=60,
            max_depth=12,
            min_samples_leaf=20,
            random_state=seed,
        )
    raise ValueError(f"algo {algo!r} is not one of {ALGOS}")


def bounded_sample(y: np.ndarray, max_rows: int = MAX_TRAIN_ROWS, seed: int = 0) -> np.ndarray:
    """Indices to train on: every positive, and genuine rows sampled (deterministically)
    so the total stays within max_rows."""
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    room = max(max_rows - len(pos), 0)
    if len(neg) > room:
        neg = np.sort(np.random.default_rng(seed).choice(neg, room, replace=False))
    return np.sort(np.concatenate([pos, neg]))


def fit(X: np.ndarray, y: np.ndarray, algo: str, seed: int = 0) -> Any:
    idx = bounded_sample(y, seed=seed)
    Xt = X[idx]
    # A column with no value at all (e.g. no IP in the history) crashes the binning of
    # HistGradientBoosting (scikit-learn 1.9.1). As a constant it yields no split, so
    # the model ignores it, as it should, also when later inputs carry values.
    empty = np.isnan(Xt).all(axis=0)
    if empty.any():
        Xt[:, empty] = 0.0
    model = make_model(algo, seed)
    model.fit(Xt, y[idx])
    return model


def predict(model: Any, X: np.ndarray) -> np.ndarray:
    return model.predict_proba(X)[:, 1]


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    manifest: dict[str, Any]
    # What scores: the model's trees summed without scikit-learn's per-call overhead,
    # the same numbers (models/predictor.py), or the model itself.
    scorer: Any = None

    @property
    def version(self) -> str:
        return self.manifest["model_version"]

    def score(self, X: np.ndarray) -> np.ndarray:
        return predict(self.model if self.scorer is None else self.scorer, X)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def method_indicators(methods: Sequence[str]) -> np.ndarray:
    """One row of NON_CARD_METHODS indicators per method (len(methods) x 4): the columns
    the non-card model reads after the feature vector (METHODS_MODEL_FEATURES)."""
    out = np.zeros((len(methods), len(NON_CARD_METHODS)), dtype=np.float64)
    for i, m in enumerate(methods):
        out[i, NON_CARD_METHODS.index(m)] = 1.0
    return out


class PerMethodModel:
    """One classifier per non-card method behind one `predict_proba` over rows of
    METHODS_MODEL_FEATURES: each row goes to the model of the method its indicator
    columns name (the scorer makes one call for a batch of every method)."""

    def __init__(self, models: dict[str, Any]) -> None:
        assert set(models) == set(NON_CARD_METHODS), sorted(models)
        self.models = models

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        indicators = X[:, N_FEATURES:]
        if indicators.shape[1] != len(NON_CARD_METHODS) or not (indicators.sum(axis=1) == 1).all():
            raise ValueError("every row needs exactly one method indicator")
        which = indicators.argmax(axis=1)
        out = np.zeros((len(X), 2))
        for i, method in enumerate(NON_CARD_METHODS):
            rows = which == i
            if rows.any():
                out[rows] = self.models[method].predict_proba(X[rows, :N_FEATURES])
        return out


def save_artifact(
    model: Any, out_dir: Path, manifest: dict[str, Any], features: Sequence[str] = FEATURE_NAMES
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    model_path.write_bytes(pickle.dumps(model, protocol=5))
    digest = sha256_file(model_path)
    full = {
        "model_version": f"{manifest.get('algo', 'model')}-{digest[:12]}",
        "file": MODEL_FILE,
        "sha256": digest,
        "features": list(features),
        "sklearn_version": sklearn.__version__,
    } | manifest
    (out_dir / MANIFEST_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return full


def load_model(artifact_dir: Path | str, features: Sequence[str] = FEATURE_NAMES) -> LoadedModel:
    """The verified model of `artifact_dir`, trained on `features` (the card model's by default)."""
    d = Path(artifact_dir)
    try:
        manifest = json.loads((d / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise ModelArtifactError(f"{d}: no {MANIFEST_FILE}; not a model artifact") from None
    except (OSError, ValueError) as e:
        raise ModelArtifactError(f"{d}/{MANIFEST_FILE}: unreadable: {e}") from None
    if not isinstance(manifest, dict) or not {"file", "sha256", "features", "model_version"} <= manifest.keys():
        raise ModelArtifactError(f"{d}/{MANIFEST_FILE}: lacks file, sha256, features or model_version")
    model_path = d / Path(manifest["file"]).name
    if not model_path.is_file():
        raise ModelArtifactError(f"{model_path}: missing")
    actual = sha256_file(model_path)
    if actual != manifest["sha256"]:
        raise ModelArtifactError(
            f"{model_path}: sha256 {actual} does not match the manifest's {manifest['sha256']}; "
            "the file was changed or corrupted, refusing to load it"
        )
    if list(manifest["features"]) != list(features):
        raise ModelArtifactError(
            f"{d}: trained on features {manifest['features']}, this code computes {list(features)}; retrain"
        )
    try:
        model = pickle.loads(model_path.read_bytes())  # hash verified above
    except Exception as e:  # an unpicklable file whose hash matched: a bad build, say so
        raise ModelArtifactError(f"{model_path}: cannot unpickle: {type(e).__name__}: {e}") from None
    if not hasattr(model, "predict_proba"):
        raise ModelArtifactError(f"{model_path}: not a classifier")
    return LoadedModel(model, manifest, fast_scorer(model))


def fast_scorer(model: Any) -> Any:
    """`model` with its HistGradientBoosting classifiers scored by `TreeSum` (the same
    numbers, less overhead), or `model` where one cannot be."""
    if isinstance(model, PerMethodModel):
        return PerMethodModel({m: TreeSum.of(sub) or sub for m, sub in model.models.items()})
    return TreeSum.of(model) or model


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _windows(ts: np.ndarray, cut: int, train: np.ndarray, test: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The manifest's training and test windows (the split is by time, at `cut`)."""
    return {
        "training_window": {
            "from": _iso(int(ts.min())),
            "to": _iso(cut),
            "rows": int(train.sum()),
            "fraud": int(y[train].sum()),
        },
        "test_window": {"from": _iso(cut), "to": _iso(int(ts.max())), "rows": int(test.sum())},
    }


def train_artifact(
    df,
    X: np.ndarray,
    out_dir: Path,
    *,
    feedback_delay_days: int,
    test_days: int = 7,
    algo: str = "auto",
    seed: int = 0,
    command: str = "",
) -> dict[str, Any]:
    """Train on the history before its last `test_days`, measure on those days, and
    write the artifact. `algo="auto"` trains both kinds and keeps the one with the
    better average precision on the held-out days (the comparison is in the manifest)."""
    ts = df["ts_ms"].to_numpy()
    y = df["fraud"].to_numpy()
    cut = int(ts.max()) - test_days * DAY_MS
    train, test = ts < cut, ts >= cut
    if y[train].sum() < 5 or train.sum() < 100 or test.sum() == 0:
        raise ValueError("history too small to train: need >= 100 rows and 5 fraud before the test days")
    candidates = ALGOS if algo == "auto" else (algo,)
    results: dict[str, dict[str, Any]] = {}
    models = {}
    for a in candidates:
        t0 = time.perf_counter()
        models[a] = fit(X[train], y[train], a, seed)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = predict(models[a], X[test])
        score_s = time.perf_counter() - t0
        results[a] = evaluate(ts[test], df["card_id"].to_numpy()[test], scores, y[test]) | {
            "train_s": round(train_s, 2),
            "score_tx_per_s": round(test.sum() / score_s),
        }
    chosen = max(candidates, key=lambda a: (results[a]["ap"], -ALGOS.index(a)))
    return save_artifact(
        models[chosen],
        out_dir,
        {
            "algo": chosen,
            **_windows(ts, cut, train, test, y),
            "feedback_delay_days": feedback_delay_days,
            "metrics": results,
            "seed": seed,
            "command": command,
        },
    )


def train_methods_artifact(
    df,
    X: np.ndarray,
    out_dir: Path,
    *,
    feedback_delay_days: int,
    test_days: int = 7,
    seed: int = 0,
    command: str = "",
) -> dict[str, Any]:
    """The non-card model: train on the history (models/simulate_methods.py's columns,
    `method` in NON_CARD_METHODS) before its last `test_days`, measure on those days,
    write the artifact. Two designs are measured on the same held-out days, each method
    apart and all pooled: one model over the feature vector plus the method's indicator,
    and one model per method (`PerMethodModel`); the one with the better pooled average
    precision is shipped, both sets of figures go into the manifest. Either takes rows
    of METHODS_MODEL_FEATURES, so the scorer makes one call for a batch of every method."""
    methods = df["method"].to_numpy()
    if not np.isin(methods, NON_CARD_METHODS).all():
        raise ValueError(f"a methods history holds only {', '.join(NON_CARD_METHODS)} rows")
    ts = df["ts_ms"].to_numpy()
    y = df["fraud"].to_numpy()
    keys = df["card_id"].to_numpy()
    cut = int(ts.max()) - test_days * DAY_MS
    train, test = ts < cut, ts >= cut
    if y[train].sum() < 5 or train.sum() < 100 or test.sum() == 0:
        raise ValueError("history too small to train: need >= 100 rows and 5 fraud before the test days")
    Xm = np.hstack([X, method_indicators(methods)])
    t0 = time.perf_counter()
    shared = fit(Xm[train], y[train], "hgb", seed)
    shared_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    own_models = {}
    for m in NON_CARD_METHODS:
        own = methods == m
        if y[train & own].sum() < 5 or not (test & own).any():
            raise ValueError(f"history too small to train: {m} needs >= 5 fraud before the test days")
        own_models[m] = fit(X[train & own], y[train & own], "hgb", seed)
    per_method = PerMethodModel(own_models)
    per_method_s = time.perf_counter() - t0

    def measured(model: Any, train_s: float) -> dict[str, Any]:
        scores = predict(model, Xm[test])
        out = {"all": evaluate(ts[test], keys[test], scores, y[test]), "train_s": round(train_s, 2)}
        for m in NON_CARD_METHODS:
            own = methods[test] == m
            out[m] = evaluate(ts[test][own], keys[test][own], scores[own], y[test][own])
        return out

    metrics = {"shared": measured(shared, shared_s), "per_method": measured(per_method, per_method_s)}
    # The better average precision over every method's held-out rows wins (a tie: the shared model).
    design = max(("shared", "per_method"), key=lambda d: (metrics[d]["all"]["ap"], d == "shared"))
    return save_artifact(
        shared if design == "shared" else per_method,
        out_dir,
        {
            "algo": f"hgb-{design.replace('_', '-')}",
            "design": design,
            "methods": list(NON_CARD_METHODS),
            **_windows(ts, cut, train, test, y),
            "feedback_delay_days": feedback_delay_days,
            "metrics": metrics,
            "seed": seed,
            "command": command,
        },
        METHODS_MODEL_FEATURES,
    )
