"""Card intake: producers seal the card to the PCI zone's public key, ingest opens it.

Client-side encryption as Adyen's and Braintree's: a producer (the API gateway, the
demo, `paystream produce`) never publishes a card number, only a `SealedCard` that
nothing outside the PCI zone can open, so `payment-commands` holds no PAN.

Sealing (one ephemeral key per card, ECIES / HPKE-base-mode style):
- X25519 between a fresh ephemeral key and the active `card-intake` public key;
- HKDF-SHA256 of the shared secret, salted with both public keys, gives the
  AES-256-GCM key and nonce (each key seals one message, so a derived nonce is safe);
- AES-256-GCM over the card (number, expiry, whether a CVC was presented), padded
  to a fixed size so the ciphertext does not tell a 15-digit amex from a 16-digit visa;
- associated data binds the key id, the merchant and the command id: a sealed card
  copied into another command, or relabelled with another key id, fails to open.

The CVC is never sealed: a topic is storage, and a CVC is never stored, not even
encrypted (docs/security.md). The sealer checks its form and records only that one
was presented.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from connectors.vault.keys import CARD_INTAKE, KEY_BYTES, NONCE_BYTES, KeyStore, KeyStoreError, parse_key_id
from schemas.cards import CardError
from schemas.errors import ReasonedError

_INFO = b"paystream-card-intake-v1"
_AAD_PREFIX = b"paystream-card-intake-v1\x1f"
_LEN = struct.Struct(">I")  # an aad part's length
PLAINTEXT_BYTES = 128  # every sealed card is this long before encryption (JSON + space padding)
SEALED_CIPHERTEXT_BYTES = PLAINTEXT_BYTES + 16  # + the GCM tag
CARD_NUMBER_MAX_CHARS = 23  # 19 digits and separators, as the API accepts them
_NUMBER_CHARS = frozenset("0123456789 -")
KEY_ID_MAX_CHARS = 40
PUBLIC_KEY_FILE_MAX_BYTES = 1024


class SealError(ReasonedError):
    """A sealed card that cannot be opened: `reason` is a stable code for the dead
    letter, `detail` says why; neither holds card data."""


@dataclass(frozen=True)
class OpenedCard:
    """What ingest gets from a sealed card: the CVC itself never travels."""

    number: str = field(repr=False)
    exp_month: int
    exp_year: int
    cvc_presented: bool


def seal_aad(key_id: str, merchant_id: str, command_id: str) -> bytes:
    # Length-prefixed, so no choice of ids can make two different triples collide.
    key = key_id.encode("utf-8", "surrogatepass")
    merchant = merchant_id.encode("utf-8", "surrogatepass")
    command = command_id.encode("utf-8", "surrogatepass")
    return b"".join(
        (_AAD_PREFIX, _LEN.pack(len(key)), key, _LEN.pack(len(merchant)), merchant, _LEN.pack(len(command)), command)
    )


def _key_and_nonce(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(hashes.SHA256(), KEY_BYTES + NONCE_BYTES, salt=ephemeral_public + recipient_public, info=_INFO).derive(
        shared
    )
    return okm[:KEY_BYTES], okm[KEY_BYTES:]


def _check_cvc(cvc: str | None) -> bool:
    if cvc is None:
        return False
    if not (cvc.isascii() and cvc.isdigit() and 3 <= len(cvc) <= 4):
        raise CardError("invalid_cvc", "cvc must be 3 or 4 digits")
    return True


@dataclass(frozen=True)
class Sealer:
    """Seals cards to one card-intake public key; holds nothing secret."""

    key_id: str
    public_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        kind, _ = parse_key_id(self.key_id)
        if kind != CARD_INTAKE or len(self.public_key) != KEY_BYTES:
            raise KeyStoreError(f"a sealer needs a {CARD_INTAKE} key id and a {KEY_BYTES}-byte X25519 public key")

    def seal(self, card: dict[str, Any], merchant_id: str, command_id: str) -> dict[str, Any]:
        """A SealedCard record of a CardInput record (number, exp_month, exp_year, cvc).
        Raises CardError for a CVC that is not 3-4 digits or a number too long to be one;
        the number itself is checked by ingest, which answers the merchant."""
        number, month, year = card["number"], card["exp_month"], card["exp_year"]
        if not (isinstance(number, str) and len(number) <= CARD_NUMBER_MAX_CHARS and set(number) <= _NUMBER_CHARS):
            raise CardError(
                "invalid_card_number", f"card number must be at most {CARD_NUMBER_MAX_CHARS} digits, spaces or dashes"
            )
        if not all(type(x) is int and 0 <= x <= 9999 for x in (month, year)):
            raise CardError("invalid_expiry", "exp_month and exp_year must be integers")
        body = {"number": number, "exp_month": month, "exp_year": year, "cvc_presented": _check_cvc(card.get("cvc"))}
        plaintext = json.dumps(body, separators=(",", ":")).encode()
        assert len(plaintext) <= PLAINTEXT_BYTES, len(plaintext)  # every field is bounded above
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.public_key))
        key, nonce = _key_and_nonce(shared, ephemeral_public, self.public_key)
        ciphertext = AESGCM(key).encrypt(
            nonce, plaintext.ljust(PLAINTEXT_BYTES), seal_aad(self.key_id, merchant_id, command_id)
        )
        return {"key_id": self.key_id, "ephemeral_public": ephemeral_public, "ciphertext": ciphertext}

    def seal_command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """The command with its raw `card` replaced by a `sealed_card` (others unchanged)."""
        if cmd.get("card") is None:
            return cmd
        return cmd | {"card": None, "sealed_card": self.seal(cmd["card"], cmd["merchant_id"], cmd["command_id"])}


def active_sealer(store: KeyStore) -> Sealer:
    """A sealer for the store's active card-intake key (producers inside our deployment)."""
    key_id = store.active(CARD_INTAKE).key_id
    return Sealer(key_id, store.intake_public_keys()[key_id])


