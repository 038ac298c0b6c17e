"""Card tokens: a keyed HMAC of (merchant, PAN).

The same card at the same merchant always yields the same token, so velocity
features work per card, while the token reveals nothing without the key.
The key is the active `token-hmac` key of the key store (`connectors/vault/keys.py`);
`token-hmac-v1.key`, the key file of earlier versions, is read as that key, so
tokens issued before key management stay the same.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from connectors.vault.keys import KEY_BYTES, TOKEN_HMAC, FileKeyStore, KeyStore

# "tok_" + base32 of the first 20 bytes of the MAC (160 bits, lower case, no padding).
TOKEN_PATTERN = re.compile(r"^tok_[a-z2-7]{32}$")


def token_message(merchant_id: str, pan: str) -> bytes:
    return f"{merchant_id}\x1f{pan}".encode()


# Two base32 characters (lower case) per 10 bits: 160 bits are 16 lookups.
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_BASE32_PAIRS = tuple(a + b for a in _BASE32 for b in _BASE32)
_PAIR_SHIFTS = tuple(range(150, -1, -10))


def token_from_mac(digest: bytes) -> str:
    # base64.b32encode(digest[:20]).lower() without its pure-Python 5-byte loop and
    # padding handling (20 bytes need none): one token per card ingest sees.
    n = int.from_bytes(digest[:20], "big")
    return "tok_" + "".join([_BASE32_PAIRS[(n >> shift) & 0x3FF] for shift in _PAIR_SHIFTS])


class Tokenizer:
    """Tokens under a key held in memory (tests, and keys already loaded)."""

    def __init__(self, key: bytes, key_id: str) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"tokenization key must be at least {KEY_BYTES} bytes")
        self._key = key
        self.key_id = key_id

    def __repr__(self) -> str:  # never show the key
        return f"Tokenizer(key_id={self.key_id!r})"

    def token(self, merchant_id: str, pan: str) -> str:
        return token_from_mac(hmac.new(self._key, token_message(merchant_id, pan), hashlib.sha256).digest())


class StoreTokenizer:
    """Tokens under a key store's active token-hmac key; the key stays in the store.

    The key id is fixed when built: a rotation takes effect at the next start, so
    one process never mixes two token keys.
    """

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self.key_id = store.active(TOKEN_HMAC).key_id

    def __repr__(self) -> str:
        return f"StoreTokenizer(key_id={self.key_id!r})"

    def token(self, merchant_id: str, pan: str) -> str:
        return token_from_mac(self._store.mac(TOKEN_HMAC, token_message(merchant_id, pan), self.key_id).digest)


def tokenizer_from_dir(keys_dir: Path) -> StoreTokenizer:
    """The tokenizer of a worker: keys under `keys_dir`, created on first use."""
    store = FileKeyStore(keys_dir)
    store.init()
    return StoreTokenizer(store)
