"""Merchant API keys and per-key rate limits.

A key is `sk_<key id>_<secret>`: the id finds the record, the secret is checked
against its scrypt hash (`<data_dir>/api_keys.json` never holds a secret). The
secret is 256 random bits, so a hash per check would be enough; scrypt costs a few
ms, hence a bounded cache of keys already verified in this process (keyed by an
HMAC under a per-process random key, so the cache holds no secret either).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

KEY_PATTERN = re.compile(r"^sk_([0-9a-f]{16})_([0-9A-Za-z_-]{43})$")
MERCHANT_PATTERN = re.compile(r"^[\x21-\x7e]{1,64}$")  # printable, as ingest demands
MAX_KEYS = 10_000
VERIFIED_CACHE_MAX = 4_096
# scrypt: 16 MiB, a few ms. Parameters are stored per key so they can be raised later.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    merchant_id: str
    salt: str
    hash: str
    n: int
    r: int
    p: int
    created_at: str
    revoked: bool = False


def _hash(secret: str, salt: bytes, n: int, r: int, p: int) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20).hex()


def new_key(merchant_id: str, created_at: str) -> tuple[str, KeyRecord]:
    """(the secret key, shown once; its record, stored)."""
    if not MERCHANT_PATTERN.match(merchant_id):
        raise KeyFileError("merchant id must be 1..64 printable ASCII characters")
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_bytes(16)
    record = KeyRecord(
        key_id,
        merchant_id,
        salt.hex(),
        _hash(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P),
        SCRYPT_N,
        SCRYPT_R,
        SCRYPT_P,
        created_at,
    )
    return f"sk_{key_id}_{secret}", record


def load(path: Path) -> dict[str, KeyRecord]:
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {r["key_id"]: KeyRecord(**r) for r in raw["keys"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KeyFileError(f"{path}: unreadable API key file ({type(e).__name__})") from None


def save(keys: dict[str, KeyRecord], path: Path) -> None:
    if len(keys) > MAX_KEYS:
        raise KeyFileError(f"at most {MAX_KEYS} API keys")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"keys": [asdict(k) for k in keys.values()]}, f, indent=1)
    os.replace(tmp, path)  # atomic: a running API never reads half a file


class ApiKeys:
    """Verifies bearer keys against the file, re-read when it changes (a revoke
    takes effect on the next request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, KeyRecord] = {}
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._cache_key = secrets.token_bytes(32)

    def authenticate(self, key: str) -> tuple[str, str] | None:
        """(key id, merchant id) of a valid key, or None (unknown, malformed, revoked)."""
        self._reload()
        m = KEY_PATTERN.match(key)
        if m is None:
            return None
        record = self._keys.get(m.group(1))
        if record is None or record.revoked:
            return None
        tag = hmac.digest(self._cache_key, key.encode(), "sha256")
        if self._verified.get(tag) == record.key_id:
            self._verified.move_to_end(tag)
            return record.key_id, record.merchant_id
        expected = _hash(m.group(2), bytes.fromhex(record.salt), record.n, record.r, record.p)
        if not hmac.compare_digest(expected, record.hash):
            return None
        self._verified[tag] = record.key_id
        while len(self._verified) > VERIFIED_CACHE_MAX:
            self._verified.popitem(last=False)
        return record.key_id, record.merchant_id

    def _reload(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._keys = load(self.path) if stamp is not None else {}
            self._verified.clear()  # a revoked key must not live on in the cache
            self._stamp = stamp


@dataclass
class TokenBucket:
    """`rate_per_s` sustained, `burst` at once; up to `queue_max` requests may wait
    for a future token (they are told how long), the rest are refused with the time
    after which one would be admitted. Time is passed in (monotonic seconds)."""

    rate_per_s: float
    burst: int
    queue_max: int
    tokens: float = field(init=False)
    updated_s: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        assert self.rate_per_s > 0 and self.burst >= 1 and self.queue_max >= 0
        self.tokens = float(self.burst)

    def acquire(self, now_s: float) -> tuple[bool, float]:
        """(admitted, seconds): admitted after waiting `seconds`, or refused; retry after `seconds`."""
        if self.updated_s is not None:
            self.tokens = min(float(self.burst), self.tokens + (now_s - self.updated_s) * self.rate_per_s)
        self.updated_s = now_s
        # Tokens may go negative by the queue: each waiter owns a future token.
        if self.tokens - 1 >= -self.queue_max:
            self.tokens -= 1
            return True, max(0.0, -self.tokens / self.rate_per_s)
        return False, (-self.queue_max + 1 - self.tokens) / self.rate_per_s


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


@dataclass
class RateLimits:
    """One bucket per key id, bounded (least recently used dropped: a dropped key
    starts again with a full burst, which only errs on the merchant's side)."""

    rate_per_s: float
    burst: int
    queue_max: int
    max_keys: int = MAX_KEYS
    _buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)

    def acquire(self, key_id: str, now_s: float) -> tuple[bool, float]:
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(self.rate_per_s, self.burst, self.queue_max)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key_id)
        return bucket.acquire(now_s)
