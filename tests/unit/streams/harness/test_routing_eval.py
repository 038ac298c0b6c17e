"""The routing evaluation: a pure, replayable simulation (same seed, same numbers)
of today's router against the learning router, in the bench JSON's shape."""

from __future__ import annotations

import json

from streams.harness.routing_eval import VARIANTS, evaluate, traffic


def test_the_same_seed_gives_the_same_numbers_and_the_traffic_spans_every_band():
    a, b = evaluate(600, seed=3, partitions=2), evaluate(600, seed=3, partitions=2)
    assert a == b and json.loads(json.dumps(a)) == a  # replayable, and JSON as the bench writes it
    creates = traffic(2_000, 3)
    amounts = sorted(c["amount_minor"] for c in creates)
    assert amounts[0] < 1_000 and amounts[-1] > 1_000_000
    assert [c["at_ms"] for c in creates] == sorted(c["at_ms"] for c in creates)


def test_each_variant_reports_approvals_and_cost():
    result = evaluate(800, seed=5, partitions=2, scenarios=("steady",))
    steady = result["scenarios"]["steady"]
    assert set(steady) == set(VARIANTS) | {"learning_vs_rule"}
    for name in VARIANTS:
        r = steady[name]
        assert r["payments"] == 800 and 0 < r["approved"] <= 800 and sum(r["shares"].values()) == r["approved"]
        assert 250 < r["fee_bps_of_approved"] < 350  # between acq_north's 250 bps + 25 and acq_south's 290 + 30
    assert steady["rule"]["soft_retries"] == steady["rule"]["learned_choices"] == 0
    # the soft-decline retry only ever adds approvals to the same traffic
    assert steady["rule_soft_retry"]["approved"] >= steady["rule"]["approved"]
    assert steady["rule_soft_retry"]["soft_retries"] > 0 and steady["learning"]["learned_choices"] > 0
