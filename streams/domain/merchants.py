"""The merchant registry: records on the compacted `merchants` topic (keyed by
merchant_id, schemas/avro/MerchantRecord.avsc), folded into a dict, and the rule a
create must pass. Pure: no Kafka, no clock.

Where the rule runs: the keys stage (streams/stages/idempotency.py). Its input is keyed by
merchant, so with `merchants` partitioned the same way each keys partition needs only
its own merchants (a co-partitioned table, no global table), and a refused create
never reaches the payments stage. The stage calls `admit` and, on a reason, sets
`rejection_reason`/`rejection_detail` on the command as it does for key conflicts.

Unknown merchants (no record): allowed unless `require_registration` is set
(`PAYSTREAM_MERCHANTS_REQUIRE_REGISTRATION`), so the demo and existing producers keep
working until their merchants are registered; a registered merchant that is not
verified is always refused. Follow-ups of existing payments are not re-checked: a
merchant rejected later can still refund and answer disputes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.money import is_currency
from streams.domain.kyc import STATUS_OF
from streams.domain.methods import METHODS as PAYMENT_METHODS
from streams.domain.methods import method_of

KYC_STATUSES = ("pending", "verified", "rejected")
METHODS = frozenset(PAYMENT_METHODS)  # streams/domain/methods.py: card, wallet, bank_transfer, bnpl
MERCHANT_ID_MAX_LEN = 64  # as ingest bounds it
FEE_PLAN_MAX_LEN = 64
MAX_CURRENCIES = 64
MAX_CONNECTED = 1_000  # connected accounts per platform: the record stays small

#: merchant_id -> its latest record
Registry = dict[str, dict[str, Any]]


class MerchantError(ValueError):
    """A registry record that cannot be built; the message says which field."""


def merchant_record(
    merchant_id: str,
    *,
    kyc_status: str = "pending",
    currencies: Iterable[str] = (),
    methods: Iterable[str] = ("card",),
    fee_plan_id: str = "standard",
    settlement_currency: str = "USD",
    updated_at: datetime,
    platform_id: str | None = None,
    connected: Iterable[str] = (),
    kyc: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A checked MerchantRecord (`kyc`: its onboarding case, streams/domain/kyc.py)."""
    currencies, methods, connected = sorted(set(currencies)), sorted(set(methods)), sorted(set(connected))
    if not merchant_id or len(merchant_id) > MERCHANT_ID_MAX_LEN or not merchant_id.isprintable():
        raise MerchantError(f"merchant_id must be 1..{MERCHANT_ID_MAX_LEN} printable chars")
    if kyc_status not in KYC_STATUSES:
        raise MerchantError(f"kyc_status must be one of {', '.join(KYC_STATUSES)}")
    if len(currencies) > MAX_CURRENCIES or not all(is_currency(c) for c in currencies):
        raise MerchantError(f"currencies must be at most {MAX_CURRENCIES} ISO 4217 codes")
    if not set(methods) <= METHODS:
        raise MerchantError(f"methods must be among {', '.join(sorted(METHODS))}")
    if not fee_plan_id or len(fee_plan_id) > FEE_PLAN_MAX_LEN:
        raise MerchantError(f"fee_plan_id must be 1..{FEE_PLAN_MAX_LEN} chars")
    if not is_currency(settlement_currency):
        raise MerchantError("settlement_currency must be an ISO 4217 code")
    if updated_at.tzinfo is None:
        raise MerchantError("updated_at needs a timezone")
    if platform_id is not None and (
        not platform_id or platform_id == merchant_id or len(platform_id) > MERCHANT_ID_MAX_LEN
    ):
        raise MerchantError("platform_id must be another merchant's id")
    if platform_id is not None and connected:
        raise MerchantError("a connected account cannot have connected accounts of its own")
    if len(connected) > MAX_CONNECTED or merchant_id in connected:
        raise MerchantError(f"connected must be at most {MAX_CONNECTED} other merchants")
    return {
        "merchant_id": merchant_id,
        "kyc_status": kyc_status,
        "currencies": currencies,
        "methods": methods,
        "fee_plan_id": fee_plan_id,
        "settlement_currency": settlement_currency,
        "updated_at": updated_at,
        "platform_id": platform_id,
        "connected": connected,
        "kyc": None if kyc is None else dict(kyc),
    }


