"""decide(): the strictest of the score band and the rules; fallback flagged."""

from __future__ import annotations

import math

import pytest

from models.decision import decide
from models.features import FEATURE_NAMES, FeatureVector
from models.policy import RuleHit, Thresholds

T = Thresholds(requires_action=0.3, review=0.6, decline=0.9)
FV = FeatureVector(*[0.0] * len(FEATURE_NAMES))


@pytest.mark.parametrize(
    "score, action", [(0.0, "approve"), (0.3, "requires_action"), (0.7, "review"), (0.95, "decline")]
)
def test_score_bands(score, action):
    d = decide(FV, (), score, T, model_version="hgb-1")
    assert (d.action, d.score, d.fallback, d.model_version) == (action, score, False, "hgb-1")
    assert d.reasons == (() if action == "approve" else (f"score_{action}",))


def test_rules_only_make_it_stricter():
    hits = (RuleHit("velocity_card_1m", "review"),)
    assert decide(FV, hits, 0.01, T).action == "review"
    assert decide(FV, hits, 0.95, T).action == "decline"
    d = decide(FV, hits + (RuleHit("blocklist_card", "decline"),), 0.01, T)
    assert d.action == "decline" and d.reasons == ("velocity_card_1m", "blocklist_card")


@pytest.mark.parametrize("features, score", [(None, 0.5), (FV, None), (FV, math.nan), (FV, 1.5), (FV, -0.1)])
def test_unusable_inputs_fall_back_to_rules_flagged(features, score):
    d = decide(features, (), score, T, fallback_action="approve", model_version="hgb-1")
    assert d.fallback and d.action == "approve" and d.score is None and d.model_version is None
    assert d.reasons == ("fallback_rules_only",)
    d = decide(features, (RuleHit("amount_over_decline_limit", "decline"),), score, T)
    assert d.fallback and d.action == "decline"


def test_shadow_is_recorded_not_acted_on():
    d = decide(FV, (), 0.1, T, shadow_score=0.99, shadow_version="rf-2")
    assert d.action == "approve" and d.shadow_score == 0.99 and d.shadow_version == "rf-2"
