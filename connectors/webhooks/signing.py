"""Webhook signatures: HMAC-SHA256 over `timestamp.body` with the merchant's secret.

Header: `Paystream-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, one `v1` per
secret signed with: the active webhook key, and while a rotation settles the
previous ones too (`key_ids`), so a merchant can switch secrets without a gap. The
secret is `KeyStore.webhook_secret(merchant)` (derived per merchant from the
webhook root key; `paystream keys rotate --kind webhook` rotates every merchant's).

`Stripe-Signature` carries the same scheme keyed as Stripe keys it: the HMAC key is
the UTF-8 of the string secret `whsec_<hex of the secret>` (`stripe_secret`), so
`stripe.Webhook.construct_event(body, header, "whsec_...")` verifies our deliveries.
"""

from __future__ import annotations

import hashlib
import hmac

from connectors.vault.keys import KeyStore

HEADER = "Paystream-Signature"
STRIPE_HEADER = "Stripe-Signature"
STRIPE_SECRET_PREFIX = "whsec_"
MAX_SIGNATURES = 4
MAX_HEADER_CHARS = 1_024


class SignatureError(ValueError):
    """A signature header that does not verify; the message says why, never the secret."""


def signed_payload(timestamp_s: int, body: bytes) -> bytes:
    return str(timestamp_s).encode() + b"." + body


def stripe_secret(secret: bytes) -> str:
    """The merchant's secret as Stripe's SDKs take it (`whsec_...`)."""
    return STRIPE_SECRET_PREFIX + secret.hex()


def signature_header(
    store: KeyStore,
    merchant_id: str,
    timestamp_s: int,
    body: bytes,
    key_ids: tuple[str | None, ...] = (None,),
    *,
    stripe: bool = False,
) -> str:
    """The header value for `body` sent at `timestamp_s`; `None` in key_ids is the active key.
    `stripe`: keyed by `stripe_secret` (the `Stripe-Signature` header's)."""
    assert 1 <= len(key_ids) <= MAX_SIGNATURES
    message = signed_payload(timestamp_s, body)
    sigs = []
    for key_id in key_ids:
        secret = store.webhook_secret(merchant_id, key_id).digest
        if stripe:
            secret = stripe_secret(secret).encode()
        sigs.append("v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest())
    return ",".join([f"t={timestamp_s}", *dict.fromkeys(sigs)])


def verify(header: str, body: bytes, secret: bytes, now_s: int, tolerance_s: int = 300) -> int:
    """What a receiver does: the header's timestamp if one v1 signature matches
    `secret` and the timestamp is within `tolerance_s` of `now_s`; else SignatureError."""
    if len(header) > MAX_HEADER_CHARS:
        raise SignatureError("signature header too long")
    timestamp_s, sigs = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp_s = int(value)
        elif name == "v1":
            sigs.append(value)
    if timestamp_s is None or not sigs:
        raise SignatureError("header needs t= and at least one v1=")
    if abs(now_s - timestamp_s) > tolerance_s:
        raise SignatureError(f"timestamp {timestamp_s} is more than {tolerance_s}s from now")
    expected = hmac.new(secret, signed_payload(timestamp_s, body), hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, s) for s in sigs):
        raise SignatureError("no signature matches")
    return timestamp_s
