"""The card vault: PANs encrypted at rest, keyed by token.

Envelope encryption, one fresh data key per record:
- the PAN is encrypted with AES-256-GCM under a random 256-bit data key;
- the data key is wrapped (AES-256-GCM) by the active `vault-master` key of the
  key store, whose key id is recorded with the record;
- both layers carry associated data binding the token and the merchant, so a
  record copied under another token, or edited to name another merchant, fails
  to decrypt.

Why per record and not per batch: a record is written once (the same card at
the same merchant finds its record and writes nothing), so a per-batch key would
save one small AES operation per *new* card while widening what one leaked data
key exposes and tying unrelated cards' lifecycles together.

Storage is a local RocksDB (`rocksdict`, raw bytes) under `<data_dir>/vault`;
writes are synced, because a token that went downstream must stay revealable.
RocksDB admits one writer process: the vault belongs to whoever tokenizes
(the worker's ingest, or `paystream produce --tokenize`). In production the vault
is its own service inside the PCI zone (docs/security.md).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from rocksdict import Options, Rdict, WriteOptions

from connectors.vault.keys import DATA_KEY_BYTES, NONCE_BYTES, VAULT_MASTER, KeyStore, KeyStoreError, Wrapped
from connectors.vault.tokenizer import TOKEN_PATTERN, StoreTokenizer
from schemas.cards import CardError, check_pan

RECORD_FORMAT = 1
BIN_DIGITS = 6
MERCHANT_ID_MAX_LEN = 64
MAX_RECORD_BYTES = 4096


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
class RewrapReport:
    rewrapped: int
    current: int  # already under the active master key
    active_key_id: str


def _aad(layer: bytes, token: str, merchant_id: str) -> bytes:
    return b"paystream-vault\x1f" + layer + b"\x1f" + token.encode() + b"\x1f" + merchant_id.encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Vault:
    def __init__(self, path: Path, keys: KeyStore) -> None:
        self.path = Path(path)
        self._keys = keys
        self._tokenizer = StoreTokenizer(keys)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        try:
            self._db = Rdict(str(self.path), options)
        except Exception as e:  # rocksdict raises a bare Exception, e.g. on the LOCK file
            raise VaultError("-", f"cannot open {self.path}: {str(e)[:200]} (one process at a time owns a vault)") from None
        self._closed = False
        self._sync = WriteOptions()
        self._sync.sync = True
        self._unsynced = WriteOptions()  # inside group_commit: one fsync for the group, at its end
        self._group_depth = 0

    def __repr__(self) -> str:
        return f"Vault({str(self.path)!r}, token_key={self._tokenizer.key_id!r})"

    def close(self) -> None:
        """Release the RocksDB lock; idempotent."""
        if not self._closed:
            self._db.close()
            self._closed = True

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def group_commit(self) -> Iterator[None]:
        """New cards written inside are synced to disk together when the block ends
        (one fsync instead of one per card). The caller sends no token downstream
        before the block has ended: a token that travelled must stay revealable."""
        self._group_depth += 1
        try:
            yield
        finally:
            self._group_depth -= 1
            if self._group_depth == 0 and not self._closed:
                self._db.flush_wal(True)

    # --- tokenization (ingest, or a producer inside the PCI zone) ---

    def tokenize(self, merchant_id: str, pan: str) -> VaultCard:
        """Store the PAN (once per merchant and card) and return what may travel downstream."""
        if not merchant_id or len(merchant_id) > MERCHANT_ID_MAX_LEN or not merchant_id.isprintable():
            raise CardError("invalid_merchant_id", f"merchant_id must be 1..{MERCHANT_ID_MAX_LEN} printable chars")
        digits, brand = check_pan(pan)
        token = self._tokenizer.token(merchant_id, digits)
        card = VaultCard(token, digits[:BIN_DIGITS], digits[-4:], brand)
        if self._db.get(token.encode()) is not None:
            return card  # same card, same merchant: the record exists, nothing to write
        data_key = os.urandom(DATA_KEY_BYTES)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, digits.encode(), _aad(b"pan", token, merchant_id))
        wrapped = self._keys.wrap(data_key, _aad(b"dek", token, merchant_id))
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
        self._db.put(token.encode(), json.dumps(record).encode(), self._unsynced if self._group_depth else self._sync)
        return card

    def token(self, merchant_id: str, pan: str) -> str:
        """`streams.stages.ingest.TokenizerT`: ingest stores the PAN here as it tokenizes.
        Raises CardError for a number the vault refuses."""
        return self.tokenize(merchant_id, pan).token

    def card(self, token: str) -> VaultCard | None:
        """BIN, last 4 and brand of a token, without decrypting; None if unknown."""
        record = self._record(token)
        return None if record is None else VaultCard(token, record["bin"], record["last4"], record["brand"])

    # --- the provider edge only ---

    def reveal(self, token: str) -> str:
        """The PAN of a token. Only the provider edge calls this; never log the result."""
        record = self._record(token)
        if record is None:
            raise VaultError(token, "no such token")
        merchant_id = record["merchant_id"]
        try:
            data_key = self._keys.unwrap(self._wrapped(token, record), _aad(b"dek", token, merchant_id))
        except KeyStoreError as e:
            raise VaultError(token, f"data key cannot be unwrapped ({e}): the record was tampered with, moved, or its master key is gone") from None
        try:
            pan = AESGCM(data_key).decrypt(_decode(token, record, "nonce"), _decode(token, record, "ciphertext"), _aad(b"pan", token, merchant_id))
        except InvalidTag:
            raise VaultError(token, "ciphertext failed authentication: tampered with or moved from another token") from None
        return pan.decode()

    # --- maintenance ---

    def rewrap(self) -> RewrapReport:
        """Re-wrap every data key not under the active vault-master key (after a
        rotation), so old master keys can eventually be retired. The PAN ciphertext
        is untouched; each record is rewritten on its own, so an interrupted run is
        simply resumed by running it again."""
        active = self._keys.active(VAULT_MASTER).key_id
        rewrapped = current = 0
        for token, record in self._records():
            if record["key_id"] == active:
                current += 1
                continue
            aad = _aad(b"dek", token, record["merchant_id"])
            try:
                data_key = self._keys.unwrap(self._wrapped(token, record), aad)
            except KeyStoreError as e:
                raise VaultError(token, f"cannot rewrap: {e}") from None
            wrapped = self._keys.wrap(data_key, aad)
            record = record | {"key_id": wrapped.key_id, "wrapped_key": _b64(wrapped.blob)}
            self._db.put(token.encode(), json.dumps(record).encode(), self._sync)
            rewrapped += 1
        return RewrapReport(rewrapped, current, active)

    def key_ids_in_use(self) -> dict[str, int]:
        """How many records each vault-master key wraps (before retiring a key)."""
        counts: dict[str, int] = {}
        for _, record in self._records():
            counts[record["key_id"]] = counts.get(record["key_id"], 0) + 1
        return counts

    # --- internals ---

    def _records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for raw_key in self._db.keys():
            token = raw_key.decode("ascii", "replace")
            record = self._record(token)
            assert record is not None  # listed a moment ago; nothing deletes
            yield token, record

    def _record(self, token: str) -> dict[str, Any] | None:
        if not TOKEN_PATTERN.match(token):
            raise VaultError(token[:40], "not a token (tok_ + 32 base32 chars)")
        raw = self._db.get(token.encode())
        if raw is None:
            return None
        if len(raw) > MAX_RECORD_BYTES:
            raise VaultError(token, f"record larger than {MAX_RECORD_BYTES} bytes")
        try:
            record = json.loads(raw)
            fields = ("merchant_id", "key_id", "wrapped_key", "nonce", "ciphertext", "bin", "last4", "brand")
            if record.get("format") != RECORD_FORMAT or not all(isinstance(record.get(f), str) for f in fields):
                raise ValueError("fields")
        except (ValueError, UnicodeDecodeError):
            raise VaultError(token, "record is malformed") from None
        return record

    def _wrapped(self, token: str, record: dict[str, Any]) -> Wrapped:
        return Wrapped(record["key_id"], _decode(token, record, "wrapped_key"))


def _decode(token: str, record: dict[str, Any], field: str) -> bytes:
    try:
        return base64.b64decode(record[field], validate=True)
    except ValueError:
        raise VaultError(token, f"record field {field} is not base64") from None


def open_vault(data_dir: Path, keys: KeyStore) -> Vault:
    """The vault of a data dir (`PAYSTREAM_DATA_DIR`)."""
    return Vault(Path(data_dir) / "vault", keys)
