"""Ingest: decode, validate and tokenize a raw command. Pure logic, no Kafka.

Two results, one per input message:
- `Forward`: a ValidatedCommand record (PAN and CVC gone) for the payments stage.
  A command that decoded but is invalid is forwarded too, with `rejection_reason`
  set: the payments stage answers it, so outcomes have one writer and one dedup.
- `DeadLetter`: bytes we cannot decode or attribute to a command (no command_id),
  and a sealed card that does not open (tampered, foreign key, replayed from another
  command): a producer or key fault for ops to see, not a merchant's input error.

Cards arrive sealed (`sealed_card`, connectors/vault/intake.py), tokenized before
publishing (`card_token`), or raw (`card`, producers before PaymentCommand v5;
refused with `raw_card_refused` unless `Limits.accept_raw_card`).

Ingest keeps no state: a redelivered message is forwarded again and the payments
stage's command_id dedup drops it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from connectors.vault.intake import OpenedCard, SealError
from connectors.vault.tokenizer import TOKEN_PATTERN
from schemas.cards import CARD_BRANDS, CardError, brand_of, contains_pan, luhn_valid, mask_pans, mask_pans_bytes
from schemas.codec import Codec, DecodeError
from schemas.ids import derive_dlq_id, derive_payment_id
from schemas.money import is_currency
from schemas.partitioning import partition_for
from streams.domain.authentication import SIGNED_STATUSES, TOKEN_MAX_CHARS
from streams.domain.methods import (
    ACCOUNT_DIGEST_METADATA,
    ACCOUNT_DIGEST_PATTERN,
    BNPL_CUSTOMER_METADATA,
    BNPL_CUSTOMER_PATTERN,
    NO_INSTRUMENT,
    MethodError,
    check_instrument,
    check_return_code,
    method_of,
)
from streams.domain.splits import SplitError, checked_splits

MERCHANT_ID_MAX_LEN = 64
COMMAND_ID_MAX_LEN = 128
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX_LEN = 40
METADATA_VALUE_MAX_LEN = 500
# What derive_payment_id makes: a follow-up naming anything else names no payment.
PAYMENT_ID_PATTERN = re.compile(r"pay_[0-9a-f]{32}")
# A refused command's text fields are cut to their bound (+ "…", so a cut id never
# equals a real one): the refusal must stay small whatever the message carried.
CURRENCY_MAX_LEN = 8
DISPUTE_KINDS = frozenset({"dispute_open", "dispute_evidence", "dispute_close"})
# confirm (version 4): the cardholder passed the 3DS step-up of a payment in requires_action.
# The bank rail's notifications (version 6): a bank transfer settled, or was returned.
BANK_KINDS = frozenset({"bank_settle", "bank_return"})
FOLLOW_UP_KINDS = frozenset({"capture", "void", "refund", "expire", "confirm"}) | DISPUTE_KINDS | BANK_KINDS
# The instruments of non-card methods (PaymentCommand v6): a follow-up carries none.
_INSTRUMENT_FIELDS = ("method", "wallet", "bank_account", "bnpl", "crypto")
# A confirm's 3DS result (PaymentCommand v5): the ECI is two digits, the directory
# server's transaction id a UUID in its 36-char form (EMV 3DS 2.x).
ECI_PATTERN = re.compile(r"[0-9]{2}")
# The ACS's signed value (streams/domain/authentication.py): prefix, claims, signature, base64url.
AUTHENTICATION_VALUE_PATTERN = re.compile(r"[a-z0-9]{1,8}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
DS_TRANS_ID_LEN = 36
# The networks' dispute reasons (Stripe's list); `fraudulent` is the one a lost
# dispute turns into a fraud label (streams/domain/payments.py).
DISPUTE_REASONS = frozenset(
    {
        "bank_cannot_process",
        "check_returned",
        "credit_not_processed",
        "customer_initiated",
        "debit_not_authorized",
        "duplicate",
        "fraudulent",
        "general",
        "incorrect_account_details",
        "insufficient_funds",
        "product_not_received",
        "product_unacceptable",
        "subscription_canceled",
        "unrecognized",
    }
)
# Evidence is kept on the payment (RocksDB): bound one submission (and, in the
# payments stage, their number).
EVIDENCE_MAX_CHARS = 4_000
# When the network wants the evidence, counted from the dispute's occurred_at.
EVIDENCE_DUE_DEFAULT = timedelta(days=21)
EVIDENCE_DUE_MAX = timedelta(days=120)
# A dead letter keeps at most this much of the raw key and value (PANs masked first):
# the record must fit the DLQ topic's message limit whatever arrived.
DLQ_RAW_MAX_BYTES = 64 * 1024

COMMAND_CODEC = Codec("PaymentCommand")


class TokenizerT(Protocol):
    def token(self, merchant_id: str, pan: str) -> str: ...


class OpenerT(Protocol):
    """`connectors.vault.intake.CardOpener`: raises SealError for a card it cannot open."""

    def open(self, sealed: dict[str, Any], merchant_id: str, command_id: str) -> OpenedCard: ...


@dataclass(frozen=True)
class Limits:
    max_amount_minor: int
    idempotency_key_max_len: int
    partitions: int
    # Raw `card` (PAN and CVC on payment-commands) from producers that do not seal yet:
    # refusing it does not take the PAN off the topic, it tells the producer to upgrade.
    accept_raw_card: bool = True
    # method -> currencies its rails take (streams.domain.methods.method_currencies); None: unchecked.
    method_currencies: Mapping[str, frozenset[str]] | None = None
    # The wallet providers' Ed25519 public keys (key kind wallet-signing) by key id: a
    # signed wallet cryptogram is verified against them; None: none trusted.
    wallet_keys: Mapping[str, bytes] | None = None


@dataclass(frozen=True)
class Source:
    """Where a message came from: carried on dead letters and used for checks."""

    topic: str
    partition: int
    offset: int  # -1: handed on inside the worker, not read from the topic (`ref` names it)
    timestamp_ms: int
    key: bytes | None
    ref: str = ""


@dataclass(frozen=True)
class Forward:
    command: dict[str, Any]  # a ValidatedCommand record

    @property
    def key(self) -> bytes:
        key: str = self.command["payment_id"] or self.command["command_id"]
        return key.encode()


@dataclass(frozen=True)
class DeadLetter:
    record: dict[str, Any]  # a DeadLetter record


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def ingest(
    raw: bytes | None, source: Source, tokenizer: TokenizerT, limits: Limits, opener: OpenerT | None = None
) -> Forward | DeadLetter:
    try:
        cmd = COMMAND_CODEC.decode(raw)
    except DecodeError as e:
        return dead_letter("ingest", e.reason, e.detail, raw, source)
    # One scan of every free-text field for a card number (the usual answer: none); the
    # checks by field below scan again only when it finds one, to name the field.
    pan_free = not contains_pan(_free_text(cmd))
    command_id = cmd["command_id"]
    if not command_id or len(command_id) > COMMAND_ID_MAX_LEN or (not pan_free and contains_pan(command_id)):
        # Without a usable command_id nobody can correlate an outcome: dead letter.
        return dead_letter(
            "ingest",
            "invalid_command_id",
            f"command_id must be 1..{COMMAND_ID_MAX_LEN} chars, no card numbers",
            raw,
            source,
        )
    try:
        return Forward(_validate(cmd, source, tokenizer, limits, opener, pan_free))
    except _Invalid as e:
        return Forward(_refused(cmd, e.reason, e.detail, limits))
    except SealError as e:
        return dead_letter("ingest", e.reason, e.detail, raw, source)


def dead_letter(stage: str, reason: str, detail: str, raw: bytes | None, source: Source) -> DeadLetter:
    # Mask before cutting: a cut through a PAN would leave its digits unmasked.
    value, masked_value = mask_pans_bytes(raw or b"")
    key, masked_key = mask_pans_bytes(source.key) if source.key is not None else (None, 0)
    detail, masked_detail = mask_pans(detail)
    if len(value) > DLQ_RAW_MAX_BYTES:
        detail = f"{detail} (raw value cut to {DLQ_RAW_MAX_BYTES} of {len(value)} bytes)"
    return DeadLetter(
        {
            "dlq_id": derive_dlq_id(source.topic, source.partition, source.ref or source.offset),
            "stage": stage,
            "reason": reason,
            "detail": detail[:1000],
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
            "source_timestamp": datetime.fromtimestamp(source.timestamp_ms / 1000, tz=UTC),
            "raw_key": key[:DLQ_RAW_MAX_BYTES] if key is not None else None,
            "raw_value": value[:DLQ_RAW_MAX_BYTES],
            "pans_masked": masked_value + masked_key + masked_detail,
        }
    )


def _refused(cmd: dict[str, Any], reason: str, detail: str, limits: Limits) -> dict[str, Any]:
    """The ValidatedCommand form of a refused command: no card, no metadata (nothing
    downstream reads them), only the reason. It may be refused *because* a text field
    holds a PAN, so every one is masked; each is cut to its bound."""
    payment_id = cmd["payment_id"] if cmd["payment_id"] and PAYMENT_ID_PATTERN.fullmatch(cmd["payment_id"]) else None
    if cmd["kind"] == "create" and cmd["merchant_id"] and cmd["idempotency_key"]:
        payment_id = derive_payment_id(cmd["merchant_id"], cmd["idempotency_key"])
    bounds = {
        "merchant_id": MERCHANT_ID_MAX_LEN,
        "idempotency_key": limits.idempotency_key_max_len,
        "currency": CURRENCY_MAX_LEN,
    }
    masked = {f: _cut(_unpan(cmd[f]), n) for f, n in bounds.items()}
    return _forwarded(cmd | masked, payment_id, card=None) | {
        "metadata": {},
        "dispute": None,
        "three_ds": None,
        "splits": None,
        "platform_fee_minor": None,
        **NO_INSTRUMENT,
        "return_code": None,
        "merchant_initiated": False,
        "rejection_reason": reason,
        "rejection_detail": mask_pans(detail)[0][:500],
    }


def _cut(text: str | None, max_len: int) -> str | None:
    return text[:max_len] + "…" if text is not None and len(text) > max_len else text


def _unpan(text: str | None) -> str | None:
    """Mask a field only when it holds a PAN: other ids must stay as the client sent them."""
    return mask_pans(text)[0] if text is not None and contains_pan(text) else text


def _forwarded(
    cmd: dict[str, Any],
    payment_id: str | None,
    card: dict[str, Any] | None,
    instrument: dict[str, Any] = NO_INSTRUMENT,
    return_code: str | None = None,
    dispute: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`dispute`: the checked one (`_check_dispute`), not the command's own."""
    capture_method = cmd["capture_method"]
    if cmd["kind"] == "create":
        capture_method = capture_method or "automatic"  # Stripe's default
    return {
        "command_id": cmd["command_id"],
        "kind": cmd["kind"],
        "merchant_id": cmd["merchant_id"],
        "idempotency_key": cmd["idempotency_key"],
        "payment_id": payment_id,
        "amount_minor": cmd["amount_minor"],
        "currency": cmd["currency"],
        "capture_method": capture_method,
        "card": card,
        "metadata": cmd["metadata"],
        "dispute": dispute,
        "three_ds": cmd.get("three_ds"),
        **instrument,
        "return_code": return_code,
        "occurred_at": cmd["occurred_at"],
        "rejection_reason": None,
        "rejection_detail": None,
        "splits": cmd.get("splits"),
        "platform_fee_minor": cmd.get("platform_fee_minor"),
        "merchant_initiated": bool(cmd.get("merchant_initiated")),
    }


