"""Stripe Connect's marketplace objects over the merchant registry and the ledger:
Accounts (a platform's connected sellers: merchants whose record names the platform,
`paystream merchants connect`), and the Transfers and ApplicationFees of its
destination charges (a PaymentIntent with `transfer_data[destination]` is a split
payment, streams/domain/splits.py), read from the ledger's split capture lines.
docs/api.md says what differs from Stripe and why."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from streams.api import stripe_params as params
from streams.api.errors import ApiError
from streams.api.stripe_bodies import (
    Account,
    AccountList,
    ApplicationFee,
    ApplicationFeeList,
    FeeRefundList,
    Transfer,
    TransferList,
    TransferReversalList,
)
from streams.api.stripe_customers import no_such, page
from streams.api.stripe_objects import account_object, application_fee_object, take_object, transfer_object
from streams.api.stripe_routes import (
    _AUTH,
    _ERRORS,
    _EXPAND,
    _HEADERS,
    _LIST_PARAMS,
    StripeDeps,
    _form,
    _form_body,
    _idempotency_key,
    _query,
)
from streams.client.kyc import open_connected_account
from streams.domain import kyc, merchants
from streams.domain.sanctions import SanctionsList

# What a retry must repeat: the KYC application the account was opened with.
_APPLIED = ("legal_name", "country", "registration_number", "owners", "documents")
TRANSFER_ID = re.compile(r"^tr_[0-9a-f]{32}[0-9]{2}$")
FEE_ID = re.compile(r"^fee_[0-9a-f]{32}$")
# A reversal is a refund entry's line (a part of it, `_<n>`, where it spans two transfers);
# a fee refund is a refund entry (stripe_objects.split_returns).
REVERSAL_ID = re.compile(r"^trr_[0-9a-f]{32}[0-9]{2}(_[0-9]{1,2})?$")
FEE_REFUND_ID = re.compile(r"^fr_[0-9a-f]{32}(_[0-9]{1,2})?$")
_ACCOUNT_SCHEMA = {
    "type": "object",
    "required": ["country"],
    "properties": {
        "type": {"type": "string", "enum": sorted(params.ACCOUNT_TYPES)},
        "country": {"type": "string"},
        "business_type": {"type": "string", "enum": sorted(params.BUSINESS_TYPES)},
        "company": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "registration_number": {"type": "string"},
                "tax_id": {"type": "string"},
                "owners": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Ours: the beneficial owners' names.",
                },
            },
        },
        "individual": {
            "type": "object",
            "properties": {
                "first_name": {"type": "string"},
                "last_name": {"type": "string"},
                "id_number": {"type": "string"},
            },
        },
        "documents": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Ours: kind (registration_certificate, owner_id, proof_of_address, bank_statement) "
            "-> the document store's reference.",
        },
        "default_currency": {"type": "string"},
        "capabilities": {"type": "object"},
        "tos_acceptance": {"type": "object"},
        "expand": _EXPAND,
    },
}


class Registry(Protocol):
    """The merchant registry's IO (streams/client/kyc.py KycDesk): blocking calls."""

    def registry(self) -> dict[str, dict[str, Any]]: ...
    def write(self, record: dict[str, Any]) -> None: ...
    def sanctions(self) -> SanctionsList: ...


def account_id(platform_id: str, idempotency_key: str) -> str:
    """One account per (platform, Idempotency-Key): a retried create finds it."""
    return "acct_" + hashlib.sha256(f"account\x1f{platform_id}\x1f{idempotency_key}".encode()).hexdigest()[:24]


def accounts_of(registry: dict[str, dict[str, Any]], platform_id: str) -> dict[str, tuple[dict[str, Any], bool]]:
    """The platform's accounts (those naming it, and those it lists) -> (record, connected)."""
    connected = set((registry.get(platform_id) or {}).get("connected") or ())
    return {
        m: (r, m in connected)
        for m, r in registry.items()
        if m != platform_id and (r.get("platform_id") == platform_id or m in connected)
    }


