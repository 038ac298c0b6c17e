"""Cardholder authentication: 3-D Secure 2 with a simulated issuer, and wallet
cryptograms. Pure: keys, signers and time come in as values.

Three parts (docs/payments.md, "3-D Secure 2"; docs/decisions.md has why Ed25519):

- the directory server's decision (`ds_decide`): frictionless or challenge, from the
  risk data of the authentication request, by fixed rules in a fixed order;
- the access control server's challenge (`challenge_answer`): a one-time code, a few tries;
- signed authentication values: the ACS signs an `AuthenticationValue` (our CAVV) with
  the issuer's Ed25519 key (key kind `acs-signing`), the wallet provider signs a
  `WalletCryptogram` with its own (`wallet-signing`); the pipeline checks either with
  the public keys only (`verify_cavv`, `verify_cryptogram`) against the payment's own
  facts, and a refusal carries a stable reason code.

A token is `<prefix>.<claims>.<signature>`: the claims as compact JSON, base64url, and
an Ed25519 signature over a per-kind domain tag and the claims segment exactly as sent
(nothing is re-serialised before verifying, so no canonical-form ambiguity). The claims
name the key id, so old keys keep verifying after a rotation.

Binding a token to the payment id makes a replay visible without state: a value signed
for one payment never verifies for another (`*_replayed`), and the one payment it names
takes one confirm (the state machine leaves requires_action on the first).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

from connectors.vault.keys import ACS_SIGNING, WALLET_SIGNING, verify_signature
from schemas.money import CURRENCY_EXPONENTS

AV_PREFIX = "av1"
CRYPTOGRAM_PREFIX = "wc1"
# Domain separation: an event signature or a wallet cryptogram never verifies as a CAVV.
_DOMAIN = {AV_PREFIX: b"paystream-3ds-av-v1\x1f", CRYPTOGRAM_PREFIX: b"paystream-wallet-cryptogram-v1\x1f"}
# The one key kind each token may name: an event-signing key never vouches for a payment.
_KIND = {AV_PREFIX: ACS_SIGNING, CRYPTOGRAM_PREFIX: WALLET_SIGNING}
TOKEN_MAX_CHARS = 1024  # both kinds are ~400 chars; the bound keeps a refusal cheap
_SIGNATURE_BYTES = 64

# An authentication value is good for the authorization that follows it, not for days.
VALIDITY_MS = 60 * 60 * 1000
# The ACS and the API stamp times from different clocks: this much ahead is tolerated.
CLOCK_SKEW_MS = 2 * 60 * 1000

# EMV 3DS statuses the ACS signs (authenticated, attempted) and their ECIs (Visa's 05/06).
SIGNED_STATUSES = frozenset({"Y", "A"})
ECI_OF = {"Y": "05", "A": "06"}

# --- the directory server's decision (docs/payments.md lists the rules in this order) ---

CHALLENGE_MANDATED = "challenge_mandated"  # the requestor asked for a challenge (EMV challenge indicator 04)
HIGH_RISK = "high_risk_score"
HIGH_AMOUNT = "amount_over_frictionless_limit"
UNKNOWN_DEVICE = "unknown_device"
NEW_ACCOUNT = "new_account"
LOW_RISK = "low_risk"
HIGH_RISK_PPM = 500_000  # fraud score (ppm) from which the issuer wants the cardholder present
FRICTIONLESS_MAX_MAJOR = 250  # in major units of the currency (its ISO 4217 exponent)
MIN_ACCOUNT_AGE_DAYS = 30


@dataclass(frozen=True)
class RiskData:
    """What the directory server decides on: the authentication request's risk data."""

    amount_minor: int
    currency: str
    # The fraud score (ppm) the requestor sends with the request (EMV 3RI risk data);
    # None: none sent.
    fraud_score_ppm: int | None = None
    # The issuer's own history: this device passed a challenge for this card before.
    device_known: bool = False
    # The requestor's cardholder-account age in days (None: a guest checkout).
    account_age_days: int | None = None
    challenge_mandated: bool = False