# Free-text fields that travel downstream: a card number in any of them is refused.
_TEXT_FIELDS = ("merchant_id", "idempotency_key", "payment_id", "currency")


def _free_text(cmd: dict[str, Any]) -> str:
    """The command's free-text fields in one string, a line each: a card number in it
    is one in a field (a number cannot span lines, and a line's ends bound it as the
    field's would)."""
    parts = [cmd["command_id"]]
    parts += [cmd[name] or "" for name in _TEXT_FIELDS]
    metadata = cmd["metadata"]
    if metadata:
        parts += metadata
        parts += metadata.values()
    splits = cmd.get("splits")
    if splits:
        parts += [s["merchant_id"] for s in splits]
    return "\n".join(parts)


def _validate(
    cmd: dict[str, Any],
    source: Source,
    tokenizer: TokenizerT,
    limits: Limits,
    opener: OpenerT | None,
    pan_free: bool = False,
) -> dict[str, Any]:
    """`pan_free`: no field of `_free_text` holds a card number (False: each is scanned)."""
    if not pan_free:
        for name in _TEXT_FIELDS:
            if cmd[name] is not None and contains_pan(cmd[name]):
                raise _Invalid("pan_in_field", f"{name} must not contain a card number")
    merchant_id = cmd["merchant_id"]
    if not merchant_id or len(merchant_id) > MERCHANT_ID_MAX_LEN or not merchant_id.isprintable():
        raise _Invalid("invalid_merchant_id", f"merchant_id must be 1..{MERCHANT_ID_MAX_LEN} printable chars")
    key = cmd["idempotency_key"]
    if not key or len(key) > limits.idempotency_key_max_len:
        raise _Invalid("invalid_idempotency_key", f"idempotency_key must be 1..{limits.idempotency_key_max_len} chars")
    _check_metadata(cmd["metadata"], pan_free)

    kind = cmd["kind"]
    if kind == "create":
        payment_id = derive_payment_id(merchant_id, key)
        if cmd["payment_id"] not in (None, payment_id):
            raise _Invalid(
                "payment_id_mismatch", "a create's payment_id must be derive_payment_id(merchant_id, idempotency_key)"
            )
        if cmd["amount_minor"] is None:
            raise _Invalid("missing_amount", "create needs amount_minor")
        if cmd["currency"] is None:
            raise _Invalid("missing_currency", "create needs currency")
    else:
        assert kind in FOLLOW_UP_KINDS, kind
        payment_id = cmd["payment_id"]
        if not payment_id:
            raise _Invalid("missing_payment_id", f"{kind} needs payment_id")
        if not PAYMENT_ID_PATTERN.fullmatch(payment_id):
            raise _Invalid(
                "invalid_payment_id", "payment_id must be pay_ + 32 hex digits, as derive_payment_id makes it"
            )
        if cmd["card"] is not None or cmd["card_token"] is not None or cmd["sealed_card"] is not None:
            raise _Invalid("unexpected_payment_method", f"{kind} must not carry a card")
        if any(cmd.get(f) is not None for f in _INSTRUMENT_FIELDS):
            raise _Invalid("unexpected_payment_method", f"{kind} must not carry a payment method")
        if cmd["capture_method"] is not None:
            raise _Invalid("unexpected_capture_method", f"{kind} must not carry capture_method")
    dispute = _check_dispute(kind, cmd)
    _check_three_ds(kind, cmd.get("three_ds"))
    return_code = _check_bank_notice(kind, cmd)
    _check_amount(cmd["amount_minor"], limits)
    _check_splits(kind, cmd, pan_free)
    if cmd["currency"] is not None and not is_currency(cmd["currency"]):
        raise _Invalid("invalid_currency", "currency is not an ISO 4217 code")
    _check_partitioning(merchant_id, source, limits)
    if cmd.get("merchant_initiated") and (kind != "create" or cmd["card_token"] is None):
        # Only a saved card can be charged with no cardholder present: the vault holds its number.
        raise _Invalid("invalid_merchant_initiated", "merchant_initiated needs a create on a saved card (card_token)")

    instrument, card = NO_INSTRUMENT, None
    if kind == "create":
        try:
            checked = check_instrument(cmd, limits.method_currencies, limits.wallet_keys, payment_id)
        except MethodError as e:
            raise _Invalid(e.reason, e.detail) from None
        instrument = checked.fields()
        if checked.method == "card":
            card = _tokenize(cmd, tokenizer, limits, opener)
    return _forwarded(cmd, payment_id, card, instrument, return_code, dispute)


