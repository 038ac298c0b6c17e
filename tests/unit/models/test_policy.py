"""Rules from the versioned TOML: the shipped file loads, each rule kind fires where it
should and not elsewhere, and a bad file is a clear PolicyError."""

from __future__ import annotations

import math

import pytest

from models.features import FEATURE_NAMES, FeatureVector
from models.policy import DEFAULT_RULES, PolicyError, RuleHit, evaluate_rules, load_policy

POLICY = load_policy()
TX = {"amount_minor": 1_000, "currency": "USD", "bin": "424242", "country": "DE"}


def fv(**values) -> FeatureVector:
    base = dict.fromkeys(FEATURE_NAMES, 0.0) | {"ip_cnt_1h": math.nan}
    return FeatureVector(**(base | values))


def codes(hits):
    return [h.code for h in hits]


def test_shipped_rules_load():
    assert POLICY.version == "v3" and DEFAULT_RULES.name == "v3.toml"
    t = POLICY.thresholds
    assert 0 < t.requires_action < t.review < t.decline < 1
    assert POLICY.fallback_action == "approve"
    assert evaluate_rules(POLICY, TX, fv()) == ()


def test_velocity_rules_fire_above_their_max_only():
    assert codes(evaluate_rules(POLICY, TX, fv(card_cnt_1m=3))) == []
    assert evaluate_rules(POLICY, TX, fv(card_cnt_1m=4)) == (RuleHit("velocity_card_1m", "review"),)
    assert evaluate_rules(POLICY, TX, fv(card_cnt_1d=41)) == (RuleHit("velocity_card_1d", "decline"),)
    # NaN (no IP on the tx) never trips a rule; without features velocity is skipped
    assert evaluate_rules(POLICY, TX, fv(ip_cnt_1h=math.nan)) == ()
    assert evaluate_rules(POLICY, TX, None) == ()


def test_amount_limits_per_currency():
    assert codes(evaluate_rules(POLICY, TX | {"amount_minor": 500_001}, None)) == ["amount_over_review_limit"]
    assert codes(evaluate_rules(POLICY, TX | {"amount_minor": 2_500_001}, None)) == ["amount_over_decline_limit"]
    # JPY has its own limits (no minor unit): 600,000 yen is fine
    assert evaluate_rules(POLICY, TX | {"amount_minor": 600_000, "currency": "JPY"}, None) == ()
    # an unlisted currency has no amount rule; a garbled amount trips nothing
    assert evaluate_rules(POLICY, TX | {"amount_minor": 10**12, "currency": "CHF"}, None) == ()
    assert evaluate_rules(POLICY, TX | {"amount_minor": "lots"}, None) == ()


def test_country_and_bin_rules():
    assert codes(evaluate_rules(POLICY, TX | {"country": "KP"}, None)) == ["country_declined"]
    assert codes(evaluate_rules(POLICY, TX | {"bin": "40009912"}, None)) == ["bin_review"]
    assert codes(evaluate_rules(POLICY, TX | {"bin": "400099"}, None)) == ["bin_review"]
    assert evaluate_rules(POLICY, TX | {"country": None, "bin": None}, None) == ()


def test_thresholds_map_scores_to_bands():
    t = POLICY.thresholds
    assert t.action_for(0.0) == "approve"
    assert t.action_for(t.requires_action) == "requires_action"
    assert t.action_for(t.review) == "review"
    assert t.action_for(1.0) == "decline"


@pytest.mark.parametrize(
    "edit, message",
    [
        (("review = 0.65", "review = 0.99"), "thresholds"),
        (('feature = "card_cnt_1m"', 'feature = "nope"'), "unknown feature"),
        (('action = "approve"', 'action = "maybe"'), "action"),
        (("[amount_limits.JPY]", "[amount_limits.XXX]"), "ISO 4217"),
        (("review_minor = 500_000      # 5,000.00", "review_minor = 5000.5"), "positive integers"),
        (('decline = ["KP"', 'decline = ["north korea"'), "countries.decline"),
        (('version = "v3"', 'version = "v3'), "not TOML"),
        (('feature = "wallet_cnt_1m"', 'feature = "card_cnt_1m"'), "methods.wallet.velocity.*unknown feature"),
        (("[[methods.crypto.velocity]]", "[[methods.cheque.velocity]]"), "cheque"),
    ],
)
def test_bad_rules_file_is_a_clear_error(tmp_path, edit, message):
    text = DEFAULT_RULES.read_text()
    assert edit[0] in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(PolicyError, match=message):
        load_policy(bad)