def install(app: FastAPI, deps: StripeDeps, desk: Registry | None) -> None:
    """Add /v1/accounts, /v1/transfers and /v1/application_fees to `app`. `desk` is the
    registry (None: the account routes answer 503). `deps.now` stamps a new account's
    records (the API is where it happens: its event time)."""
    writing = asyncio.Lock()  # one read-modify-write of the platform's record at a time in this process

    def registry_desk() -> Registry:
        if desk is None:
            raise ApiError(
                503,
                "api_error",
                "registry_unavailable",
                "this API serves no merchant registry",
                headers=(("Retry-After", "60"),),
            )
        return desk

    async def read(d: Registry) -> dict[str, dict[str, Any]]:
        try:
            return await asyncio.to_thread(d.registry)
        except Exception as e:  # the broker is away: its message names no secret, the type is enough
            raise ApiError(
                503,
                "api_error",
                "registry_unavailable",
                f"the merchant registry: {type(e).__name__}",
                headers=(("Retry-After", "5"),),
            ) from None

    async def transfer_row(merchant: str, transfer: str) -> dict[str, Any]:
        """The merchant's transfer by id, or Stripe's resource_missing."""
        rows = (
            await deps.read_model(lambda r: r.transfers(merchant, 1, transfer_id=transfer))
            if TRANSFER_ID.match(transfer)
            else []
        )
        if not rows:
            raise no_such("transfer")
        return rows[0]

    async def fee_row(merchant: str, fee: str) -> dict[str, Any]:
        """The merchant's application fee by id, or Stripe's resource_missing."""
        rows = await deps.read_model(lambda r: r.application_fees(merchant, 1, fee_id=fee)) if FEE_ID.match(fee) else []
        if not rows:
            raise no_such("application fee")
        return rows[0]

    @app.post(
        "/v1/accounts",
        response_model=Account,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Open a connected account for a seller: its KYC checks run, verified it is connected (Stripe)",
        tags=["stripe"],
        openapi_extra=_form_body(_ACCOUNT_SCHEMA) | {"parameters": _HEADERS},
    )
    async def create_account(request: Request) -> JSONResponse:
        platform, key = request.state.merchant_id, _idempotency_key(request)
        p = params.create_account(await _form(request))
        d = registry_desk()
        acct = account_id(platform, key)
        try:
            application = kyc.application(p.legal_name, p.country, p.registration_number, p.owners, p.documents)
        except kyc.KycError as e:
            raise params.invalid("documents" if "document" in e.detail else "company", e.detail) from None
        async with writing:
            registry = await read(d)
            mine = accounts_of(registry, platform)
            if acct in mine:  # a retry: the account as it is now, nothing checked again
                record, connected = mine[acct]
                case = record.get("kyc") or {}
                if any(case.get(k) != application[k] for k in _APPLIED):
                    raise ApiError(
                        400,
                        "idempotency_error",
                        "idempotency_key_reused",
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        "first used with",
                    )
                return JSONResponse(account_object(record, connected))
            try:
                sanctions = await asyncio.to_thread(d.sanctions)
                records = open_connected_account(
                    registry, platform, acct, application, deps.now(), sanctions, p.default_currency
                )
            except (merchants.MerchantError, kyc.KycError) as e:
                raise ApiError(
                    400, "invalid_request_error", "account_invalid", str(getattr(e, "detail", e))[:300]
                ) from None
            try:
                for record in records:  # the account first: a platform never lists an account not written
                    await asyncio.to_thread(d.write, record)
            except Exception as e:
                raise ApiError(
                    503,
                    "api_error",
                    "registry_unavailable",
                    f"the merchant registry: {type(e).__name__}",
                    headers=(("Retry-After", "5"),),
                ) from None
        return JSONResponse(account_object(records[0], len(records) == 2))

    @app.get(
        "/v1/accounts",
        response_model=AccountList,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Your connected accounts, by id (Stripe cursors)",
        tags=["stripe"],
        openapi_extra={"parameters": _LIST_PARAMS},
    )
    async def list_accounts(request: Request) -> JSONResponse:
        p = params.list_params(_query(request), params.ACCOUNT_ID, "Account")
        mine = accounts_of(await read(registry_desk()), request.state.merchant_id)
        docs = [{"id": m, "record": mine[m]} for m in sorted(mine)]
        return page(docs, p, "/v1/accounts", lambda doc: account_object(*doc["record"]))

    @app.get(
        "/v1/accounts/{account}",
        response_model=Account,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Retrieve one of your connected accounts (Stripe)",
        tags=["stripe"],
    )
    async def retrieve_account(account: str, request: Request) -> JSONResponse:
        params.expand_only(_query(request))
        found = accounts_of(await read(registry_desk()), request.state.merchant_id).get(account)
        if found is None:  # unknown and another platform's: the same answer
            raise no_such("account")
        return JSONResponse(account_object(*found))

    @app.get(
        "/v1/transfers",
        response_model=TransferList,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Your transfers to connected accounts, from the ledger, by id (Stripe cursors)",
        tags=["stripe"],
        openapi_extra={"parameters": _LIST_PARAMS},
    )
    async def list_transfers(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        p = params.list_params(_query(request), TRANSFER_ID, "Transfer")
        rows = await deps.read_model(lambda r: r.transfers(merchant, p.limit + 1, p.starting_after, p.ending_before))
        return JSONResponse(params.list_page(rows, p, "/v1/transfers", transfer_object))

    @app.get(
        "/v1/transfers/{transfer}",
        response_model=Transfer,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Retrieve a transfer (Stripe)",
        tags=["stripe"],
    )
    async def retrieve_transfer(transfer: str, request: Request) -> JSONResponse:
        params.expand_only(_query(request))
        return JSONResponse(transfer_object(await transfer_row(request.state.merchant_id, transfer)))

    @app.get(
        "/v1/transfers/{transfer}/reversals",
        response_model=TransferReversalList,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="A transfer's reversals: the parts its payment's refunds took back (Stripe cursors)",
        tags=["stripe"],
        openapi_extra={"parameters": _LIST_PARAMS},
    )
    async def list_transfer_reversals(transfer: str, request: Request) -> JSONResponse:
        p = params.list_params(_query(request), REVERSAL_ID, "TransferReversal")
        row = await transfer_row(request.state.merchant_id, transfer)
        return _takes_page(row, "reversals", p, f"/v1/transfers/{transfer}/reversals", "transfer_reversal", transfer)

    @app.get(
        "/v1/application_fees",
        response_model=ApplicationFeeList,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Your application fees on destination charges, from the ledger, by id (Stripe cursors)",
        tags=["stripe"],
        openapi_extra={"parameters": _LIST_PARAMS},
    )
    async def list_application_fees(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        p = params.list_params(_query(request), FEE_ID, "ApplicationFee")
        rows = await deps.read_model(
            lambda r: r.application_fees(merchant, p.limit + 1, p.starting_after, p.ending_before)
        )
        return JSONResponse(params.list_page(rows, p, "/v1/application_fees", application_fee_object))

    @app.get(
        "/v1/application_fees/{fee}",
        response_model=ApplicationFee,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Retrieve an application fee (Stripe)",
        tags=["stripe"],
    )
    async def retrieve_application_fee(fee: str, request: Request) -> JSONResponse:
        params.expand_only(_query(request))
        return JSONResponse(application_fee_object(await fee_row(request.state.merchant_id, fee)))

    @app.get(
        "/v1/application_fees/{fee}/refunds",
        response_model=FeeRefundList,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="An application fee's refunds: the parts its payment's refunds gave back (Stripe cursors)",
        tags=["stripe"],
        openapi_extra={"parameters": _LIST_PARAMS},
    )
    async def list_fee_refunds(fee: str, request: Request) -> JSONResponse:
        p = params.list_params(_query(request), FEE_REFUND_ID, "FeeRefund")
        row = await fee_row(request.state.merchant_id, fee)
        return _takes_page(row, "refunds", p, f"/v1/application_fees/{fee}/refunds", "fee_refund", fee)


def _takes_page(
    row: dict[str, Any], field: str, p: params.ListParams, url: str, kind: str, parent: str
) -> JSONResponse:
    """A page of what a payment's refunds took back from `row` (a transfer's reversals,
    an application fee's refunds), by id."""
    takes = sorted(({"id": t.id, "take": t} for t in row.get(field) or []), key=lambda d: d["id"])
    return page(takes, p, url, lambda d: take_object(d["take"], kind, parent, row["currency"]))