def _check_bank_notice(kind: str, cmd: dict[str, Any]) -> str | None:
    """A bank_return carries its return code; a bank notification carries no amount
    (the rail settles or returns the whole transfer); nothing else carries a notice."""
    notice = cmd.get("bank_notice")
    if kind not in BANK_KINDS or kind == "bank_settle":
        if notice is not None:
            raise _Invalid("unexpected_bank_notice", f"{kind} must not carry bank_notice")
        if kind == "bank_settle" and cmd["amount_minor"] is not None:
            raise _Invalid("unexpected_amount", "bank_settle must not carry amount_minor")
        return None
    if cmd["amount_minor"] is not None:
        raise _Invalid("unexpected_amount", "bank_return must not carry amount_minor")
    try:
        return check_return_code(notice["return_code"] if notice is not None else None)
    except MethodError as e:
        raise _Invalid(e.reason, e.detail) from None


def _check_splits(kind: str, cmd: dict[str, Any], pan_free: bool = False) -> None:
    splits, fee = cmd.get("splits"), cmd.get("platform_fee_minor")
    if kind != "create":
        if splits is not None or fee is not None:
            raise _Invalid("unexpected_splits", f"{kind} must not carry splits")
        return
    if splits and method_of(cmd) == "bank_transfer":  # its bank_* postings credit one merchant
        raise _Invalid("splits_not_supported", "a bank transfer cannot be split")
    if not pan_free and any(contains_pan(s["merchant_id"]) for s in splits or ()):
        raise _Invalid("pan_in_field", "splits.merchant_id must not contain a card number")
    try:
        checked_splits(splits, fee, merchant_id=cmd["merchant_id"], amount_minor=cmd["amount_minor"])
    except SplitError as e:
        raise _Invalid(e.reason, e.detail) from None


