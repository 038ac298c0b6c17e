"""The routing evaluation: the same simulated card traffic through today's rule router
and the learning router, over the simulated rails, reporting approval rate and cost.

Pure simulation, no broker: each variant gets fresh rails (same seed) and fresh
routing state per partition (as the payments stage keeps it: one `RoutingState` per
partition, the payment's partition by its id), and every payment goes through
`Router.authorize` under the keys the payments stage derives (`authorization_keys`).
The same seed gives the same numbers.

Scenarios:
- `steady`: the rails as configured (rails.toml): acq_north declines a weak issuer's
  BIN (5555) more and large amounts differently from acq_south;
- `drift`: halfway through, acq_north's issuers turn strict on the 4242 BIN (a
  150 per mille decline rate): the learning router must notice and move that
  segment; the rule router's rolling rate mixes it with every other segment.

Variants: `rule` (today: no learning, no soft-decline retry), `rule_soft_retry`
(the retry alone) and `learning` (PAYSTREAM_ROUTING_LEARN with the retry).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace
from typing import Any

from connectors.providers.rails import build_rails
from connectors.providers.router import Router, RoutingState, build_router
from connectors.providers.simulated import Call
from schemas.partitioning import partition_for
from streams.domain.payments import authorization_keys

# (BIN, share): the demo's ordinary cards (streams/demo/run.py)
BINS = (("424242", 30), ("555555", 25), ("400005", 15), ("378282", 12), ("601111", 10))
CURRENCIES = (("USD", 40), ("EUR", 25), ("GBP", 12), ("CAD", 8), ("JPY", 5), ("BRL", 5), ("MXN", 5))
AMOUNT_MIN_MINOR, AMOUNT_MAX_MINOR = 500, 8_000_000  # log-uniform: every amount band sees traffic
EVENT_STEP_MS = 200
T0_MS = 1_795_000_000_000
DRIFT_BIN, DRIFT_DECLINE_PER_MILLE = "4242", 150
VARIANTS = {"rule": (False, False), "rule_soft_retry": (False, True), "learning": (True, True)}
MAX_PAYMENTS = 200_000


def traffic(payments: int, seed: int) -> list[dict[str, Any]]:
    """Card creates as the router reads them, one every EVENT_STEP_MS of event time."""
    assert 1 <= payments <= MAX_PAYMENTS, payments
    rng = random.Random(f"routing-eval:{seed}")
    bins, bin_w = zip(*BINS)
    currencies, cur_w = zip(*CURRENCIES)
    lo, hi = math.log(AMOUNT_MIN_MINOR), math.log(AMOUNT_MAX_MINOR)
    out = []
    for i in range(payments):
        card_bin = rng.choices(bins, bin_w)[0]
        out.append(
            {
                "payment_id": f"pay_eval_{seed}_{i}",
                "method": "card",
                "metadata": {},
                "currency": rng.choices(currencies, cur_w)[0],
                "amount_minor": int(math.exp(rng.uniform(lo, hi))),
                "card": {"bin": card_bin, "last4": f"{rng.randrange(10_000):04d}"},
                "at_ms": T0_MS + i * EVENT_STEP_MS,
            }
        )
    return out


def run_variant(
    router: Router, creates: list[dict[str, Any]], seed: int, *, soft_retry: bool, partitions: int, drift: bool
) -> dict[str, Any]:
    rails = build_rails(seed)
    states: dict[int, RoutingState] = {}
    margin_bps = router.config.learn.margin_bps
    fees: Counter[str] = Counter()
    approved = pending = soft_retries = learned = 0
    fee_share = value_share = 0.0  # sums of (fee / amount) and (margin - fee) / amount over approvals
    shares: Counter[str] = Counter()
    for i, c in enumerate(creates):
        if drift and i == len(creates) // 2:
            north = rails["acq_north"].config
            rails["acq_north"].config = replace(
                north, bin_decline_per_mille={**north.bin_decline_per_mille, DRIFT_BIN: DRIFT_DECLINE_PER_MILLE}
            )
        pid = c["payment_id"]
        p = partition_for(pid.encode(), partitions)
        key, soft_key = authorization_keys(pid)
        routed = router.authorize(
            states.get(p, RoutingState()),
            rails,
            c,
            key,
            Call(pid, c["currency"], c["at_ms"]),
            soft_key if soft_retry else None,
        )
        states[p] = routed.state
        soft_retries += routed.soft_retries
        learned += routed.learned is not None
        if routed.result.status == "unknown":
            pending += 1
        if routed.result.status != "approved":
            continue
        assert routed.provider is not None
        approved += 1
        shares[routed.provider] += 1
        amount = c["amount_minor"]
        fee = next(r for r in router.routes if r.provider == routed.provider).pricing.fee_minor(amount)
        fees[c["currency"]] += fee
        fee_share += fee / amount
        value_share += (amount * margin_bps // 10_000 - fee) / amount
    n = len(creates)
    return {
        "payments": n,
        "approved": approved,
        "approval_rate": round(approved / n, 4),
        "pending": pending,
        "fees_minor": dict(sorted(fees.items())),
        # currency-free: the mean fee of an approved payment, in bps of its amount
        "fee_bps_of_approved": round(fee_share / approved * 10_000, 1) if approved else None,
        # what the merchant keeps per payment sent, margin less fee on approvals, bps of the amount
        "value_bps_per_payment": round(value_share / n * 10_000, 1),
        "soft_retries": soft_retries,
        "learned_choices": learned,
        "shares": dict(sorted(shares.items())),
    }


def evaluate(
    payments: int = 10_000, seed: int = 7, partitions: int = 8, scenarios: tuple[str, ...] = ("steady", "drift")
) -> dict[str, Any]:
    """Every scenario through every variant: a dict for the bench JSON."""
    creates = traffic(payments, seed)
    out: dict[str, Any] = {"payments": payments, "seed": seed, "partitions": partitions, "scenarios": {}}
    for scenario in scenarios:
        assert scenario in ("steady", "drift"), scenario
        results = {}
        for name, (learn, soft) in VARIANTS.items():
            router = build_router({n: r.config for n, r in build_rails(seed).items()}, learn=learn)
            results[name] = run_variant(
                router, creates, seed, soft_retry=soft, partitions=partitions, drift=scenario == "drift"
            )
        rule, learning = results["rule"], results["learning"]
        results["learning_vs_rule"] = {
            "approval_rate_points": round((learning["approval_rate"] - rule["approval_rate"]) * 100, 2),
            "fee_bps_of_approved": round(
                (learning["fee_bps_of_approved"] or 0) - (rule["fee_bps_of_approved"] or 0), 1
            ),
            "value_bps_per_payment": round(learning["value_bps_per_payment"] - rule["value_bps_per_payment"], 1),
        }
        out["scenarios"][scenario] = results
    return out
