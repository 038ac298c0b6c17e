"""Evaluation metrics: AUC, average precision and card precision@k per day."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

DAY_MS = 86_400_000


def card_precision_at_k(
    ts_ms: np.ndarray, cards: np.ndarray, scores: np.ndarray, fraud: np.ndarray, k: int = 100
) -> float:
    """Per day: each card's highest score that day; of the k cards ranked highest, the
    share with at least one fraudulent transaction that day. Averaged over days."""
    if len(ts_ms) == 0:
        return float("nan")
    day = ts_ms // DAY_MS
    card_codes = np.unique(cards, return_inverse=True)[1]
    key = day * (card_codes.max() + 1) + card_codes
    uniq, inv = np.unique(key, return_inverse=True)
    best = np.full(len(uniq), -np.inf)
    np.maximum.at(best, inv, scores)
    hit = np.zeros(len(uniq), dtype=bool)
    np.logical_or.at(hit, inv, fraud.astype(bool))
    per_day = uniq // (card_codes.max() + 1)
    out = []
    for d in np.unique(per_day):
        sel = per_day == d
        order = np.argsort(-best[sel], kind="stable")[:k]
        out.append(hit[sel][order].sum() / k)
    return float(np.mean(out))


def evaluate(ts_ms, cards, scores, fraud, k: int = 100) -> dict[str, float]:
    fraud = np.asarray(fraud)
    both = 0 < fraud.sum() < len(fraud)
    return {
        "auc": float(roc_auc_score(fraud, scores)) if both else float("nan"),
        "ap": float(average_precision_score(fraud, scores)) if both else float("nan"),
        f"card_p_at_{k}": card_precision_at_k(np.asarray(ts_ms), np.asarray(cards), np.asarray(scores), fraud, k),
        "rows": int(len(fraud)),
        "fraud": int(fraud.sum()),
    }
