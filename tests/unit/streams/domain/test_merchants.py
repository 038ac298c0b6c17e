"""The merchant registry: record building, the fold over the compacted topic, and
the create rule the keys stage applies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.codec import Codec
from streams.domain.merchants import MerchantError, Refusal, admit, fold, merchant_record, with_status

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
CODEC = Codec("MerchantRecord")


def create(currency: str = "USD", kind: str = "create") -> dict:
    return {"kind": kind, "merchant_id": "m_acme", "currency": currency}


def test_a_record_round_trips_through_avro() -> None:
    r = merchant_record("m_acme", currencies=["USD", "EUR", "USD"], updated_at=T0)
    assert (r["kyc_status"], r["currencies"], r["methods"]) == ("pending", ["EUR", "USD"], ["card"])
    assert CODEC.decode(CODEC.encode(r, check=True)) == r


@pytest.mark.parametrize(
    "kw",
    [
        {"merchant_id": ""},
        {"kyc_status": "maybe"},
        {"currencies": ["usd"]},
        {"methods": ["cash"]},
        {"fee_plan_id": ""},
        {"settlement_currency": "XX"},
        {"updated_at": datetime(2026, 1, 1)},
    ],
)
def test_bad_records_are_refused_with_the_field(kw: dict) -> None:
    args = {"merchant_id": "m_acme", "updated_at": T0} | kw
    with pytest.raises(MerchantError):
        merchant_record(args.pop("merchant_id"), **args)


def test_fold_is_last_writer_wins_and_tombstones_remove() -> None:
    pending = merchant_record("m_acme", updated_at=T0)
    verified = with_status(pending, "verified", T1)
    reg = fold(fold({}, "m_acme", pending), "m_acme", verified)
    assert reg["m_acme"]["kyc_status"] == "verified" and reg["m_acme"]["updated_at"] == T1
    assert reg["m_acme"]["currencies"] == pending["currencies"]
    assert fold(reg, "m_acme", None) == {}
    assert fold({}, "m_other", None) == {}


def test_a_create_for_a_non_verified_merchant_is_refused() -> None:
    for status in ("pending", "rejected"):
        r = merchant_record("m_acme", kyc_status=status, updated_at=T0)
        assert admit(create(), r) == Refusal("merchant_not_verified", f"the merchant's KYC status is {status}")
    assert admit(create(), merchant_record("m_acme", kyc_status="verified", updated_at=T0)) is None


def test_follow_ups_are_not_rechecked() -> None:
    rejected = merchant_record("m_acme", kyc_status="rejected", updated_at=T0)
    assert admit(create(kind="refund"), rejected) is None


def test_currencies_limit_creates() -> None:
    r = merchant_record("m_acme", kyc_status="verified", currencies=["EUR"], updated_at=T0)
    assert admit(create("EUR"), r) is None
    assert admit(create("USD"), r).reason == "currency_not_allowed"


def test_unknown_merchants_pass_unless_registration_is_required() -> None:
    assert admit(create(), None) is None
    assert admit(create(), None, require_registration=True).reason == "merchant_unknown"


# --- marketplaces: connected accounts and split creates ---


def verified(merchant_id: str) -> dict:
    return merchant_record(merchant_id, kyc_status="verified", updated_at=T0)


def test_connect_links_a_verified_account_to_its_platform_and_round_trips() -> None:
    from streams.domain.merchants import connect

    platform, account = connect(verified("m_market"), verified("m_seller"), T1)
    assert (platform["connected"], account["platform_id"]) == (["m_seller"], "m_market")
    assert CODEC.decode(CODEC.encode(platform, check=True)) == platform
    with pytest.raises(MerchantError, match="verified"):
        connect(verified("m_market"), merchant_record("m_new", updated_at=T0), T1)
    with pytest.raises(MerchantError, match="connected elsewhere"):
        connect(verified("m_other"), account, T1)
    with pytest.raises(MerchantError, match="itself a connected account"):
        connect(account, verified("m_x"), T1)


def test_a_split_create_is_admitted_only_to_connected_accounts() -> None:
    from streams.domain.merchants import connect, disconnect

    platform, _ = connect(verified("m_market"), verified("m_seller"), T1)
    split = create() | {"merchant_id": "m_market", "splits": [{"merchant_id": "m_seller", "amount_minor": 1}]}
    assert admit(split, platform) is None
    stranger = split | {"splits": [{"merchant_id": "m_stranger", "amount_minor": 1}]}
    assert admit(stranger, platform).reason == "split_account_not_connected"
    assert admit(split, disconnect(platform, "m_seller", T1)).reason == "split_account_not_connected"
    assert admit(split, None).reason == "merchant_unknown"  # an unregistered platform cannot split


def test_methods_limit_creates_by_the_create_s_method() -> None:
    cards_only = merchant_record("m_acme", kyc_status="verified", updated_at=T0)
    every = merchant_record(
        "m_acme", kyc_status="verified", methods=["card", "wallet", "bank_transfer", "bnpl"], updated_at=T0
    )
    assert admit(create() | {"method": "card"}, cards_only) is None
    for method in ("wallet", "bank_transfer", "bnpl"):
        assert admit(create() | {"method": method}, cards_only).reason == "method_not_allowed"
        assert admit(create() | {"method": method}, every) is None
    # A record from before ValidatedCommand v5 names its method in metadata, as the router read it.
    assert admit(create() | {"metadata": {"payment_method": "wallet"}}, cards_only).reason == "method_not_allowed"