_NO_DISPUTE = {"reason": None, "evidence_due_at": None, "evidence": None, "outcome": None}


def _check_dispute(kind: str, cmd: dict[str, Any]) -> dict[str, Any] | None:
    """The dispute fields a kind needs, defaults filled in and evidence PAN-masked;
    every other dispute field must be absent."""
    given = cmd.get("dispute")
    if kind not in DISPUTE_KINDS:
        if given is not None:
            raise _Invalid("unexpected_dispute", f"{kind} must not carry dispute fields")
        return None
    d = _NO_DISPUTE | (given or {})
    needed = {
        "dispute_open": ("reason", "evidence_due_at"),
        "dispute_evidence": ("evidence",),
        "dispute_close": ("outcome",),
    }[kind]
    extra = sorted(f for f, v in d.items() if v is not None and f not in needed)
    if extra:
        raise _Invalid("unexpected_dispute_field", f"{kind} must not carry {', '.join(extra)}")
    if kind != "dispute_open" and cmd["amount_minor"] is not None:
        raise _Invalid("unexpected_amount", f"{kind} must not carry amount_minor")
    if kind == "dispute_open":
        if d["reason"] is None:
            raise _Invalid("missing_dispute_reason", "dispute_open needs dispute.reason")
        if d["reason"] not in DISPUTE_REASONS:
            raise _Invalid(
                "invalid_dispute_reason", "dispute.reason must be one of " + ", ".join(sorted(DISPUTE_REASONS))
            )
        at = cmd["occurred_at"]
        due = d["evidence_due_at"] or at + EVIDENCE_DUE_DEFAULT
        if not at < due <= at + EVIDENCE_DUE_MAX:
            raise _Invalid(
                "invalid_evidence_due",
                f"evidence_due_at must be after occurred_at, at most {EVIDENCE_DUE_MAX.days} days",
            )
        return d | {"evidence_due_at": due}
    if kind == "dispute_evidence":
        text = d["evidence"]
        if text is None or not text.strip() or len(text) > EVIDENCE_MAX_CHARS:
            raise _Invalid("invalid_evidence", f"dispute.evidence must be 1..{EVIDENCE_MAX_CHARS} chars, not blank")
        return d | {"evidence": mask_pans(text)[0]}  # the PAN never goes downstream
    if d["outcome"] is None:
        raise _Invalid("missing_dispute_outcome", "dispute_close needs dispute.outcome (won or lost)")
    return d


