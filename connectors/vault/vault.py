"""The card vault's pure parts: one sealed record per card, and the bounded map of them.

Envelope encryption, one fresh data key per record:
- the PAN is encrypted with AES-256-GCM under a random 256-bit data key;
- the data key is wrapped (AES-256-GCM) by the active `vault-master` key of the
  key store, whose key id is recorded with the record;
- both layers carry associated data binding the token and the merchant, so a
  record copied under another token, or edited to name another merchant, fails
  to decrypt.

Why per record and not per batch: a record is written once per card and merchant
(a card the vault already holds is not sealed again), so a per-batch key would save
one small AES operation per *new* card while widening what one leaked data key
exposes and tying unrelated cards' lifecycles together.

Where records live: the compacted `card-vault` topic, keyed by token, written in
the ingest transaction that forwards the token (connectors/vault/topic.py); every
worker folds the topic into a `SealedCards` map, still encrypted (docs/security.md).
A record is the JSON document below (`RECORD_FORMAT` 1, the format of the local
vault files before), read by the vault alone. `seal` writes it compact with sorted keys
(`schemas.state.canonical_json`: ~0.2 µs a new card where `json.dumps` took ~2.8); the
records written before, with `json.dumps`'s spaces, read the same.
"""

from __future__ import annotations

import base64
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from connectors.vault.keys import DATA_KEY_BYTES, NONCE_BYTES, VAULT_MASTER, KeyStore, KeyStoreError, Wrapped
from connectors.vault.tokenizer import TOKEN_PATTERN, StoreTokenizer
from schemas.cards import CardError, check_pan
from schemas.state import canonical_json

RECORD_FORMAT = 1
BIN_DIGITS = 6
MERCHANT_ID_MAX_LEN = 64
MAX_RECORD_BYTES = 4096
_FIELDS = ("merchant_id", "key_id", "wrapped_key", "nonce", "ciphertext", "bin", "last4", "brand")

__all__ = ["CardError", "check_pan"]  # re-exported: callers catch the vault's refusals from here


class VaultError(Exception):
    """A record that cannot be read back: names the token and why, never the PAN."""

    def __init__(self, token: str, reason: str) -> None:
        super().__init__(f"vault record {token}: {reason}")
        self.token = token
        self.reason = reason


@dataclass(frozen=True)
class VaultCard:
    """What may travel downstream: the fields of a CardRef minus the expiry."""

    token: str
    bin: str
    last4: str
    brand: str


@dataclass(frozen=True)
class Revealed:
    """A PAN opened for the provider edge, and the master key that unwrapped it (the audit's)."""

    pan: str = field(repr=False)
    merchant_id: str
    key_id: str


@dataclass(frozen=True)
class RewrapReport:
    rewrapped: int
    current: int  # already under the active master key
    active_key_id: str
    in_use: dict[str, int] = field(default_factory=dict)  # master key id -> records it wraps, after the run


def _aad(layer: bytes, token: str, merchant_id: str) -> bytes:
    return b"paystream-vault\x1f" + layer + b"\x1f" + token.encode() + b"\x1f" + merchant_id.encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def check_token(token: str) -> None:
    if not TOKEN_PATTERN.match(token):
        raise VaultError(token[:40], "not a token (tok_ + 32 base32 chars)")


def seal(
    keys: KeyStore,
    tokenizer: StoreTokenizer,
    merchant_id: str,
    pan: str,
    held: Callable[[str], bool] = lambda token: False,
) -> tuple[VaultCard, bytes | None]:
    """The card's token and its sealed record (a fresh data key, wrapped under the
    active master key), or None for the record when `held(token)`: nothing to write.
    Raises CardError for a merchant id or a number the vault refuses."""
    if not merchant_id or len(merchant_id) > MERCHANT_ID_MAX_LEN or not merchant_id.isprintable():
        raise CardError("invalid_merchant_id", f"merchant_id must be 1..{MERCHANT_ID_MAX_LEN} printable chars")
    digits, brand = check_pan(pan)
    token = tokenizer.token(merchant_id, digits)
    card = VaultCard(token, digits[:BIN_DIGITS], digits[-4:], brand)
    if held(token):
        return card, None
    data_key = os.urandom(DATA_KEY_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, digits.encode(), _aad(b"pan", token, merchant_id))
    wrapped = keys.wrap(data_key, _aad(b"dek", token, merchant_id))
    record = {
        "format": RECORD_FORMAT,
        "merchant_id": merchant_id,
        "key_id": wrapped.key_id,
        "wrapped_key": _b64(wrapped.blob),
        "nonce": _b64(nonce),
        "ciphertext": _b64(ciphertext),
        "bin": card.bin,
        "last4": card.last4,
        "brand": brand,
    }
    return card, canonical_json(record)


