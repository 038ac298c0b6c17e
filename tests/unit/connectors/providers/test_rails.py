"""The simulated rails: idempotent by key, deterministic by seed, schedules by event
time, lost answers revealed by status, bank transfers settled or returned, reports."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from connectors.providers.rails import (
    DAY_MS,
    Latency,
    Pricing,
    Rail,
    RailConfigError,
    Window,
    build_rails,
    day_of_ms,
    load_rail_configs,
    rail_config,
)
from connectors.providers.simulated import Call

T0_MS = 1_795_000_000_000  # 2026-11-18, some event time
VISA = ("424242", "4242")


def call(pid: str = "pay_1", at_ms: int = T0_MS, currency: str = "USD") -> Call:
    return Call(pid, currency, at_ms)


def rail(name: str = "acq_north", seed: int = 7, **changes: object) -> Rail:
    cfg = load_rail_configs()[name]
    return Rail(replace(cfg, **changes), seed)


def test_the_shipped_file_has_two_acquirers_a_wallet_two_bank_rails_and_a_bnpl_rail():
    kinds = sorted(c.kind for c in load_rail_configs().values())
    assert kinds == ["bank_transfer", "bank_transfer", "bnpl", "card", "card", "wallet"]


def test_same_key_same_answer_and_one_record():
    r = rail(decline_per_mille=500)
    first = [r.authorize(f"k{i}", *VISA, 1_000, "USD", call(f"p{i}")) for i in range(40)]
    again = [r.authorize(f"k{i}", *VISA, 1_000, "USD", call(f"p{i}", T0_MS + 5_000)) for i in range(40)]
    assert [a.status for a in first] == [a.status for a in again]
    assert len([k for k in r.records if k[0] == "authorize"]) == 40
    assert r.calls == 80
    # a 50 % decline rate does decline some and approve some
    assert {a.status for a in first} == {"approved", "declined"}


def test_deterministic_for_a_seed_and_different_across_seeds():
    def run(seed: int) -> list[tuple[str, int]]:
        r = rail(seed=seed, decline_per_mille=300)
        return [(a.status, a.latency_ms) for a in (r.authorize(f"k{i}", *VISA, 500, "USD", call()) for i in range(50))]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_decline_rate_by_bin_prefix_and_amount_band():
    cfg = replace(
        load_rail_configs()["acq_north"],
        decline_per_mille=10,
        bin_decline_per_mille={"5": 100, "5555": 900},
        amount_decline_per_mille=((0, 0), (10_000, 500)),
    )
    assert cfg.decline_rate_per_mille("424242", 100) == 10
    assert cfg.decline_rate_per_mille("512345", 100) == 100
    assert cfg.decline_rate_per_mille("555555", 100) == 900  # the longest prefix wins
    assert cfg.decline_rate_per_mille("424242", 10_000) == 500
    r = Rail(cfg, 3)
    declined = sum(r.authorize(f"k{i}", "555555", "1234", 100, "USD", call()).status == "declined" for i in range(400))
    assert 320 <= declined <= 400  # ~90 %


def test_test_cards_behave_as_on_the_simulated_provider():
    r = rail()
    assert r.authorize("k1", "400000", "0002", 100, "USD", call()).reason == "card_declined"
    lost = r.authorize("k2", "400000", "0119", 100, "USD", call())
    assert lost.status == "unknown" and lost.reason == "provider_timeout"
    assert r.status("k2", "400000", "0119", 100, call()).status == "approved"  # the delayed success
    assert r.status("k3", "400000", "3055", 100, call()).status == "unknown"
    assert r.capture("c1", "400000", "0341", 100, call()).reason == "capture_refused"


def test_slow_call_is_processed_but_its_answer_is_lost():
    r = rail(latency=Latency(p50_ms=2_000, p99_ms=20_000, timeout_ms=2_000), decline_per_mille=0)
    results = {f"k{i}": r.authorize(f"k{i}", *VISA, 100, "USD", call()) for i in range(60)}
    lost = [k for k, a in results.items() if a.status == "unknown"]
    assert 10 <= len(lost) <= 50  # half the draws are above the p50 = timeout
    assert all(results[k].latency_ms <= 2_000 for k in results)  # the client waits no longer than the timeout
    for k in lost:
        assert r.status(k, *VISA, 100, call()).status == "approved"
        assert r.records["authorize", k].result.status == "approved"
    assert r.status("never-sent", *VISA, 100, call()).reason == "not_processed"


def test_outage_refuses_before_processing_only_inside_its_window():
    r = rail(schedule=(Window(T0_MS, T0_MS + 60_000, "outage"),))
    refused = r.authorize("k1", *VISA, 100, "USD", call(at_ms=T0_MS + 1))
    assert refused.status == "declined" and refused.retryable and refused.reason == "provider_unavailable"
    assert ("authorize", "k1") not in r.records
    assert r.authorize("k1", *VISA, 100, "USD", call(at_ms=T0_MS + 60_000)).retryable is False
    assert ("authorize", "k1") in r.records
    assert r.status("k1", *VISA, 100, call(at_ms=T0_MS + 5)).status == "unknown"  # down for status too


def test_degraded_refuses_some_and_slows_the_rest():
    base = rail(decline_per_mille=0)
    slow = rail(
        decline_per_mille=0, schedule=(Window(0, 2 * T0_MS, "degraded", error_per_mille=300, latency_factor=4),)
    )
    a = [base.authorize(f"k{i}", *VISA, 100, "USD", call()) for i in range(300)]
    b = [slow.authorize(f"k{i}", *VISA, 100, "USD", call()) for i in range(300)]
    refused = sum(x.retryable for x in b)
    assert 50 <= refused <= 130
    answered = [(x.latency_ms, y.latency_ms) for x, y in zip(a, b) if not y.retryable and y.status == "approved"]
    assert all(y >= x for x, y in answered) and sum(y for _, y in answered) > 3 * sum(x for x, _ in answered)


def test_partition_processes_and_loses_every_answer():
    r = rail(decline_per_mille=0, schedule=(Window(T0_MS, T0_MS + 1_000, "partition"),))
    assert r.authorize("k1", *VISA, 100, "USD", call()).status == "unknown"
    assert r.records["authorize", "k1"].result.status == "approved"
    assert r.status("k1", *VISA, 100, call(at_ms=T0_MS + 1_000)).status == "approved"


def test_fees_and_settlement_report_rows():
    r = rail()  # 250 bps + 25
    assert r.capture("cap1", *VISA, 10_000, call("pay_1")).fee_minor == 275
    assert r.refund("ref1", 4_000, call("pay_1", T0_MS + DAY_MS)).status == "approved"
    day0 = day_of_ms(T0_MS)
    assert r.settlement_report(day0) == []
    (cap,) = r.settlement_report(date.fromordinal(day0.toordinal() + 1))
    assert (
        cap.provider,
        cap.provider_ref,
        cap.payment_id,
        cap.currency,
        cap.amount_minor,
        cap.fee_minor,
        cap.kind,
    ) == ("acq_north", "cap1", "pay_1", "USD", 10_000, 275, "capture")
    (ref,) = r.settlement_report(date.fromordinal(day0.toordinal() + 2))
    assert (ref.amount_minor, ref.fee_minor, ref.kind) == (-4_000, 0, "refund")


def test_bank_transfer_settles_or_returns_days_later_by_event_time():
    r = rail("bank_ach", return_per_mille=500)
    for i in range(40):
        assert r.authorize(f"a{i}", *VISA, 5_000, "USD", call(f"p{i}")).status in ("approved", "declined")
        r.capture(f"c{i}", *VISA, 5_000, call(f"p{i}"))
    assert {r.transfer_status(f"c{i}", T0_MS) for i in range(40)} == {"accepted"}
    assert {r.transfer_status(f"c{i}", T0_MS + 2 * DAY_MS) for i in range(40)} == {"settled"}
    later = [r.transfer_status(f"c{i}", T0_MS + 4 * DAY_MS) for i in range(40)]
    assert 8 <= later.count("returned") <= 32 and "settled" in later
    returns = r.settlement_report(date.fromordinal(day_of_ms(T0_MS).toordinal() + 4))
    assert len(returns) == later.count("returned") and all(
        x.kind == "return" and x.amount_minor == -5_000 for x in returns
    )
    assert r.transfer_status("nope", T0_MS) == "unknown"


def test_currency_and_amount_limits_decline():
    r = rail("bank_ach")
    assert r.authorize("k1", *VISA, 100, "EUR", call(currency="EUR")).reason == "currency_not_supported"
    assert r.authorize("k2", *VISA, 10**12, "USD", call()).reason == "amount_limit_exceeded"


def test_records_are_bounded():
    cfg = load_rail_configs()["acq_north"]
    r = Rail(cfg, 1, max_records=10)
    for i in range(25):
        r.authorize(f"k{i}", *VISA, 100, "USD", call())
    assert len(r.records) == 10 and r.forgotten == 15 and ("authorize", "k24") in r.records


def test_lognormal_latency_quantiles():
    lat = Latency(100, 1_000, 60_000)
    assert lat.draw_ms(0.5) == 100
    assert 990 <= lat.draw_ms(0.99) <= 1_010
    assert lat.draw_ms(0.5, factor=3) == 300


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "crypto"}, "kind"),
        ({"currencies": ["USD", "XXX"]}, "currencies"),
        ({"decline_per_mille": 1_001}, "per mille"),
        ({"fee_bps": -1}, "fee_bps"),
        ({"latency_p50_ms": 0}, "p50"),
        ({"schedule": [{"start_ms": 5, "end_ms": 1, "mode": "outage"}]}, "start_ms"),
        ({"schedule": [{"start_ms": 0, "end_ms": 1, "mode": "meltdown"}]}, "mode"),
    ],
)
def test_bad_config_is_a_clear_error(change, message):
    raw = {
        "name": "x",
        "kind": "card",
        "currencies": ["USD"],
        "fee_bps": 1,
        "fee_fixed_minor": 0,
        "latency_p50_ms": 1,
        "latency_p99_ms": 2,
        "timeout_ms": 10,
    } | change
    with pytest.raises(RailConfigError, match=message):
        rail_config(raw)


def test_missing_field_and_unknown_schedule_target(tmp_path):
    with pytest.raises(RailConfigError, match="missing field"):
        rail_config({"name": "x"})
    with pytest.raises(RailConfigError, match="unknown rails"):
        build_rails(schedules={"nope": ()})
    bad = tmp_path / "r.toml"
    bad.write_text("rails = [")
    with pytest.raises(RailConfigError, match="not TOML"):
        load_rail_configs(bad)


def test_pricing_never_exceeds_the_amount():
    assert Pricing(290, 30).fee_minor(10) == 10
    assert Pricing(290, 30).fee_minor(100_000) == 2_930


def test_the_bank_s_notices_settle_then_return_some_with_the_rail_s_codes():
    r = rail("bank_ach", return_per_mille=300)
    submitted_ms = T0_MS + 5 * 3_600_000
    day_start = submitted_ms // DAY_MS * DAY_MS
    feeds = [r.transfer_notices(f"c{i}", submitted_ms) for i in range(60)]
    assert all(f[0] == ("settle", day_start + 2 * DAY_MS, None) for f in feeds)
    returned = [f for f in feeds if len(f) == 2]
    assert 5 <= len(returned) <= 35
    assert all(
        f[1][0] == "return" and f[1][1] == day_start + 4 * DAY_MS and f[1][2] in r.config.return_codes for f in returned
    )
    # The same feed whenever it is asked, and the transfer's status agrees with it.
    assert feeds == [r.transfer_notices(f"c{i}", submitted_ms) for i in range(60)]
    for i in range(60):
        r.capture(f"c{i}", "", "", 5_000, call(f"p{i}", submitted_ms))
        assert (r.transfer_status(f"c{i}", day_start + 4 * DAY_MS) == "returned") == (len(feeds[i]) == 2)


def test_a_return_due_before_the_settlement_comes_instead_of_it():
    r = rail("bank_ach", return_per_mille=1000, settle_days=3, return_days=2)
    ((kind, at_ms, code),) = r.transfer_notices("c1", T0_MS)
    assert (kind, at_ms // DAY_MS) == ("return", T0_MS // DAY_MS + 2) and code in r.config.return_codes


def test_return_codes_are_checked():
    with pytest.raises(RailConfigError, match="return_codes"):
        rail("bank_ach", return_codes=("R-01",))
