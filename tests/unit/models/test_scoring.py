"""The saga's contract: Scorer.load once, score(tx, states) -> FraudDecision, then
update_states; labels and blocklist entries change later decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.blocklist import BlockEntry
from models.features import CardState, MerchantState, TxStates
from models.policy import PolicyError
from models.scoring import Scorer
from models.train import SHIPPED_ARTIFACT as SHIPPED
from models.train import ModelArtifactError

T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer.load(SHIPPED, shadow_dir=SHIPPED)


def tx(**kw):
    return {
        "card_token": "tok_a",
        "bin": "424242",
        "merchant_id": "m_1",
        "amount_minor": 2_500,
        "currency": "USD",
        "occurred_at": T0,
    } | kw


def test_scores_and_updates_through_bytes(scorer):
    db = {}
    decisions = []
    for i in range(5):
        states = TxStates(
            CardState.from_bytes(db["c"]) if "c" in db else CardState(),
            MerchantState.from_bytes(db["m"]) if "m" in db else MerchantState(),
        )
        t = tx(occurred_at=T0 + timedelta(seconds=10 * i))
        decisions.append(scorer.score(t, states))
        assert scorer.update_states(states, t)
        db["c"], db["m"] = states.card.to_bytes(), states.merchant.to_bytes()
    d = decisions[-1]
    assert not d.fallback and 0.0 <= d.score <= 1.0
    assert d.model_version == scorer.model.version and d.rules_version == "v3"
    assert d.shadow_score == d.score  # the same artifact as shadow scores the same
    # five in 40 s trips the 1-minute velocity rule (more than 3 before)
    assert "velocity_card_1m" in d.reasons and d.action in ("review", "decline")


@pytest.mark.parametrize(
    "bad",
    [{"amount_minor": "12.50"}, {"currency": "???"}, {"occurred_at": "yesterday"}, {"card_token": None}],
)
def test_garbled_tx_falls_back_without_raising(scorer, bad):
    states = TxStates()
    d = scorer.score(tx(**bad), states)
    assert d.fallback and d.score is None and "fallback_rules_only" in d.reasons
    assert scorer.update_states(states, tx(**bad)) is False
    assert states.card.n == 0


def test_fallback_still_applies_field_rules(scorer):
    d = scorer.score(tx(currency="???", country="KP"), TxStates())
    assert d.fallback and d.action == "decline" and "country_declined" in d.reasons


def test_blocklist_declines_within_the_scorer(scorer):
    s = Scorer(scorer.model, scorer.policy)
    s.blocklist.apply(BlockEntry.make("card", "tok_a", "block", "ato", T0 - timedelta(days=1)))
    d = s.score(tx(), TxStates())
    assert d.action == "decline" and "blocklist_card" in d.reasons
    s.blocklist.apply(BlockEntry.make("card", "tok_a", "unblock", "resolved", T0))
    assert "blocklist_card" not in s.score(tx(), TxStates()).reasons


def test_label_applies_at_reveal_time(scorer):
    states = TxStates()
    scorer.update_states(states, tx())
    label = {"fraud": True, "occurred_at": T0 + timedelta(days=7), "tx_occurred_at": T0}
    scorer.apply_label(states.card, states.merchant, label)
    from models.features import features

    assert features(tx(occurred_at=T0 + timedelta(days=7, hours=1)), states).merch_risk_7d == 1.0


def test_bad_artifact_or_rules_stop_at_load(tmp_path):
    with pytest.raises(ModelArtifactError):
        Scorer.load(tmp_path)
    with pytest.raises(PolicyError):
        Scorer.load(SHIPPED, tmp_path / "none.toml")
    assert Scorer.load(None).score(tx(), TxStates()).fallback


def test_a_batch_decides_exactly_as_one_at_a_time_with_fallbacks_in_place(scorer):
    states = TxStates()
    items, singles = [], []
    for i in range(12):
        t = tx(occurred_at=T0 + timedelta(minutes=7 * i), amount_minor=1_000 + 97 * i, card_token=f"tok_{i % 3}")
        if i in (4, 9):
            t = tx(amount_minor="12.50")  # garbled: rules only, in its place in the batch
        singles.append(scorer.score(t, states))
        items.append((t, scorer.features(t, states)))
        scorer.update_states(states, t)
    batch = scorer.decide_many(items)
    assert batch == singles
    assert [d.fallback for d in batch].count(True) == 2 and batch[4].fallback and batch[9].fallback
    assert scorer.decide_many([]) == []


def test_a_batch_the_model_refuses_falls_back_row_by_row(scorer):
    from dataclasses import replace

    class Picky:
        """The real model, refusing any batch of more than one row and rows with a negative amount."""

        def __init__(self, real):
            self.real, self.manifest = real, real.manifest

        @property
        def version(self):
            return self.real.version

        def score(self, X):
            if len(X) > 1 or X[0][0] < 0:
                raise ValueError("no")
            return self.real.score(X)

    picky = replace(scorer, model=Picky(scorer.model), shadow=None)
    good = (tx(), scorer.features(tx(), TxStates()))
    bad_fv = good[1]._replace(amount_major=-1.0)
    decisions = picky.decide_many([good, (tx(), bad_fv), good])
    assert [d.fallback for d in decisions] == [False, True, False]
    assert decisions[0].score == scorer.score(tx(), TxStates()).score


@pytest.mark.parametrize("method", ["wallet", "bank_transfer", "bnpl", "crypto"])
def test_other_methods_are_scored_by_the_methods_model_never_by_the_card_model(scorer, method):
    from dataclasses import replace

    from models.decision import SEVERITY

    t = tx(card_token=f"{method}:acct", bin=None, method=method)
    d = scorer.score(t, TxStates())
    assert d.score is not None and 0.0 <= d.score <= 1.0 and not d.fallback
    assert d.model_version == scorer.methods_model.version != scorer.model.version
    assert d.shadow_score is None and d.shadow_version is None  # the shadow is a card model
    # The rules still make it stricter; garbled input is still the flagged fallback.
    assert SEVERITY[scorer.score(t | {"amount_minor": 600_000}, TxStates()).action] >= SEVERITY["review"]
    assert scorer.score(t | {"currency": "???"}, TxStates()).fallback
    # Without a methods model, the method's rules alone decide: no score, not a fallback.
    rules_only = replace(scorer, methods_model=None).score(t, TxStates())
    assert rules_only.action == "approve" and rules_only.score is None and rules_only.model_version is None
    assert not rules_only.fallback and rules_only.reasons == ()


def test_a_batch_mixes_cards_and_other_methods_in_one_call_per_model(scorer):
    from dataclasses import replace

    calls = []

    class Counted:
        def __init__(self, real, name):
            self.real, self.manifest, self.name = real, real.manifest, name

        @property
        def version(self):
            return self.real.version

        def score(self, X):
            calls.append((self.name, len(X)))
            return self.real.score(X)

    counted = replace(
        scorer, model=Counted(scorer.model, "card"), methods_model=Counted(scorer.methods_model, "methods"), shadow=None
    )
    items = [
        tx(),
        tx(card_token="crypto:bc1qabcdefgh", bin=None, method="crypto"),
        tx(card_token="tok_b"),
        tx(card_token="wallet:google_pay:wtok_1", bin=None, method="wallet"),
        tx(card_token="bnpl:later:cust_1", bin=None, method="bnpl", amount_minor=9_999),
    ]
    batch = counted.decide_many([(t, scorer.features(t, TxStates())) for t in items])
    assert sorted(calls) == [("card", 1), ("methods", 3)]  # equal card rows once; every method in one call
    assert all(d.score is not None for d in batch)
    assert [d.model_version for d in batch] == [
        scorer.model.version if t.get("method") is None else scorer.methods_model.version for t in items
    ]
    assert [d.score for d in batch] == [d.score for d in (scorer.score(t, TxStates()) for t in items)]


def test_the_methods_model_loads_with_the_card_model_and_is_verified(tmp_path):
    import shutil

    from models.train import SHIPPED_METHODS_ARTIFACT

    assert Scorer.load(SHIPPED).methods_model is not None
    assert Scorer.load(None).methods_model is None  # rules only, for every method
    assert Scorer.load(SHIPPED, methods_dir=None).methods_model is None
    bad = tmp_path / "methods"
    shutil.copytree(SHIPPED_METHODS_ARTIFACT, bad)
    (bad / "model.pkl").write_bytes((bad / "model.pkl").read_bytes() + b"x")
    with pytest.raises(ModelArtifactError, match="sha256"):
        Scorer.load(SHIPPED, methods_dir=bad)
    with pytest.raises(ModelArtifactError, match="features"):
        Scorer.load(SHIPPED, methods_dir=SHIPPED)  # a card model is not the methods model


def test_the_loaded_scorer_starts_with_the_shipped_sanctioned_addresses(scorer):
    from models.blocklist import shipped_entries

    listed = shipped_entries()[0].value
    t = tx(card_token=f"crypto:{listed}", bin=None, method="crypto", crypto_address=listed)
    d = scorer.score(t, TxStates())
    assert d.action == "decline" and d.reasons == ("blocklist_crypto_address",)
