"""Request and response bodies. Strict: no coercion ("100" is not an amount), no
unknown fields; the bounds here are shape checks, the pipeline's ingest remains the
judge of business rules (Luhn, ISO 4217, the amount cap)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from streams.stages.ingest import EVIDENCE_MAX_CHARS

AVRO_LONG_MAX = 2**63 - 1
METADATA_MAX_KEYS = 50


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CardIn(_Strict):
    number: str = Field(min_length=12, max_length=23, description="PAN; spaces or dashes allowed. Never echoed.")
    exp_month: int = Field(ge=1, le=12)
    exp_year: int = Field(ge=2000, le=2100)
    cvc: str | None = Field(None, pattern=r"^[0-9]{3,4}$")


class CreatePayment(_Strict):
    amount_minor: int = Field(ge=1, le=AVRO_LONG_MAX, description="Integer minor units of `currency`.")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 alpha code.")
    capture_method: Literal["automatic", "manual"] = "automatic"
    card: CardIn
    metadata: dict[str, str] = Field(default_factory=dict, max_length=METADATA_MAX_KEYS)


class AmountIn(_Strict):
    """Capture or refund; without amount_minor, all that is left."""

    amount_minor: int | None = Field(None, ge=1, le=AVRO_LONG_MAX)


class Empty(_Strict):
    pass


class ThreeDsIn(_Strict):
    """The cardholder's EMV 3-D Secure 2.x result, as the merchant's 3DS server got it."""

    trans_status: Literal["Y", "A", "N", "U", "R"] = Field(
        description="transStatus: Y authenticated, A attempted, N not authenticated, U unavailable, R rejected.")
    eci: str | None = Field(None, pattern=r"^[0-9]{2}$")
    ds_trans_id: str | None = Field(None, min_length=36, max_length=36)
    authentication_value: str | None = Field(
        None, min_length=1, max_length=1024,
        description="The ACS's signed authentication value (CAVV) for a Y or A: liability shifts only with one that verifies.")


class ConfirmIn(_Strict):
    """Completes a payment the risk stage left in `requires_action` (a 3DS step-up)."""

    three_ds: ThreeDsIn


class EvidenceIn(_Strict):
    """The merchant's answer to an open dispute (card numbers in it are masked at ingest)."""

    evidence: str = Field(min_length=1, max_length=EVIDENCE_MAX_CHARS)


class Card(BaseModel):
    bin: str | None
    last4: str


class Payment(BaseModel):
    id: str
    object: Literal["payment"]
    merchant_id: str
    status: str | None
    currency: str | None
    authorized_minor: int
    captured_minor: int
    refunded_minor: int
    card: Card | None
    next_action: dict[str, object] | None = Field(
        None, description="requires_action: how to authenticate the cardholder (3-D Secure) and confirm.")


class PaymentList(BaseModel):
    """A page of the caller's payments, by payment id; pass the last id as
    `starting_after` for the next page while `has_more`."""

    object: Literal["list"]
    url: str
    has_more: bool
    data: list[Payment]


class Accepted(BaseModel):
    """The outcome was not committed within the timeout: poll `status_url`."""

    object: Literal["payment_operation"]
    payment_id: str
    status: Literal["processing"]
    status_url: str


class ErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    param: str | None
    payment_id: str | None = None
    decline_code: str | None = None  # card errors: why the issuer declined (Stripe's)


class ErrorBody(BaseModel):
    error: ErrorDetail
