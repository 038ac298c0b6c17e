"""The simulated issuer on the API: a directory server and an access control server
(ACS) for EMV 3-D Secure 2 (docs/api.md, "3-D Secure"; the rules: streams/domain/authentication.py).

- `POST /v1/payments/{id}/three_ds/authenticate` (the merchant, its key): the
  authentication request with its risk data; the directory server answers frictionless
  (a signed authentication value at once) or challenge (a challenge URL on the ACS).
- `POST /acs/v1/challenges/{acs_trans_id}` (the cardholder's browser, no merchant key:
  the id is a 128-bit secret): the one-time code; right, a signed authentication value;
  wrong too often, N.
The merchant then confirms the payment with the result; the pipeline verifies the value.

The ACS keeps pending challenges and the devices that passed one in memory, bounded: it
is a simulation of another party, one per API process (a restart forgets them: the
cardholder authenticates again). Its clock is where the authentication happens, so the
value's time is event time.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import Field

from schemas.times import to_ms
from streams.api.errors import ApiError, not_found
from streams.api.bodies import ErrorBody, _Strict
from streams.domain.authentication import (
    ECI_OF,
    MAX_OTP_ATTEMPTS,
    AuthenticationValue,
    RiskData,
    Signer,
    challenge_answer,
    ds_decide,
    issue_cavv,
    token_digest,
)

# The test one-time code every simulated cardholder receives (as test cards are public).
TEST_OTP = "123456"
MAX_PENDING = 10_000
MAX_KNOWN_DEVICES = 100_000


class AuthenticateIn(_Strict):
    """The authentication request's risk data (EMV 3DS AReq, the parts the DS reads)."""

    amount_minor: int = Field(ge=1, le=2**63 - 1, description="purchaseAmount: the payment's amount, minor units.")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    device_id: str | None = Field(None, min_length=1, max_length=128, description="The cardholder's device (browser/app) id.")
    account_age_days: int | None = Field(None, ge=0, le=100_000, description="Age of the cardholder's account at the merchant; none: guest.")
    fraud_score_ppm: int | None = Field(None, ge=0, le=1_000_000, description="The requestor's fraud score (3RI risk data).")
    challenge_mandated: bool = Field(False, description="threeDSRequestorChallengeInd 04: the requestor wants a challenge.")


class ChallengeIn(_Strict):
    otp: str = Field(min_length=1, max_length=16)


@dataclass
class _Pending:
    av: AuthenticationValue  # what a passed challenge signs (time set then)
    device: str | None
    failed: int = 0


@dataclass
class Acs:
    """The issuer's ACS: signs with `signer` (an ActiveSigner of kind acs-signing)."""

    signer: Signer
    otp: str = TEST_OTP
    pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)
    known_devices: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def authenticate(self, payment_id: str, merchant_id: str, req: AuthenticateIn, now_ms: int) -> dict[str, Any]:
        device = token_digest(f"{merchant_id}\x1f{req.device_id}") if req.device_id else None
        flow = ds_decide(RiskData(req.amount_minor, req.currency, req.fraud_score_ppm, device in self.known_devices,
                                  req.account_age_days, req.challenge_mandated))
        av = AuthenticationValue(self.signer.key_id, payment_id, merchant_id, req.amount_minor, req.currency, "Y",
                                 ECI_OF["Y"], str(uuid.uuid4()), now_ms)
        if not flow.challenge:
            return self._result(av, "frictionless", flow.reason)
        acs_trans_id = secrets.token_urlsafe(16)
        self.pending[acs_trans_id] = _Pending(av, device)
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)
        return {"object": "three_ds_authentication", "flow": "challenge", "reason": flow.reason, "trans_status": "C",
                "ds_trans_id": av.ds_trans_id, "challenge_url": f"/acs/v1/challenges/{acs_trans_id}"}

    def challenge(self, acs_trans_id: str, otp: str, now_ms: int) -> dict[str, Any] | None:
        """None: no such pending challenge (unknown, answered or forgotten)."""
        p = self.pending.get(acs_trans_id)
        if p is None:
            return None
        answer = challenge_answer(self.otp, otp, p.failed)
        if answer == "retry":
            p.failed += 1
            return {"object": "three_ds_authentication", "flow": "challenge", "trans_status": "C",
                    "ds_trans_id": p.av.ds_trans_id, "attempts_left": MAX_OTP_ATTEMPTS - p.failed}
        del self.pending[acs_trans_id]
        if answer == "N":
            return {"object": "three_ds_authentication", "flow": "challenge", "trans_status": "N", "eci": "07",
                    "ds_trans_id": p.av.ds_trans_id, "authentication_value": None}
        if p.device is not None:  # the issuer's history: this device passed for this merchant's cardholder
            self.known_devices[p.device] = None
            while len(self.known_devices) > MAX_KNOWN_DEVICES:
                self.known_devices.popitem(last=False)
        av = AuthenticationValue(**{**p.av.__dict__, "key_id": self.signer.key_id, "authenticated_at_ms": now_ms})
        return self._result(av, "challenge", "challenge_passed")

    def _result(self, av: AuthenticationValue, flow: str, reason: str) -> dict[str, Any]:
        return {"object": "three_ds_authentication", "flow": flow, "reason": reason, "trans_status": av.trans_status,
                "eci": av.eci, "ds_trans_id": av.ds_trans_id, "authentication_value": issue_cavv(av, self.signer)}


_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409)}


def router(acs: Acs, lookup: Callable[[str], Awaitable[dict[str, Any] | None]], now: Callable[[], datetime],
           payment_id_pattern: str) -> APIRouter:
    r = APIRouter(tags=["3-D Secure"])

    def merchant(request: Request, _: Any = Depends(HTTPBearer(auto_error=False))) -> str:
        return request.state.merchant_id

    @r.post("/v1/payments/{payment_id}/three_ds/authenticate", responses=_ERRORS,
            summary="Authenticate the cardholder of a payment in requires_action (3-D Secure 2, simulated issuer)")
    async def authenticate(payment_id: str, body: AuthenticateIn, merchant_id: str = Depends(merchant)) -> JSONResponse:
        if not re.fullmatch(payment_id_pattern, payment_id):
            raise not_found()
        view = await lookup(payment_id)
        if view is None or view.get("merchant_id") != merchant_id:
            raise not_found()
        if view.get("payment_status") != "requires_action":
            raise ApiError(409, "invalid_request_error", "not_awaiting",
                           f"payment is {view.get('payment_status')}; authenticate answers requires_action only")
        known = view.get("amount_minor") if view.get("kind") == "create" else None
        if (known is not None and known != body.amount_minor) or (view.get("currency") not in (None, body.currency)):
            # The pipeline would refuse the value; say so now.
            raise ApiError(400, "invalid_request_error", "amount_mismatch", "amount_minor and currency must be the payment's",
                           "amount_minor")
        return JSONResponse(acs.authenticate(payment_id, merchant_id, body, to_ms(now())))

    @r.post("/acs/v1/challenges/{acs_trans_id}", responses={code: {"model": ErrorBody} for code in (400, 404)},
            summary="Answer a 3-D Secure challenge with the one-time code (the cardholder's browser)")
    async def challenge(acs_trans_id: str, body: ChallengeIn) -> JSONResponse:
        result = acs.challenge(acs_trans_id, body.otp, to_ms(now()))
        if result is None:
            raise ApiError(404, "invalid_request_error", "resource_missing", "no such pending challenge")
        return JSONResponse(result)

    return r