def parse(token: str, blob: bytes) -> dict[str, Any]:
    """A record's fields, checked; VaultError for anything else."""
    check_token(token)
    if len(blob) > MAX_RECORD_BYTES:
        raise VaultError(token, f"record larger than {MAX_RECORD_BYTES} bytes")
    try:
        record = json.loads(blob)
        if (
            not isinstance(record, dict)
            or record.get("format") != RECORD_FORMAT
            or not all(isinstance(record.get(f), str) for f in _FIELDS)
        ):
            raise ValueError("fields")
    except (ValueError, UnicodeDecodeError):
        raise VaultError(token, "record is malformed") from None
    return record


def card_of(token: str, blob: bytes) -> VaultCard:
    """BIN, last 4 and brand of a record, without decrypting."""
    record = parse(token, blob)
    return VaultCard(token, record["bin"], record["last4"], record["brand"])


def master_key_id(token: str, blob: bytes) -> str:
    return parse(token, blob)["key_id"]


def open_record(keys: KeyStore, token: str, blob: bytes) -> Revealed:
    """The PAN of a record. Only the provider edge calls this; never log the result."""
    record = parse(token, blob)
    merchant_id = record["merchant_id"]
    try:
        data_key = keys.unwrap(_wrapped(token, record), _aad(b"dek", token, merchant_id))
    except KeyStoreError as e:
        raise VaultError(
            token, f"data key cannot be unwrapped ({e}): the record was tampered with, moved, or its master key is gone"
        ) from None
    try:
        pan = AESGCM(data_key).decrypt(
            _decode(token, record, "nonce"), _decode(token, record, "ciphertext"), _aad(b"pan", token, merchant_id)
        )
    except InvalidTag:
        raise VaultError(token, "ciphertext failed authentication: tampered with or moved from another token") from None
    return Revealed(pan.decode(), merchant_id, record["key_id"])


def rewrap(keys: KeyStore, token: str, blob: bytes) -> bytes | None:
    """The record with its data key re-wrapped under the active master key (the PAN
    ciphertext untouched); None if it is under that key already."""
    record = parse(token, blob)
    if record["key_id"] == keys.active(VAULT_MASTER).key_id:
        return None
    aad = _aad(b"dek", token, record["merchant_id"])
    try:
        data_key = keys.unwrap(_wrapped(token, record), aad)
    except KeyStoreError as e:
        raise VaultError(token, f"cannot rewrap: {e}") from None
    wrapped = keys.wrap(data_key, aad)
    return json.dumps(record | {"key_id": wrapped.key_id, "wrapped_key": _b64(wrapped.blob)}).encode()


def _wrapped(token: str, record: dict[str, Any]) -> Wrapped:
    return Wrapped(record["key_id"], _decode(token, record, "wrapped_key"))


def _decode(token: str, record: dict[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(record[name], validate=True)
    except ValueError:
        raise VaultError(token, f"record field {name} is not base64") from None


class SealedCards:
    """token -> sealed record, at most `max_cards` of them (least recently used out
    first): the fold of the card-vault topic every worker keeps. Records stay encrypted
    here; a card pushed out is read again from the topic when it is needed."""

    def __init__(self, max_cards: int) -> None:
        assert max_cards > 0
        self.max_cards = max_cards
        self._cards: OrderedDict[str, bytes] = OrderedDict()
        self.evicted = 0  # records pushed out so far: a miss may then still be on the topic

    def __len__(self) -> int:
        return len(self._cards)

    def __contains__(self, token: str) -> bool:
        return token in self._cards

    def fold(self, token: str, blob: bytes | None) -> None:
        """One record of the topic, in offset order: the latest per token wins, a
        tombstone (None) forgets the card."""
        if blob is None:
            self._cards.pop(token, None)
            return
        self._cards[token] = blob
        self._cards.move_to_end(token)
        while len(self._cards) > self.max_cards:
            self._cards.popitem(last=False)
            self.evicted += 1

    def get(self, token: str) -> bytes | None:
        blob = self._cards.get(token)
        if blob is not None:
            self._cards.move_to_end(token)
        return blob


class CardSealer:
    """One ingest batch's tokenizer (`streams.stages.ingest.TokenizerT`): each card the
    vault does not hold yet is sealed once into `sealed`, which the batch sends to the
    card-vault topic in the transaction that forwards the tokens."""

    def __init__(self, keys: KeyStore, tokenizer: StoreTokenizer, held: Callable[[str], bool]) -> None:
        self._keys, self._tokenizer, self._held = keys, tokenizer, held
        self.sealed: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"CardSealer(sealed={len(self.sealed)})"

    def tokenize(self, merchant_id: str, pan: str) -> VaultCard:
        """Seal the card unless it is held (same card, same merchant: one record) and
        return what may travel downstream."""
        card, blob = seal(
            self._keys, self._tokenizer, merchant_id, pan, lambda token: token in self.sealed or self._held(token)
        )
        if blob is not None:
            self.sealed[card.token] = blob
        return card

    def token(self, merchant_id: str, pan: str) -> str:
        """Raises CardError for a number the vault refuses."""
        return self.tokenize(merchant_id, pan).token
