"""The demo's cardholders: one confirm per 3DS step-up of the run, its result drawn
per payment from the seed (mostly Y, some N), each a command ingest accepts; and its
chaos pieces: the schedule over the traffic's span, the settings a chaos worker gets,
and routing shares from events."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from connectors.providers.rails import load_schedules
from connectors.vault.tokenizer import Tokenizer
from schemas.codec import Codec
from schemas.partitioning import partition_for
from schemas.times import to_ms
from streams.demo.run import (
    CHAOS_PROVIDER,
    STEP_UP_DELAY,
    THREE_DS_WEIGHTS,
    chaos_schedule,
    generate,
    provider_shares,
    step_up_confirms,
    with_chaos,
)
from streams.settings import Settings
from streams.stages.ingest import Forward, Limits, Source, command_key, ingest

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
COMMANDS = Codec("PaymentCommand")
LIMITS = Limits(max_amount_minor=10**15, idempotency_key_max_len=255, partitions=8)


def creates(payments: int = 400) -> list[dict[str, Any]]:
    return [c for c in generate(payments, 7, "run1", START).items if isinstance(c, dict) and c["kind"] == "create"]


def outcome(status: str, payment_status: str) -> list[dict[str, Any]]:
    return [{"status": status, "payment_status": payment_status}]


def paused_all(cs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every create's first outcome as if the risk stage had asked each for 3DS; a
    repeated create (retry, key conflict) answered as the payments stage answers it."""
    seen: set[str] = set()
    outcomes = {}
    for c in cs:
        first = c["payment_id"] not in seen
        seen.add(c["payment_id"])
        outcomes[c["command_id"]] = outcome("succeeded" if first else "replayed", "requires_action")
    return outcomes


def test_one_confirm_per_paused_payment_and_none_for_the_rest() -> None:
    cs = creates()
    outcomes = paused_all(cs)
    authorized = cs[0]
    outcomes[authorized["command_id"]] = outcome("succeeded", "captured")
    confirms = step_up_confirms(cs, outcomes, seed=7, run_id="run1")
    paused = {c["payment_id"] for c in cs} - {authorized["payment_id"]}
    assert sorted(c["payment_id"] for c in confirms) == sorted(paused)  # one each, retries and conflicts not twice
    assert len({c["command_id"] for c in confirms}) == len(confirms)
    by_pid = {c["payment_id"]: c for c in cs if outcomes[c["command_id"]][0]["status"] == "succeeded"}
    for confirm in confirms:
        create = by_pid[confirm["payment_id"]]
        assert confirm["merchant_id"] == create["merchant_id"]
        assert confirm["occurred_at"] == create["occurred_at"] + STEP_UP_DELAY
    # A create nobody answered yet, or one the stage refused, gets none.
    assert step_up_confirms(cs, {}, seed=7, run_id="run1") == []
    refused = {c["command_id"]: outcome("rejected", "requires_action") for c in cs}
    assert step_up_confirms(cs, refused, seed=7, run_id="run1") == []


def test_results_are_seeded_per_payment_mostly_authenticated() -> None:
    cs = creates()
    outcomes = paused_all(cs)
    first = step_up_confirms(cs, outcomes, seed=7, run_id="run1")
    # The same seed gives each payment the same answer, whatever order the creates come in.
    again = step_up_confirms(list(reversed(cs)), outcomes, seed=7, run_id="run1")
    result = {c["payment_id"]: c["three_ds"] for c in first}
    assert {c["payment_id"]: c["three_ds"] for c in again} == result
    other = step_up_confirms(cs, outcomes, seed=8, run_id="run1")
    assert {c["payment_id"]: c["three_ds"] for c in other} != result
    counts = Counter(r["trans_status"] for r in result.values())
    assert set(counts) <= set(THREE_DS_WEIGHTS)
    assert counts["Y"] > 0.7 * len(result) and counts["N"] > 0, counts