@dataclass(frozen=True)
class Flow:
    challenge: bool
    reason: str  # the first rule that decided


def frictionless_limit_minor(currency: str) -> int:
    exponent = int(CURRENCY_EXPONENTS.get(currency, 2))
    return int(FRICTIONLESS_MAX_MAJOR * 10**exponent)


def ds_decide(risk: RiskData) -> Flow:
    """Frictionless or challenge, by the first rule that asks for a challenge."""
    if risk.challenge_mandated:
        return Flow(True, CHALLENGE_MANDATED)
    if risk.fraud_score_ppm is not None and risk.fraud_score_ppm >= HIGH_RISK_PPM:
        return Flow(True, HIGH_RISK)
    if risk.amount_minor > frictionless_limit_minor(risk.currency):
        return Flow(True, HIGH_AMOUNT)
    if not risk.device_known:
        return Flow(True, UNKNOWN_DEVICE)
    if risk.account_age_days is None or risk.account_age_days < MIN_ACCOUNT_AGE_DAYS:
        return Flow(True, NEW_ACCOUNT)
    return Flow(False, LOW_RISK)


# --- the ACS's challenge ---

MAX_OTP_ATTEMPTS = 3


def challenge_answer(expected_otp: str, otp: str, failed_before: int) -> str:
    """ "Y" on the right code; "retry" while tries remain; "N" (not authenticated) after
    MAX_OTP_ATTEMPTS wrong ones. Compared in constant time."""
    assert 0 <= failed_before < MAX_OTP_ATTEMPTS, failed_before
    if hmac.compare_digest(expected_otp.encode(), otp.encode()):
        return "Y"
    return "N" if failed_before + 1 >= MAX_OTP_ATTEMPTS else "retry"


# --- signed tokens ---


class Signer(Protocol):
    """connectors.vault.keys.ActiveSigner of a kind: the key id, then the signature."""

    key_id: str

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


@dataclass(frozen=True)
class AuthenticationValue:
    """Our CAVV's claims: who authenticated what, when, under which issuer key."""

    key_id: str
    payment_id: str
    merchant_id: str
    amount_minor: int
    currency: str
    trans_status: str
    eci: str
    ds_trans_id: str
    authenticated_at_ms: int


@dataclass(frozen=True)
class WalletCryptogram:
    """A wallet payment's cryptogram claims: the device token (by its SHA-256, the
    token itself stays on the command) and the payment it pays for."""

    key_id: str
    provider: str
    token_sha256: str
    payment_id: str
    merchant_id: str
    amount_minor: int
    currency: str
    created_at_ms: int


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _issue(prefix: str, claims: dict[str, Any], signer: Signer) -> str:
    assert claims["key_id"] == signer.key_id
    segment = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{prefix}.{segment}.{_b64(signer.sign(_DOMAIN[prefix] + segment.encode()))}"


def issue_cavv(av: AuthenticationValue, signer: Signer) -> str:
    assert av.trans_status in SIGNED_STATUSES, av.trans_status
    return _issue(AV_PREFIX, asdict(av), signer)


def issue_cryptogram(c: WalletCryptogram, signer: Signer) -> str:
    return _issue(CRYPTOGRAM_PREFIX, asdict(c), signer)


_Claims = TypeVar("_Claims", "AuthenticationValue", "WalletCryptogram")


def is_signed_token(text: str, prefix: str) -> bool:
    return text.startswith(prefix + ".")