def with_status(record: Mapping[str, Any], kyc_status: str, updated_at: datetime) -> dict[str, Any]:
    """The record's next version with another KYC status (verify, reject)."""
    return _with(record, updated_at, kyc_status=kyc_status)


def with_case(record: Mapping[str, Any], case: Mapping[str, Any], updated_at: datetime) -> dict[str, Any]:
    """The record's next version with its KYC case, kyc_status following the case's state."""

    return _with(record, updated_at, kyc=case, kyc_status=STATUS_OF[case["state"]])


def _with(record: Mapping[str, Any], updated_at: datetime, **changes: Any) -> dict[str, Any]:
    fields = {k: v for k, v in record.items() if k not in ("merchant_id", "updated_at")} | changes
    return merchant_record(record["merchant_id"], updated_at=updated_at, **fields)


def connect(
    platform: Mapping[str, Any], account: Mapping[str, Any], updated_at: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next versions of a platform's record and of a merchant it connects (a
    marketplace's seller): the account names its platform, the platform lists the
    account, which the keys stage checks a split create against (it sees only the
    platform's record). Only verified merchants connect; one platform per account."""
    if platform["kyc_status"] != "verified" or account["kyc_status"] != "verified":
        raise MerchantError("both the platform and the account must be verified")
    if platform.get("platform_id") is not None:
        raise MerchantError(f"{platform['merchant_id']} is itself a connected account")
    if account.get("platform_id") not in (None, platform["merchant_id"]) or account.get("connected"):
        raise MerchantError(f"{account['merchant_id']} is connected elsewhere or is a platform")
    return (
        _with(platform, updated_at, connected=[*platform.get("connected", ()), account["merchant_id"]]),
        _with(account, updated_at, platform_id=platform["merchant_id"]),
    )


def disconnect(platform: Mapping[str, Any], account_id: str, updated_at: datetime) -> dict[str, Any]:
    """The platform's record without `account_id` (a seller rejected or leaving): new
    splits to it are refused; payments already split keep paying it."""
    return _with(platform, updated_at, connected=[m for m in platform.get("connected", ()) if m != account_id])


def fold(registry: Registry, merchant_id: str, record: Mapping[str, Any] | None) -> Registry:
    """The registry after one message of the topic (None: a tombstone). A new dict.
    Compaction keeps the latest per key, so the fold is last-writer-wins by offset."""
    out = dict(registry)
    if record is None:
        out.pop(merchant_id, None)
    else:
        assert record["merchant_id"] == merchant_id, "the key is the merchant_id"
        out[merchant_id] = dict(record)
    return out


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


def admit(
    cmd: Mapping[str, Any],
    merchant: Mapping[str, Any] | None,
    *,
    require_registration: bool = False,
    pending_allowed: bool = False,
) -> Refusal | None:
    """None if the registry lets this command through, else why not. Only creates
    are checked (see the module doc). `pending_allowed`: a pending merchant passes the
    KYC check (its daily cap is the keys stage's, streams/domain/kyc_limits.py); the rest still apply."""
    if cmd["kind"] != "create":
        return None
    if merchant is None:
        if require_registration:
            return Refusal("merchant_unknown", "the merchant is not registered")
        if cmd.get("splits"):  # whom it may pay is the registry's to say
            return Refusal("merchant_unknown", "a split payment's platform must be registered")
        return None
    if merchant["kyc_status"] != "verified" and not (pending_allowed and merchant["kyc_status"] == "pending"):
        return Refusal("merchant_not_verified", f"the merchant's KYC status is {merchant['kyc_status']}")
    if merchant["currencies"] and cmd["currency"] not in merchant["currencies"]:
        return Refusal("currency_not_allowed", f"the merchant may charge in {', '.join(merchant['currencies'])}")
    method = method_of(cmd)
    if merchant["methods"] and method not in merchant["methods"]:
        return Refusal("method_not_allowed", f"{method}: the merchant accepts {', '.join(merchant['methods'])}")
    return _split_refusal(cmd, merchant)


def _split_refusal(cmd: Mapping[str, Any], merchant: Mapping[str, Any]) -> Refusal | None:
    connected = set(merchant.get("connected") or ())
    for split in cmd.get("splits") or ():
        if split["merchant_id"] not in connected:
            return Refusal(
                "split_account_not_connected",
                f"{split['merchant_id'][:64]} is not a verified connected account of {merchant['merchant_id']}",
            )
    return None