def test_every_confirm_is_a_command_ingest_forwards_with_its_result(tmp_path) -> None:
    from connectors.vault.keys import ACS_SIGNING, ActiveSigner, FileKeyStore
    from schemas.times import to_ms
    from streams.domain.authentication import verify_cavv

    store = FileKeyStore(tmp_path)
    store.init()
    cs = creates(100)
    by_pid = {c["payment_id"]: c for c in cs}
    signed = 0
    for confirm in step_up_confirms(cs, paused_all(cs), seed=7, run_id="run1", acs=ActiveSigner.of(store, ACS_SIGNING)):
        key = command_key(confirm)
        source = Source("payment-commands", partition_for(key, LIMITS.partitions), 0, 0, key)
        result = ingest(COMMANDS.encode(confirm, check=True), source, Tokenizer(b"k" * 32, "t1"), LIMITS)
        assert isinstance(result, Forward) and result.command["rejection_reason"] is None, result
        three_ds = confirm["three_ds"]
        assert result.command["three_ds"] == {"authentication_value": None} | three_ds
        if three_ds["trans_status"] in ("Y", "A"):  # signed by the issuer, for this payment
            create = by_pid[confirm["payment_id"]]
            av = verify_cavv(
                three_ds["authentication_value"],
                store.public_keys(ACS_SIGNING),
                payment_id=create["payment_id"],
                merchant_id=create["merchant_id"],
                amount_minor=create["amount_minor"],
                currency=create["currency"],
                trans_status=three_ds["trans_status"],
                eci=three_ds["eci"],
                ds_trans_id=three_ds["ds_trans_id"],
                at_ms=to_ms(confirm["occurred_at"]),
            )
            signed += av.payment_id == create["payment_id"]
    assert signed > 50


def test_cardholders_keep_what_the_provider_keys_on() -> None:
    import random

    from schemas.cards import luhn_valid
    from streams.demo.cards import ORDINARY_CARDS, TEST_CARDS, cardholder

    rng = random.Random(1)
    for i, test_card in enumerate(TEST_CARDS):
        saga = i >= ORDINARY_CARDS
        numbers = {cardholder(test_card, rng, keep_last4=saga) for _ in range(50)}
        assert len(numbers) > 40  # many cardholders, not one card paying over and over
        for pan in numbers:
            assert luhn_valid(pan) and len(pan) == len(test_card) and pan[:6] == test_card[:6]
            if saga:  # the simulated provider's saga behaviour follows (BIN, last4)
                assert pan[-4:] == test_card[-4:]


def test_chaos_schedule_covers_the_traffic_span_outage_then_degraded():
    t0 = to_ms(START)
    (outage, degraded) = chaos_schedule(t0, t0 + 100_000)[CHAOS_PROVIDER]
    assert (outage.mode, outage.start_ms, outage.end_ms) == ("outage", t0 + 10_000, t0 + 40_000)
    assert degraded.mode == "degraded" and t0 + 40_000 < degraded.start_ms < degraded.end_ms <= t0 + 100_000
    assert degraded.error_per_mille > 0 and degraded.latency_factor > 1


def test_chaos_settings_point_the_worker_at_the_schedule_and_a_routing_log(tmp_path):
    traffic = generate(50, 3, "run1", START)
    base = Settings(data_dir=tmp_path, keys_dir=tmp_path / "keys", providers="test")
    s = with_chaos(base, traffic, "run1")
    assert s.providers == "rails" and s.routing_log_dir is not None
    assert (
        s.providers_dir == base.providers_dir and s.routing_log_dir != s.providers_dir
    )  # the rails' books stay where they are
    (outage, _) = load_schedules(s.provider_schedule_file)[CHAOS_PROVIDER]
    times = [to_ms(c["occurred_at"]) for c in traffic.items if isinstance(c, dict)]
    assert min(times) < outage.start_ms < outage.end_ms < max(times)


def test_shares_count_each_payment_once_by_the_provider_that_decided_it():
    events = {
        "p1": [{"type": "authorized", "provider": "acq_north"}, {"type": "captured", "provider": "acq_north"}],
        "p2": [
            {"type": "authorization_pending", "provider": "acq_south"},
            {"type": "authorized", "provider": "acq_south"},
        ],
        "p3": [{"type": "declined", "provider": None}],  # refused before any provider
    }
    assert provider_shares(events) == {"acq_north": 1, "acq_south": 1}