def _check_three_ds(kind: str, three_ds: dict[str, Any] | None) -> None:
    """A confirm carries the 3DS result (its status is an Avro enum: decoded, it is one
    of Y A N U R); nothing else carries one."""
    if kind != "confirm":
        if three_ds is not None:
            raise _Invalid("unexpected_three_ds", f"{kind} must not carry three_ds")
        return
    if three_ds is None:
        raise _Invalid("missing_three_ds", "confirm needs three_ds, the result of the 3DS authentication")
    eci, ds_trans_id = three_ds["eci"], three_ds["ds_trans_id"]
    if eci is not None and not ECI_PATTERN.fullmatch(eci):
        raise _Invalid("invalid_three_ds", "three_ds.eci must be 2 digits")
    if ds_trans_id is not None and not _is_uuid(ds_trans_id):
        raise _Invalid("invalid_three_ds", f"three_ds.ds_trans_id must be a UUID ({DS_TRANS_ID_LEN} chars)")
    value = three_ds.get("authentication_value")
    if value is None:
        return
    # Its signature is the payments stage's to verify (it knows the payment); here only
    # what keeps the record small and card-free.
    if not (AUTHENTICATION_VALUE_PATTERN.fullmatch(value) and len(value) <= TOKEN_MAX_CHARS) or contains_pan(value):
        raise _Invalid(
            "invalid_three_ds",
            f"three_ds.authentication_value must be a signed value of at most {TOKEN_MAX_CHARS} chars",
        )
    if three_ds["trans_status"] not in SIGNED_STATUSES:
        raise _Invalid("invalid_three_ds", "three_ds.authentication_value comes with a Y or A result only")


