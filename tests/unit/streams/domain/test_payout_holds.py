"""Compliance holds on payouts (streams/domain/payout_holds.py): a merchant not verified is
not paid, a sanctioned beneficiary is held with the match shown unless a reviewer
cleared it, a held payout is sent by a later run once nothing holds it, and the audit
finds nothing wrong with a held payout."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.clickhouse.rows import rows_for
from streams.domain import kyc, merchants
from streams.domain.payout_holds import payout_hold
from streams.domain.payouts import payout_of_settlement, run_payouts
from streams.domain.sanctions import load_list
from streams.jobs.payouts import status_record
from tests.unit.streams.domain.test_payouts import CLOSED, SENT_AT, SHARDS, check, settled

AT = datetime(2026, 11, 1, tzinfo=UTC)
LIST = load_list()
DOCS = {"registration_certificate": "d:1", "owner_id": "d:2", "proof_of_address": "d:3"}


def with_kyc(merchant: str, legal_name: str, state: str, cleared: tuple[str, ...] = ()) -> dict:
    case = kyc.apply(None, kyc.application(legal_name, "GB", "GB-1", ["Ada Example"], DOCS), "kyc_1", AT)
    case = kyc.checked(
        case,
        [kyc.Check("registry", {"verified": "pass", "manual_review": "manual", "rejected": "fail"}[state], "")],
        AT,
    ) | {"cleared": list(cleared)}
    return merchants.with_case(merchants.merchant_record(merchant, updated_at=AT), case, AT)


def run(registry: dict, *merchant_ids: str, require_registration: bool = False):  # type: ignore[no-untyped-def]
    payouts = [payout_of_settlement(settled(m, 1_000)) for m in merchant_ids]
    return run_payouts(
        payouts,
        {},
        as_of_ms=SENT_AT,
        bank=CLOSED,
        shards=SHARDS,
        hold=payout_hold(registry, LIST, require_registration=require_registration),
    )


def test_only_verified_clear_merchants_are_paid() -> None:
    registry = {
        "m_ok": with_kyc("m_ok", "Acme Trading Ltd", "verified"),
        "m_review": with_kyc("m_review", "Acme Two Ltd", "manual_review"),
        "m_listed": with_kyc("m_listed", "Nordhaven Maritime Holdings", "verified"),
        "m_legacy": merchants.merchant_record("m_legacy", kyc_status="verified", updated_at=AT),
        "m_pending": merchants.merchant_record("m_pending", updated_at=AT),
    }
    result = run(registry, *registry, "m_unregistered")
    status = {s.merchant_id: (s.status, s.failure_reason) for s in result.statuses}
    assert status == {
        "m_ok": ("sent", ""),
        "m_legacy": ("sent", ""),
        "m_unregistered": ("sent", ""),
        "m_review": ("held", "kyc_not_verified: pending"),
        "m_pending": ("held", "kyc_not_verified: pending"),
        "m_listed": ("held", "sanctions_hit:PS-0003:100 (Nordhaven Maritime Holdings Ltd)"),
    }
    assert {e.merchant_id for e in result.entries} == {"m_ok", "m_legacy", "m_unregistered"}
    assert check([*(settled(m, 1_000) for m in (*registry, "m_unregistered")), *result.entries]) == []
    held = next(s for s in result.statuses if s.status == "held")
    assert rows_for("payout", status_record(held))  # the read model takes a held row


def test_a_cleared_beneficiary_and_a_later_verification_release_the_payout() -> None:
    assert (
        run({"m_listed": with_kyc("m_listed", "Nordhaven Shipping", "verified", ("PS-0003",))}, "m_listed").count(
            "sent"
        )
        == 1
    )
    held = run({"m_x": with_kyc("m_x", "Acme", "manual_review")}, "m_x")
    assert held.count("held") == 1 and held.entries == ()
    released = run({"m_x": with_kyc("m_x", "Acme", "verified")}, "m_x")
    assert released.count("sent") == 1 and len(released.entries) == 1


def test_registration_required_holds_unknown_merchants() -> None:
    assert run({}, "m_unknown", require_registration=True).statuses[0].failure_reason == "merchant_unknown"
