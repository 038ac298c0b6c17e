"""The fraud decision: model score and rule hits combined into one action."""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.features import FeatureVector
from models.policy import SEVERITY, RuleHit, Thresholds


@dataclass(frozen=True)
class FraudDecision:
    action: str  # approve | requires_action | review | decline
    score: float | None  # the live model's score; None on the rules-only fallback
    reasons: tuple[str, ...]  # rule reason codes, then the score band (e.g. "score_review")
    model_version: str | None
    fallback: bool  # True: no usable score, decided by rules only (count it)
    rules_version: str | None = None
    shadow_score: float | None = None  # recorded, never acted on
    shadow_version: str | None = None
    # The vector the decision read (None on the fallback): what the review queue shows
    # and what the online-vs-offline test compares.
    features: FeatureVector | None = None


def usable_score(score: float | None) -> bool:
    return isinstance(score, float) and not math.isnan(score) and 0.0 <= score <= 1.0


def decide(
    features: FeatureVector | None,
    rule_hits: tuple[RuleHit, ...],
    score: float | None,
    thresholds: Thresholds,
    *,
    fallback_action: str = "approve",
    model_version: str | None = None,
    rules_version: str | None = None,
    shadow_score: float | None = None,
    shadow_version: str | None = None,
    modelled: bool = True,
) -> FraudDecision:
    """The strictest of the score's band and every rule hit. Missing features or an
    unusable score (None, NaN, outside [0, 1]) fall back to rules only, starting from
    `fallback_action`, and the decision says so (`fallback=True`). `modelled=False`:
    a method no loaded model covers (a scorer without the methods model): its rules
    decide by design, from approve, with no score and no fallback flag."""
    fallback = features is None or (modelled and not usable_score(score))
    if not modelled and not fallback:
        action, reasons, score = "approve", [], None
    elif fallback:
        action, reasons = fallback_action, ["fallback_rules_only"]
        score = None
    else:
        action = thresholds.action_for(score)  # type: ignore[arg-type]
        reasons = [] if action == "approve" else [f"score_{action}"]
    for hit in rule_hits:
        if SEVERITY[hit.action] > SEVERITY[action]:
            action = hit.action
    reasons = [h.code for h in rule_hits] + reasons
    return FraudDecision(
        action=action,
        score=score,
        reasons=tuple(reasons),
        model_version=model_version if modelled and not fallback else None,
        fallback=fallback,
        rules_version=rules_version,
        shadow_score=shadow_score if usable_score(shadow_score) else None,
        shadow_version=shadow_version,
        features=features,
    )