def _is_uuid(text: str) -> bool:
    if len(text) != DS_TRANS_ID_LEN:
        return False
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _check_amount(amount_minor: int | None, limits: Limits) -> None:
    if amount_minor is None:
        return
    if amount_minor <= 0:
        raise _Invalid("invalid_amount", "amount_minor must be a positive integer")
    if amount_minor > limits.max_amount_minor:
        raise _Invalid("amount_too_large", f"amount_minor must be <= {limits.max_amount_minor}")


def _check_metadata(metadata: dict[str, str], pan_free: bool = False) -> None:
    if len(metadata) > METADATA_MAX_KEYS:
        raise _Invalid("invalid_metadata", f"at most {METADATA_MAX_KEYS} metadata keys")
    for k, v in metadata.items():
        if not k or len(k) > METADATA_KEY_MAX_LEN or len(v) > METADATA_VALUE_MAX_LEN:
            raise _Invalid(
                "invalid_metadata",
                f"metadata keys 1..{METADATA_KEY_MAX_LEN} chars, values at most {METADATA_VALUE_MAX_LEN}",
            )
        if not pan_free and (contains_pan(k) or contains_pan(v)):
            # A card number in metadata would be forwarded and stored: refuse it.
            raise _Invalid("pan_in_metadata", "metadata must not contain card numbers")
    # The risk stage keys a debit and a BNPL plan by these: a raw account number would be
    # forwarded and stored, a malformed id silently ignored; refuse both.
    digest = metadata.get(ACCOUNT_DIGEST_METADATA)
    if digest is not None and not ACCOUNT_DIGEST_PATTERN.fullmatch(digest):
        raise _Invalid(
            "invalid_metadata",
            f"metadata.{ACCOUNT_DIGEST_METADATA} must be the SHA-256 hex (lower case) of"
            " the account number, never the number",
        )
    customer = metadata.get(BNPL_CUSTOMER_METADATA)
    if customer is not None and not BNPL_CUSTOMER_PATTERN.fullmatch(customer):
        raise _Invalid("invalid_metadata", f"metadata.{BNPL_CUSTOMER_METADATA} must be 1..64 chars [A-Za-z0-9_.@-]")