def _open(token: str, prefix: str, cls: type[_Claims], keys: Mapping[str, bytes], what: str) -> _Claims | Refusal:
    """The verified claims as `cls`, or a Refusal: malformed, unknown key, bad signature."""
    parts = token.split(".") if len(token) <= TOKEN_MAX_CHARS else []
    try:
        if len(parts) != 3 or parts[0] != prefix:
            raise ValueError("shape")
        signature = _unb64(parts[2])
        claims = json.loads(_unb64(parts[1]))
        value = cls(**claims)
        for f, v in asdict(value).items():  # JSON types as the dataclass says, no bools for ints
            want = int if f.endswith(("_minor", "_ms")) else str
            if type(v) is not want:
                raise ValueError(f)
    except (ValueError, TypeError):  # binascii.Error and JSONDecodeError are ValueErrors
        return Refusal(f"{what}_malformed", f"the {what} is not a {prefix} token")
    public = keys.get(value.key_id) if value.key_id.startswith(_KIND[prefix] + "-v") else None
    if public is None:
        return Refusal(f"{what}_unknown_key", f"the {what} names key {value.key_id[:40]!r}, which is not trusted here")
    if len(signature) != _SIGNATURE_BYTES or not verify_signature(
        public, _DOMAIN[prefix] + parts[1].encode(), signature
    ):
        return Refusal(f"{what}_invalid", f"the {what}'s signature does not verify: forged or altered")
    return value


def _bound(
    what: str,
    claimed: Any,
    payment_id: str,
    merchant_id: str,
    amount_minor: int,
    currency: str,
    at_ms: int,
    signed_at_ms: int,
) -> Refusal | None:
    """The checks both kinds share: the payment, merchant, amount and time it is for."""
    if claimed.payment_id != payment_id:
        return Refusal(f"{what}_replayed", f"the {what} was issued for another payment")
    if claimed.merchant_id != merchant_id:
        return Refusal(f"{what}_merchant_mismatch", f"the {what} was issued for another merchant")
    if (claimed.amount_minor, claimed.currency) != (amount_minor, currency):
        return Refusal(f"{what}_amount_mismatch", f"the {what} was issued for another amount or currency")
    if signed_at_ms > at_ms + CLOCK_SKEW_MS:
        return Refusal(f"{what}_not_yet_valid", f"the {what} is dated after the command")
    if signed_at_ms < at_ms - VALIDITY_MS:
        return Refusal(f"{what}_expired", f"the {what} is older than {VALIDITY_MS // 60_000} minutes")
    return None


def verify_cavv(
    token: str,
    keys: Mapping[str, bytes],
    *,
    payment_id: str,
    merchant_id: str,
    amount_minor: int,
    currency: str,
    trans_status: str,
    eci: str | None,
    ds_trans_id: str | None,
    at_ms: int,
) -> AuthenticationValue | Refusal:
    """The CAVV of a confirm, checked against the issuer's public keys (`acs-signing`),
    the payment it confirms and the result the confirm reports; `at_ms` is the confirm's
    event time."""
    av = _open(token, AV_PREFIX, AuthenticationValue, keys, "cavv")
    if isinstance(av, Refusal):
        return av
    refused = _bound("cavv", av, payment_id, merchant_id, amount_minor, currency, at_ms, av.authenticated_at_ms)
    if refused is not None:
        return refused
    # The confirm's own fields may be omitted (the value carries them), never contradict it.
    if trans_status != av.trans_status or eci not in (None, av.eci) or ds_trans_id not in (None, av.ds_trans_id):
        return Refusal("cavv_mismatch", "trans_status, eci or ds_trans_id differ from what the cavv says")
    return av


def verify_cryptogram(
    token: str,
    keys: Mapping[str, bytes],
    *,
    provider: str,
    wallet_token: str,
    payment_id: str,
    merchant_id: str,
    amount_minor: int,
    currency: str,
    at_ms: int,
) -> WalletCryptogram | Refusal:
    """A wallet create's cryptogram, checked against the wallet provider's public keys
    (`wallet-signing`) and the create itself; `at_ms` is the create's event time."""
    c = _open(token, CRYPTOGRAM_PREFIX, WalletCryptogram, keys, "cryptogram")
    if isinstance(c, Refusal):
        return c
    refused = _bound("cryptogram", c, payment_id, merchant_id, amount_minor, currency, at_ms, c.created_at_ms)
    if refused is not None:
        return refused
    if c.provider != provider or not hmac.compare_digest(c.token_sha256, token_digest(wallet_token)):
        return Refusal("cryptogram_mismatch", "the cryptogram was issued for another wallet or device token")
    return c
