"""Offline evaluation by replay: the history in event-time order through the stream's
feature code, labels revealed `feedback_delay` after their transaction, the model
retrained every `retrain_every` on the labels revealed so far.

Features do not depend on the model, so the replay computes them in one pass (the
same state classes as the stream, one transaction at a time, labels folded in at their
reveal time), then scores each retraining period in one vectorized call with the model
that existed at the period's start. A transaction is never scored by a model trained
on its own label or on any label not yet revealed at its time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.history import DAY_MS, history_features
from models.metrics import evaluate
from models.train import bounded_sample, fit, predict

# Bounds on each retraining: the most recent labelled days, at most this many rows.
TRAIN_WINDOW_DAYS = 56
REPLAY_TRAIN_ROWS = 200_000
MIN_TRAIN_FRAUD = 10
#: Score before the first model exists (no label revealed yet): no ranking at all.
NO_MODEL_SCORE = 0.0


@dataclass(frozen=True)
class ReplayConfig:
    feedback_delay_days: int = 7
    retrain_every_days: int = 7
    eval_days: int = 7
    algo: str = "hgb"
    seed: int = 0
    hindsight: bool = False  # also train an offline model with hindsight, for comparison

    def __post_init__(self) -> None:
        if not 0 <= self.feedback_delay_days <= 365:
            raise ValueError("feedback_delay_days must be in 0..365")
        if not 1 <= self.retrain_every_days <= 365:
            raise ValueError("retrain_every_days must be in 1..365")
        if not 1 <= self.eval_days <= 365:
            raise ValueError("eval_days must be in 1..365")


@dataclass
class ReplayResult:
    scores: np.ndarray  # aligned with the time-sorted history
    metrics: dict[str, Any]
    hindsight: dict[str, Any] | None
    timings: dict[str, float]
    retrains: int
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        n = len(self.scores)
        score_s = self.timings["features_s"] + self.timings["predict_s"]
        return {
            "rows": n,
            "online": self.metrics,
            "hindsight": self.hindsight,
            "retrains": self.retrains,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "feature_tx_per_s": round(n / self.timings["features_s"]) if n else 0,
            "scoring_tx_per_s": round(n / score_s) if n else 0,
        } | self.extra


def replay(
    df: pd.DataFrame,
    cfg: ReplayConfig,
    progress: Callable[[int], None] | None = None,
    on_period: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """`df` is a validated, time-sorted history (models.history.load_history)."""
    if len(df) == 0:
        raise ValueError("empty history")
    delay = cfg.feedback_delay_days * DAY_MS
    t0 = time.perf_counter()
    X = history_features(df, delay, progress)
    features_s = time.perf_counter() - t0

    ts = df["ts_ms"].to_numpy()
    y = df["fraud"].to_numpy()
    scores = np.full(len(df), NO_MODEL_SCORE)
    period = cfg.retrain_every_days * DAY_MS
    starts = np.arange(int(ts[0]), int(ts[-1]) + 1, period)
    bounds = np.searchsorted(ts, starts, side="left").tolist() + [len(ts)]
    train_s = predict_s = 0.0
    retrains = 0
    model = None
    for k, start in enumerate(starts.tolist()):
        lo, hi = bounds[k], bounds[k + 1]
        # Labels revealed by the period's start, within the bounded training window.
        known_hi = int(np.searchsorted(ts, start - delay, side="right"))
        known_lo = int(np.searchsorted(ts, start - delay - TRAIN_WINDOW_DAYS * DAY_MS, side="left"))
        y_known = y[known_lo:known_hi]
        if y_known.sum() >= MIN_TRAIN_FRAUD and y_known.sum() < len(y_known):
            t = time.perf_counter()
            idx = known_lo + bounded_sample(y_known, REPLAY_TRAIN_ROWS, cfg.seed)
            model = fit(X[idx], y[idx], cfg.algo, cfg.seed)
            train_s += time.perf_counter() - t
            retrains += 1
        if model is not None and hi > lo:
            t = time.perf_counter()
            scores[lo:hi] = predict(model, X[lo:hi])
            predict_s += time.perf_counter() - t
        if on_period is not None:
            on_period(k + 1, len(starts))

    test = ts >= int(ts[-1]) - cfg.eval_days * DAY_MS
    cards = df["card_id"].to_numpy()
    metrics = evaluate(ts[test], cards[test], scores[test], y[test])
    hindsight = None
    train = ~test
    if cfg.hindsight and y[train].sum() >= MIN_TRAIN_FRAUD:
        t = time.perf_counter()
        hm = fit(X[train], y[train], cfg.algo, cfg.seed)
        hindsight = evaluate(ts[test], cards[test], predict(hm, X[test]), y[test])
        hindsight["train_s"] = round(time.perf_counter() - t, 2)
    timings = {"features_s": features_s, "train_s": train_s, "predict_s": predict_s}
    return ReplayResult(scores, metrics, hindsight, timings, retrains)


def write_scores(df: pd.DataFrame, scores: np.ndarray, out: Path) -> None:
    """tx_id,score for every input row, in the input's order."""
    order = np.argsort(df["row"].to_numpy(), kind="stable")
    pd.DataFrame({"tx_id": df["tx_id"].to_numpy()[order], "score": scores[order]}).to_csv(
        out, index=False, float_format="%.6f"
    )
