"""Response models of the Stripe routes, for the OpenAPI document (the routes build
their bodies in streams/api/stripe_objects.py; these describe them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from streams.api.bodies import Card


class PaymentError(BaseModel):
    type: str
    code: str
    decline_code: str | None
    message: str
    param: str | None


class PaystreamDetails(BaseModel):
    """Ours, not Stripe's: the payment behind the intent."""

    payment_id: str
    status: str | None
    refunded_minor: int
    card: Card | None


class PaymentIntent(BaseModel):
    id: str
    object: Literal["payment_intent"]
    amount: int | None
    amount_capturable: int
    amount_received: int
    capture_method: str | None
    confirmation_method: str
    currency: str | None
    created: int | None
    description: str | None
    livemode: bool
    metadata: dict[str, str]
    status: str
    last_payment_error: PaymentError | None
    next_action: dict[str, object] | None
    cancellation_reason: str | None
    payment_method: str | None
    payment_method_types: list[str]
    customer: str | None
    setup_future_usage: str | None
    transfer_data: dict[str, str] | None
    application_fee_amount: int | None
    latest_charge: str | None
    client_secret: str | None
    paystream: PaystreamDetails


class PaymentIntentList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[PaymentIntent]


class EvidenceDetails(BaseModel):
    due_by: int | None
    has_evidence: bool
    past_due: bool
    submission_count: int


class Dispute(BaseModel):
    id: str
    object: Literal["dispute"]
    amount: int
    currency: str | None
    payment_intent: str
    charge: str | None
    reason: str
    status: str
    created: int | None
    livemode: bool
    metadata: dict[str, str]
    is_charge_refundable: bool
    evidence_details: EvidenceDetails


class DisputeList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[Dispute]


class Payout(BaseModel):
    id: str
    object: Literal["payout"]
    amount: int
    currency: str
    arrival_date: int | None
    created: int | None
    status: str
    failure_code: str | None
    failure_message: str | None
    method: str
    type: str
    automatic: bool
    livemode: bool
    metadata: dict[str, str]


class PayoutList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[Payout]


class BalanceAmount(BaseModel):
    amount: int
    currency: str


class Balance(BaseModel):
    object: Literal["balance"]
    livemode: bool
    available: list[BalanceAmount]
    pending: list[BalanceAmount]


class Refund(BaseModel):
    id: str
    object: Literal["refund"]
    amount: int | None
    currency: str | None
    payment_intent: str
    charge: str | None
    created: int
    metadata: dict[str, str]
    reason: str | None
    status: str


class RefundList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[Refund]


class InvoiceSettings(BaseModel):
    default_payment_method: str | None
    custom_fields: None
    footer: None
    rendering_options: None


class Customer(BaseModel):
    id: str
    object: Literal["customer"]
    created: int
    email: str | None
    name: str | None
    description: str | None
    phone: str | None
    metadata: dict[str, str]
    livemode: bool
    invoice_settings: InvoiceSettings


class CustomerList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[Customer]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: Literal[True]


class BillingDetails(BaseModel):
    address: None
    email: str | None
    name: str | None
    phone: str | None


class SavedCard(BaseModel):
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    country: str | None
    funding: str | None
    wallet: None


class PaymentMethod(BaseModel):
    id: str
    object: Literal["payment_method"]
    type: Literal["card"]
    created: int
    customer: str | None
    livemode: bool
    metadata: dict[str, str]
    billing_details: BillingDetails
    card: SavedCard


class PaymentMethodList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[PaymentMethod]


class BalanceTransaction(BaseModel):
    id: str
    object: Literal["balance_transaction"]
    amount: int
    fee: int
    fee_details: list[dict[str, object]]
    net: int
    currency: str
    type: str
    reporting_category: str
    status: str
    source: str | None
    created: int | None
    available_on: int | None
    description: str | None
    exchange_rate: None
    paystream: dict[str, str]


class BalanceTransactionList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[BalanceTransaction]


class EventData(BaseModel):
    object: dict[str, object]


class EventRequest(BaseModel):
    id: str | None
    idempotency_key: str | None


class EventPaystream(BaseModel):
    """Ours, not Stripe's: the pipeline's event behind the Event."""

    type: str
    payment_id: str
    version: int | None


class Event(BaseModel):
    id: str
    object: Literal["event"]
    api_version: str | None
    created: int | None
    livemode: bool
    pending_webhooks: int
    request: EventRequest
    type: str
    data: EventData
    paystream: EventPaystream


class EventList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[Event]


class WebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"]
    url: str
    enabled_events: list[str]
    status: str
    api_version: str | None
    application: str | None
    description: str | None
    livemode: bool
    metadata: dict[str, str]
    created: int | None
    secret: str | None = None


class WebhookEndpointList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[WebhookEndpoint]


class AccountRequirements(BaseModel):
    currently_due: list[str]
    eventually_due: list[str]
    past_due: list[str]
    pending_verification: list[str]
    disabled_reason: str | None
    current_deadline: int | None
    errors: list[dict[str, str]]


class AccountPaystream(BaseModel):
    """Ours, not Stripe's: the registry's KYC status and the case's state."""

    kyc_status: str
    kyc_state: str | None


class Account(BaseModel):
    id: str
    object: Literal["account"]
    type: str
    business_type: str
    country: str | None
    default_currency: str
    email: str | None
    created: int | None
    charges_enabled: bool
    payouts_enabled: bool
    details_submitted: bool
    capabilities: dict[str, str]
    requirements: AccountRequirements
    metadata: dict[str, str]
    livemode: bool
    paystream: AccountPaystream


class AccountList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[Account]


class SplitPaystream(BaseModel):
    """Ours, not Stripe's: the destination charge's intent and the ledger entry."""

    payment_intent: str | None
    entry_id: str


class TransferReversal(BaseModel):
    id: str
    object: Literal["transfer_reversal"]
    amount: int
    currency: str
    created: int | None
    metadata: dict[str, str]
    balance_transaction: str | None
    transfer: str
    destination_payment_refund: str | None
    source_refund: str | None


class TransferReversalList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[TransferReversal]


class FeeRefund(BaseModel):
    id: str
    object: Literal["fee_refund"]
    amount: int
    currency: str
    created: int | None
    metadata: dict[str, str]
    balance_transaction: str | None
    fee: str


class FeeRefundList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[FeeRefund]


class Transfer(BaseModel):
    id: str
    object: Literal["transfer"]
    amount: int
    amount_reversed: int
    currency: str
    destination: str
    destination_payment: str | None
    source_transaction: str | None
    source_type: str
    created: int | None
    description: str | None
    livemode: bool
    metadata: dict[str, str]
    reversed: bool
    reversals: TransferReversalList
    transfer_group: str | None
    balance_transaction: str | None
    paystream: SplitPaystream


class TransferList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[Transfer]


class ApplicationFee(BaseModel):
    id: str
    object: Literal["application_fee"]
    account: str
    amount: int
    amount_refunded: int
    refunded: bool
    application: str | None
    balance_transaction: str | None
    charge: str | None
    originating_transaction: str | None
    currency: str
    created: int | None
    livemode: bool
    refunds: FeeRefundList
    paystream: SplitPaystream


class ApplicationFeeList(BaseModel):
    object: Literal["list"]
    url: str
    has_more: bool
    data: list[ApplicationFee]
