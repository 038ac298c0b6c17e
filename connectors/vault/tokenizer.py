"""Card tokens: a keyed HMAC of (merchant, PAN).

The same card at the same merchant always yields the same token, so velocity
features work per card, while the token reveals nothing without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

KEY_BYTES = 32


class Tokenizer:
    def __init__(self, key: bytes, key_id: str) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"tokenization key must be at least {KEY_BYTES} bytes")
        self._key = key
        self.key_id = key_id

    def __repr__(self) -> str:  # never show the key
        return f"Tokenizer(key_id={self.key_id!r})"

    def token(self, merchant_id: str, pan: str) -> str:
        mac = hmac.new(self._key, f"{merchant_id}\x1f{pan}".encode(), hashlib.sha256).digest()
        return "tok_" + base64.b32encode(mac[:20]).decode().lower()


def load_or_create_key(path: Path) -> bytes:
    """Read a key file, creating it (0600, random) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
        try:
            os.link(tmp, path)  # atomic: a concurrent creator's key wins, never a torn file
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise ValueError(f"key file {path} is shorter than {KEY_BYTES} bytes")
    return key


def tokenizer_from_dir(keys_dir: Path) -> Tokenizer:
    return Tokenizer(load_or_create_key(keys_dir / "token-hmac-v1.key"), key_id="token-hmac-v1")