def test_the_network_disputes_a_few_captures_in_event_time_order_and_the_same_ones_every_run() -> None:
    from datetime import datetime, timedelta

    from streams.demo.run import DISPUTE_SHARE, dispute_commands

    at = datetime(2026, 11, 25, 12, tzinfo=UTC)
    events = {
        f"pay_{i}": [
            {"type": "authorized", "occurred_at": at, "merchant_id": "m_acme"},
            {"type": "captured", "occurred_at": at, "merchant_id": "m_acme"},
        ]
        for i in range(2_000)
    }
    events |= {
        f"pay_declined_{i}": [{"type": "declined", "occurred_at": at, "merchant_id": "m_acme"}] for i in range(500)
    }
    commands = dispute_commands(events, seed=7, run_id="r")
    assert commands == dispute_commands(events, seed=7, run_id="r")
    by_payment: dict[str, list[dict]] = {}
    for c in commands:
        by_payment.setdefault(c["payment_id"], []).append(c)
    assert not any(p.startswith("pay_declined") for p in by_payment)  # nothing captured, nothing to dispute
    assert 0.5 * DISPUTE_SHARE * 2_000 <= len(by_payment) <= 1.5 * DISPUTE_SHARE * 2_000
    for steps in by_payment.values():
        kinds = [c["kind"] for c in steps]
        assert kinds in (["dispute_open", "dispute_close"], ["dispute_open", "dispute_evidence", "dispute_close"])
        times = [c["occurred_at"] for c in steps]
        assert times == sorted(times) and times[0] == at + timedelta(days=3)
        assert steps[-1]["dispute"]["outcome"] in ("won", "lost") and steps[0]["dispute"]["reason"]


# --- payment methods: wallets, bank transfers, BNPL in the day's traffic, then the banks' notices ---


def test_some_payments_use_the_other_methods_and_none_carries_a_pan() -> None:
    from collections import Counter

    from schemas.cards import contains_pan
    from streams.demo.run import METHOD_CURRENCIES

    cs = creates(1000)
    by = Counter(c.get("method") or "card" for c in cs)
    assert set(by) == {"card", "wallet", "bank_transfer", "bnpl"} and by["card"] > len(cs) // 2, by
    for c in cs:
        method = c.get("method") or "card"
        if method == "card":
            continue
        COMMANDS.encode(c, check=True)
        assert c["card"] is None and c["currency"] in METHOD_CURRENCIES[method]
        assert not contains_pan(repr({k: v for k, v in c.items() if k != "occurred_at"}))
        if method == "bank_transfer":
            assert c["capture_method"] == "automatic"
    # The card traffic's own draws are as before: the same seed gives the same card creates.
    assert [c["command_id"] for c in cs if not c.get("method")] == [
        c["command_id"] for c in creates(1000) if not c.get("method")
    ]


def test_every_method_create_is_one_ingest_forwards() -> None:
    for c in creates(300):
        if not c.get("method") or c["amount_minor"] <= 0 or c["currency"] == "XYZ":
            continue
        key = command_key(c)
        source = Source("payment-commands", partition_for(key, LIMITS.partitions), 0, 0, key)
        result = ingest(COMMANDS.encode(c, check=True), source, Tokenizer(b"k" * 32, "t1"), LIMITS)
        assert isinstance(result, Forward) and result.command["rejection_reason"] is None, result.command
        assert result.command["method"] == c["method"]


def test_the_banks_notices_follow_the_rails_decisions_in_event_time_order() -> None:
    from dataclasses import replace

    from connectors.providers.rails import Rail, load_rail_configs
    from streams.demo.methods import BankNotices, bank_notice_commands, methods_summary

    configs = load_rail_configs()
    rails = {
        "bank_ach": Rail(replace(configs["bank_ach"], return_per_mille=500), 7),
        "acq_north": Rail(configs["acq_north"], 7),
    }
    events = {
        f"pay_{i}": [
            {
                "type": "bank_submitted",
                "provider": "bank_ach",
                "provider_ref": f"prv_{i}",
                "merchant_id": "m_acme",
                "occurred_at": START,
                "method": "bank_transfer",
            }
        ]
        for i in range(30)
    }
    events["pay_card"] = [
        {
            "type": "captured",
            "provider": "acq_north",
            "provider_ref": "x",
            "merchant_id": "m_acme",
            "occurred_at": START,
            "method": None,
        }
    ]
    cmds = bank_notice_commands(events, rails, "run1")
    assert sum(c["kind"] == "bank_settle" for c in cmds) == 30  # return_days > settle_days: settled first
    returns = [c for c in cmds if c["kind"] == "bank_return"]
    assert 5 <= len(returns) <= 25 and all(
        c["bank_notice"]["return_code"] in ("R01", "R02", "R03", "R10") for c in returns
    )
    assert [c["occurred_at"] for c in cmds] == sorted(c["occurred_at"] for c in cmds)
    assert all(c["occurred_at"] > START for c in cmds) and "pay_card" not in {c["payment_id"] for c in cmds}
    for c in cmds:
        COMMANDS.encode(c, check=True)
    assert bank_notice_commands(events, rails, "run1") == cmds  # the same feed every time
    summary = methods_summary(events, BankNotices(len(cmds), len(cmds), 30, len(returns)))
    assert "bank_transfer 30" in summary and "card 1" in summary and f"returned {len(returns)}" in summary
