"""The KYC workflow's steps on the registry: each reads a merchant's record, moves its
case (streams/domain/kyc.py) and returns the record to write to the compacted `merchants`
topic. `KycDesk` does the IO for the CLI (`paystream merchants apply|kyc-review|
kyc-reverify`), the API (POST /v1/kyc/application, streams/api/kyc_routes.py) and the
scheduler's daily `kyc_reverify` job. Times are the event's: the request's, the
operator's command's, the scheduler's day."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from connectors.kafka.clients import command_producer
from schemas.codec import Codec
from streams.client.merchants import read_registry
from streams.domain import kyc, merchants
from streams.domain.sanctions import SanctionsList
from streams.settings import client_config
from streams.topics import topic_names
from streams.worker.feeds import read_list


def application_id(merchant_id: str, at: datetime) -> str:
    return "kyc_" + hashlib.sha256(f"{merchant_id}\x1f{at.isoformat()}".encode()).hexdigest()[:24]


def submit(
    record: Mapping[str, Any] | None, merchant_id: str, app: Mapping[str, Any], at: datetime, sanctions: SanctionsList
) -> dict[str, Any]:
    """Apply and run the provider's checks (simulated: synchronous). A merchant without
    a record is registered pending by its application."""
    base = record if record is not None else merchants.merchant_record(merchant_id, updated_at=at)
    case = kyc.apply(base.get("kyc"), app, application_id(merchant_id, at), at)
    case = kyc.checked(case, kyc.SimulatedKycProvider(sanctions).check(case), at)
    return merchants.with_case(base, case, at)


def open_connected_account(
    registry: Mapping[str, Mapping[str, Any]],
    platform_id: str,
    account_id: str,
    app: Mapping[str, Any],
    at: datetime,
    sanctions: SanctionsList,
    settlement_currency: str = "USD",
) -> list[dict[str, Any]]:
    """A marketplace opens a connected account for a seller (Stripe's POST /v1/accounts):
    registered naming its platform, its KYC application checked as any merchant's; once
    verified it is connected (the platform's record lists it, so its creates may split
    to it). Returns the records to write, the account's first. A check sent to manual
    review leaves it pending and unconnected: a reviewer's approval, then `paystream
    merchants connect`, connects it."""
    platform = registry.get(platform_id)
    if platform is None or platform["kyc_status"] != "verified":
        raise merchants.MerchantError("the platform must be a registered, verified merchant")
    if platform.get("platform_id") is not None:
        raise merchants.MerchantError("a connected account cannot open accounts of its own")
    base = merchants.merchant_record(
        account_id, settlement_currency=settlement_currency, platform_id=platform_id, updated_at=at
    )
    account = submit(base, account_id, app, at, sanctions)
    if account["kyc_status"] != "verified":
        return [account]
    new_platform, account = merchants.connect(platform, account, at)
    return [account, new_platform]


def review(record: Mapping[str, Any], decision: str, reviewer: str, at: datetime, cleared: list[str]) -> dict[str, Any]:
    if record.get("kyc") is None:
        raise kyc.KycError("kyc_not_in_review", "the merchant has not applied")
    return merchants.with_case(record, kyc.reviewed(record["kyc"], decision, reviewer, at, cleared), at)


def operator_status(
    registry: Mapping[str, Mapping[str, Any]], merchant_id: str, kyc_status: str, reviewer: str | None, at: datetime
) -> list[dict[str, Any]]:
    """`paystream merchants verify|reject`: the records to write, the merchant's first
    (none: it is so already). A merchant with a KYC case moves it as the workflow does
    (`kyc.operator_set`: a reviewer's approval or rejection, or a verification withdrawn),
    naming the `reviewer`; one registered without applying (before KYC, or in test mode)
    has only a status, which is set. A merchant no longer verified leaves its platform:
    new splits to it are refused."""
    record = registry.get(merchant_id)
    if record is None:
        raise merchants.MerchantError(f"no merchant {merchant_id!r}; add it first")
    if record.get("kyc") is not None:
        if not reviewer:
            raise kyc.KycError("invalid_review_decision", "the merchant has a KYC case: --reviewer names who decides")
        case = kyc.operator_set(record["kyc"], kyc_status, reviewer, at)
        if case is None:
            return []
        out = [merchants.with_case(record, case, at)]
    elif record["kyc_status"] == kyc_status:
        return []
    else:
        out = [merchants.with_status(record, kyc_status, at)]
    platform = registry.get(record.get("platform_id") or "")
    if kyc_status != "verified" and platform is not None:
        out.append(merchants.disconnect(platform, merchant_id, at))
    return out


def reverify_due(
    registry: Mapping[str, Mapping[str, Any]], at: datetime, sanctions: SanctionsList
) -> list[dict[str, Any]]:
    """Every verified merchant whose verification expired by `at`, checked again."""
    out = []
    for merchant_id in sorted(registry):
        record = registry[merchant_id]
        if kyc.reverify_due(record.get("kyc"), at):
            case = kyc.reverify(record["kyc"], at)
            case = kyc.checked(case, kyc.SimulatedKycProvider(sanctions).check(case), at)
            out.append(merchants.with_case(record, case, at))
    return out


def day_end(day: date) -> datetime:
    """The last millisecond of a UTC day: the scheduler's `kyc_reverify` checks the
    verifications expired by then (the Avro timestamp's precision)."""
    return datetime.combine(day + timedelta(days=1), time(), UTC) - timedelta(milliseconds=1)


def reverify_run(desk: Any, at: datetime) -> list[dict[str, Any]]:
    """Check again, and write, every merchant due by `at` (the CLI's kyc-reverify and
    the scheduler's job). Idempotent: a merchant checked again is verified until a year
    later, or pending, so a second run for the same `at` finds nothing due."""
    records = reverify_due(desk.registry(), at, desk.sanctions())
    for record in records:
        desk.write(record)
    return records


def view(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the merchant (API) and the reviewer (CLI) see of a case: no owners' names."""
    case = record.get("kyc") or {}
    return {
        "merchant_id": record["merchant_id"],
        "kyc_status": record["kyc_status"],
        "application_id": case.get("application_id"),
        "state": case.get("state"),
        "checks": case.get("checks", []),
        "verified_until": case.get("verified_until"),
        "reviewer": case.get("reviewer"),
    }


class KycDesk:
    """The workflow on the real topics: the registry read whole, the record written keyed by merchant."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def registry(self) -> merchants.Registry:

        return read_registry(self.settings)

    def sanctions(self) -> SanctionsList:

        return read_list(self.settings)[0]

    def write(self, record: Mapping[str, Any]) -> None:

        producer = command_producer(client_config(self.settings))
        producer.produce(
            topic_names(self.settings).merchants,
            key=record["merchant_id"].encode(),
            value=Codec("MerchantRecord").encode(dict(record), check=True),
        )
        if producer.flush(30) != 0:
            raise RuntimeError("the broker did not acknowledge the registry record in 30 s")

    def apply(self, merchant_id: str, app: Mapping[str, Any], at: datetime) -> dict[str, Any]:
        record = submit(self.registry().get(merchant_id), merchant_id, app, at, self.sanctions())
        self.write(record)
        return record