def command_key(cmd: Mapping[str, Any]) -> bytes:
    """The key of a payment-commands message: the command's merchant, whose partition
    holds its idempotency keys, so ingest and the keys stage run in one transaction
    (docs/decisions.md, Hop budget). All of a payment's commands share it, so they
    keep their order. A command with no merchant (refused) travels under its command_id."""
    key: str = cmd["merchant_id"] or cmd["command_id"]
    return key.encode()


def _check_partitioning(merchant_id: str, source: Source, limits: Limits) -> None:
    if source.key is not None and source.key != merchant_id.encode():
        raise _Invalid("key_mismatch", "the message key must be the merchant_id")
    expected = partition_for(merchant_id.encode(), limits.partitions)
    if source.partition != expected:
        # The merchant's idempotency keys live in its partition: handled in another one, a
        # retried create could claim its key twice. The producer must use the murmur2
        # (Java default) partitioner.
        raise _Invalid(
            "wrong_partition",
            f"merchant_id hashes to partition {expected} (murmur2), message is on {source.partition}",
        )


def _tokenize(cmd: dict[str, Any], tokenizer: TokenizerT, limits: Limits, opener: OpenerT | None) -> dict[str, Any]:
    card, pre, sealed = cmd["card"], cmd["card_token"], cmd["sealed_card"]
    if (card is not None) + (pre is not None) + (sealed is not None) > 1:
        raise _Invalid("ambiguous_payment_method", "a create carries one of card, card_token, sealed_card")
    if pre is not None:  # tokenized before publishing: the PAN never entered Kafka
        if not (
            TOKEN_PATTERN.fullmatch(pre["token"])
            and _digits(pre["bin"], 6)
            and _digits(pre["last4"], 4)
            and pre["brand"] in CARD_BRANDS
        ):
            raise _Invalid(
                "invalid_card_token",
                "card_token needs tok_ + 32 base32 chars, a 6-digit bin, a 4-digit last4, a known brand",
            )
        _check_expiry(pre, cmd["occurred_at"])
        return dict(pre)
    if sealed is not None:
        if opener is None:
            raise SealError("unknown_intake_key", "this ingest holds no card-intake keys")
        opened = opener.open(sealed, cmd["merchant_id"], cmd["command_id"])
        card = {"number": opened.number, "exp_month": opened.exp_month, "exp_year": opened.exp_year}
    elif card is not None and not limits.accept_raw_card:
        raise _Invalid(
            "raw_card_refused",
            "raw card data is not accepted: seal the card to the card-intake public key (docs/security.md)",
        )
    if card is None:
        raise _Invalid("missing_payment_method", "create needs a card")
    pan = card["number"].replace(" ", "").replace("-", "")
    if not (12 <= len(pan) <= 19 and pan.isascii() and pan.isdigit() and luhn_valid(pan)):
        raise _Invalid("invalid_card_number", "card number fails length or Luhn check")
    _check_expiry(card, cmd["occurred_at"])
    try:
        token = tokenizer.token(cmd["merchant_id"], pan)
    except CardError as e:  # a vault refuses what the plain tokenizer accepts (unknown brand)
        raise _Invalid(e.reason, e.detail) from None
    return {
        "token": token,
        "bin": pan[:6],
        "last4": pan[-4:],
        "brand": brand_of(pan) or "unknown",
        "exp_month": card["exp_month"],
        "exp_year": card["exp_year"],
    }


def _check_expiry(card: dict[str, Any], occurred_at: datetime) -> None:
    if not 1 <= card["exp_month"] <= 12 or not 2000 <= card["exp_year"] <= 2100:
        raise _Invalid("invalid_expiry", "exp_month 1..12, exp_year 2000..2100")
    if (card["exp_year"], card["exp_month"]) < (occurred_at.year, occurred_at.month):
        raise _Invalid("expired_card", "card expired before the command's occurred_at")


def _digits(text: str, n: int) -> bool:
    return len(text) == n and text.isascii() and text.isdigit()