def test_missing_rules_file_is_a_clear_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")


def test_the_bin_review_rule_holds_none_of_the_test_cards_the_saga_and_demo_pay_with():
    from connectors.providers.simulated import CAPTURE_FAILS, DECLINED_CARDS, TIMEOUT_THEN_APPROVED, UNREACHABLE
    from streams.demo.cards import TEST_CARDS

    bins = {pan[:6] for pan in TEST_CARDS} | {
        b for b, _ in (*DECLINED_CARDS, TIMEOUT_THEN_APPROVED, UNREACHABLE, CAPTURE_FAILS)
    }
    assert "400000" in bins
    assert [b for b in sorted(bins) if evaluate_rules(POLICY, TX | {"bin": b}, None)] == []
    # Its own test card still trips it.
    assert codes(evaluate_rules(POLICY, TX | {"bin": "4000990000000004"[:6]}, None)) == ["bin_review"]


def test_the_earlier_rule_set_still_loads_as_it_was():
    v1 = load_policy(DEFAULT_RULES.with_name("v1.toml"))
    assert v1.version == "v1" and v1.bins_review == ("400000",)
    assert v1.thresholds == POLICY.thresholds and v1.velocity == POLICY.velocity


def test_v2_still_loads_and_v3_only_adds_the_methods_rules():
    v2 = load_policy(DEFAULT_RULES.with_name("v2.toml"))
    assert v2.method_velocity == {} and v2.velocity_for("wallet") == ()
    assert (v2.thresholds, v2.velocity, v2.amount_limits, v2.bins_review) == (
        POLICY.thresholds,
        POLICY.velocity,
        POLICY.amount_limits,
        POLICY.bins_review,
    )
    assert set(POLICY.method_velocity) == {"wallet", "bank_transfer", "bnpl", "crypto"}


@pytest.mark.parametrize(
    "method, feature, limit, code, action",
    [
        ("wallet", "card_cnt_1m", 3, "velocity_wallet_1m", "review"),
        ("wallet", "card_cnt_1d", 40, "velocity_wallet_1d", "decline"),
        ("wallet", "device_cnt_1d", 50, "velocity_wallet_device_1d", "review"),
        ("bank_transfer", "card_cnt_1h", 3, "velocity_account_1h", "review"),
        ("bank_transfer", "card_cnt_1d", 10, "velocity_account_1d", "decline"),
        ("bnpl", "card_cnt_1d", 3, "velocity_customer_1d", "review"),
        ("bnpl", "card_cnt_7d", 10, "velocity_customer_7d", "decline"),
        ("crypto", "card_cnt_1h", 3, "velocity_address_1h", "review"),
        ("crypto", "card_cnt_1d", 20, "velocity_address_1d", "decline"),
    ],
)
def test_each_method_has_its_own_velocity_rules(method, feature, limit, code, action):
    tx = TX | {"method": method, "bin": None}
    assert evaluate_rules(POLICY, tx, fv(**{feature: limit})) == ()
    assert RuleHit(code, action) in evaluate_rules(POLICY, tx, fv(**{feature: limit + 1}))


def test_a_methods_rules_replace_the_cards_and_the_amount_and_country_rules_apply_to_all():
    # The card's 1-minute rule is not a bank debit's (its own counts are per hour and day).
    assert evaluate_rules(POLICY, TX | {"method": "bank_transfer"}, fv(card_cnt_1m=9)) == ()
    assert codes(evaluate_rules(POLICY, TX, fv(card_cnt_1m=9))) == ["velocity_card_1m"]
    for method in ("wallet", "bank_transfer", "bnpl", "crypto"):
        tx = TX | {"method": method, "bin": None}
        assert codes(evaluate_rules(POLICY, tx | {"amount_minor": 500_001}, fv())) == ["amount_over_review_limit"]
        assert codes(evaluate_rules(POLICY, tx | {"country": "KP"}, fv())) == ["country_declined"]