def public_key_doc(sealer: Sealer) -> dict[str, str]:
    """What `paystream keys intake-public` prints and `load_sealer` reads."""
    return {"key_id": sealer.key_id, "public_key": base64.b64encode(sealer.public_key).decode()}


def load_sealer(path: Path) -> Sealer:
    """A sealer from an exported public key file (producers outside the PCI zone,
    which must not read the key store)."""
    try:
        if path.stat().st_size > PUBLIC_KEY_FILE_MAX_BYTES:
            raise ValueError(f"larger than {PUBLIC_KEY_FILE_MAX_BYTES} bytes")
        doc = json.loads(path.read_bytes())
        return Sealer(str(doc["key_id"]), base64.b64decode(doc["public_key"], validate=True))
    except (OSError, ValueError, KeyError, TypeError, KeyStoreError) as e:
        raise KeyStoreError(f"{path} is not a card-intake public key file ({type(e).__name__}: {e})"[:300]) from None


class CardOpener:
    """Opens sealed cards with any card-intake key of a store (old ones too, so cards
    sealed before a rotation still open). Lives in the PCI zone, with ingest."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        # Fixed when built, like the store's keys: a rotation reaches a worker at its restart.
        self._public = store.intake_public_keys()

    def __repr__(self) -> str:
        return "CardOpener()"

    def open(self, sealed: dict[str, Any], merchant_id: str, command_id: str) -> OpenedCard:
        key_id, ephemeral_public, ciphertext = sealed["key_id"], sealed["ephemeral_public"], sealed["ciphertext"]
        if len(key_id) > KEY_ID_MAX_CHARS or not key_id.isprintable():
            raise SealError("sealed_card_malformed", "key_id is not a key id")
        if len(ephemeral_public) != KEY_BYTES or len(ciphertext) != SEALED_CIPHERTEXT_BYTES:
            raise SealError(
                "sealed_card_malformed",
                f"ephemeral_public must be {KEY_BYTES} bytes, ciphertext {SEALED_CIPHERTEXT_BYTES}",
            )
        try:
            recipient_public = self._public.get(key_id)
            if recipient_public is None:
                raise SealError("unknown_intake_key", f"{key_id!r} is not a card-intake key of this deployment")
            shared = self._store.intake_agree(key_id, ephemeral_public)
        except KeyStoreError as e:
            raise SealError("sealed_card_malformed", str(e)) from None
        key, nonce = _key_and_nonce(shared, ephemeral_public, recipient_public)
        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, seal_aad(key_id, merchant_id, command_id))
        except InvalidTag:
            raise SealError(
                "sealed_card_tampered",
                f"sealed card failed authentication under {key_id}: tampered with, "
                "sealed for another merchant or command, or to another key",
            ) from None
        return _parse(plaintext)


def _parse(plaintext: bytes) -> OpenedCard:
    # Authenticated, so written by a holder of our public key; still checked, not trusted.
    try:
        doc = json.loads(plaintext)
        number, month, year, cvc = doc["number"], doc["exp_month"], doc["exp_year"], doc["cvc_presented"]
        if not (isinstance(number, str) and type(month) is int and type(year) is int and type(cvc) is bool):
            raise TypeError("field types")
    except (ValueError, KeyError, TypeError) as e:
        raise SealError("sealed_card_malformed", f"the opened card is not a card record ({type(e).__name__})") from None
    return OpenedCard(number, month, year, cvc)
