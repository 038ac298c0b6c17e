"""Blocklists (cards, BINs, IPs, devices, emails, and the other methods' instruments:
wallet accounts, bank accounts, mandates, BNPL customers, crypto addresses) as pure state.

The record shape is `schemas/avro/FraudBlockEntry.avsc`; the lead's compacted topic
is keyed by `entry.key` (`kind:value`), so the latest entry per key is the state.
Every worker folds the topic into its own `Blocklist` with `apply(entry)`.

Emails are never stored: the value of an email entry is the SHA-256 of the trimmed,
lower-cased address (`email_digest`), and transactions are matched the same way.
Card entries hold the card token, never a card number; bank account entries hold the
SHA-256 of the normalized account number (`account_digest`), never the number. The
sanctioned crypto addresses paystream ships (`models/blocklists/crypto_addresses.toml`)
seed every worker's list (`shipped_blocklist`), dated at the epoch so that any
operator's entry for the same address, block or unblock, wins.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.cards import contains_pan

KINDS = ("card", "bin", "ip", "device", "email", "wallet", "bank_account", "mandate", "bnpl_customer", "crypto_address")
MAX_ENTRIES = 1_000_000
MAX_VALUE_LEN = 128
_BIN = re.compile(r"^[0-9]{6,8}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CRYPTO_ADDRESS = re.compile(r"^[A-Za-z0-9]{8,100}$")
# The scorer's tx field each kind matches (streams/stages/risk.py `tx_of` fills the
# non-card ones from the create's instrument: docs/fraud.md, "Every method").
_TX_FIELD = {
    "card": "card_token",
    "bin": "bin",
    "ip": "ip",
    "device": "device",
    "email": "email",
    "wallet": "wallet_token",
    "bank_account": "bank_account_hash",
    "mandate": "mandate",
    "bnpl_customer": "bnpl_customer",
    "crypto_address": "crypto_address",
}
SHIPPED_CRYPTO_ADDRESSES = Path(__file__).parent / "blocklists" / "crypto_addresses.toml"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BlocklistError(ValueError):
    """An entry that cannot be applied; the message says why."""


def email_digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def account_digest(account: str) -> str:
    """A bank account number or IBAN as it is matched: SHA-256 of its letters and
    digits, upper-cased (spaces and dashes are presentation)."""
    return hashlib.sha256("".join(c for c in account.upper() if c.isalnum()).encode()).hexdigest()


def crypto_address_key(address: str) -> str:
    """An address as it is matched: a 0x (EVM) address is case-insensitive (its mixed
    case is only a checksum), so lower-cased; other chains' addresses are kept as given."""
    return address.lower() if address[:2].lower() == "0x" else address


@dataclass(frozen=True)
class BlockEntry:
    kind: str
    value: str
    action: str  # "block" | "unblock"
    reason: str
    occurred_at: datetime
    actor: str | None = None
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BlocklistError(f"kind {self.kind!r} is not one of {KINDS}")
        if self.action not in ("block", "unblock"):
            raise BlocklistError(f"action {self.action!r} is not block or unblock")
        if not isinstance(self.occurred_at, datetime) or self.occurred_at.tzinfo is None:
            raise BlocklistError("occurred_at must be a timezone-aware datetime")
        if self.expires_at is not None and (
            not isinstance(self.expires_at, datetime) or self.expires_at.tzinfo is None
        ):
            raise BlocklistError("expires_at must be a timezone-aware datetime")
        v = self.value
        if not isinstance(v, str) or not v or len(v) > MAX_VALUE_LEN:
            raise BlocklistError(f"value must be 1..{MAX_VALUE_LEN} characters")
        if contains_pan(v) or contains_pan(self.reason or ""):
            raise BlocklistError("a card number is not accepted: block the card token")
        if self.kind == "bin" and not _BIN.match(v):
            raise BlocklistError("a BIN is 6 to 8 digits")
        if self.kind == "ip":
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise BlocklistError(f"{v!r} is not an IP address") from None
        if self.kind == "email" and not _DIGEST.match(v):
            raise BlocklistError("an email entry holds email_digest(address), not the address")
        if self.kind == "bank_account" and not _DIGEST.match(v):
            raise BlocklistError("a bank_account entry holds account_digest(number), not the number")
        if self.kind == "crypto_address" and (not _CRYPTO_ADDRESS.match(v) or v != crypto_address_key(v)):
            raise BlocklistError("a crypto address is 8..100 letters and digits (a 0x address lower-cased)")

    @property
    def key(self) -> str:
        """The compacted topic's key: the latest entry per key is the state."""
        return f"{self.kind}:{self.value}"

    @classmethod
    def make(
        cls,
        kind: str,
        value: str,
        action: str,
        reason: str,
        occurred_at: datetime,
        actor: str | None = None,
        expires_at: datetime | None = None,
    ) -> BlockEntry:
        """Normalizes the value first: an email address becomes its digest, an IP its
        canonical form."""
        if kind == "email" and isinstance(value, str) and "@" in value:
            value = email_digest(value)
        if kind == "ip" and isinstance(value, str):
            try:
                value = str(ipaddress.ip_address(value.strip()))
            except ValueError:
                pass  # __post_init__ names the error
        if kind == "bank_account" and isinstance(value, str) and not _DIGEST.match(value):
            value = account_digest(value)
        if kind == "crypto_address" and isinstance(value, str):
            value = crypto_address_key(value.strip())
        return cls(kind, value, action, reason, occurred_at, actor, expires_at)

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "action": self.action,
            "reason": self.reason,
            "actor": self.actor,
            "occurred_at": self.occurred_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> BlockEntry:
        try:
            return cls(
                record["kind"],
                record["value"],
                record["action"],
                record["reason"],
                record["occurred_at"],
                record.get("actor"),
                record.get("expires_at"),
            )
        except KeyError as e:
            raise BlocklistError(f"record lacks {e.args[0]}") from None


class Blocklist:
    """The blocked values per kind; the latest entry per key wins, by event time."""

    def __init__(self) -> None:
        self._entries: dict[str, BlockEntry] = {}
        # The kinds any entry is of: a tx is matched only against those (the shipped
        # list is crypto addresses alone, so most creates look nothing up at all).
        self._kinds: set[str] = set()

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.action == "block")

    def apply(self, entry: BlockEntry) -> None:
        current = self._entries.get(entry.key)
        if current is not None and current.occurred_at > entry.occurred_at:
            return  # an older entry arriving late does not undo a newer one
        if current is None and len(self._entries) >= MAX_ENTRIES:
            raise BlocklistError(f"blocklist is full ({MAX_ENTRIES} keys)")
        self._entries[entry.key] = entry
        self._kinds.add(entry.kind)

    def entries(self, kind: str | None = None) -> list[BlockEntry]:
        """The blocks in force (unblocks are history), sorted by key."""
        return sorted(
            (e for e in self._entries.values() if e.action == "block" and kind in (None, e.kind)),
            key=lambda e: e.key,
        )

    def hits(self, tx: Mapping[str, Any], at: datetime) -> tuple[str, ...]:
        """Reason codes (`blocklist_<kind>`) of the blocks in force at `at` that match."""
        if not self._entries:
            return ()
        found = []
        for kind in KINDS:
            if kind not in self._kinds:
                continue
            value = tx.get(_TX_FIELD[kind])
            if not isinstance(value, str) or not value:
                continue
            keys = [value]
            if kind == "email":
                keys = [email_digest(value)]
            elif kind == "crypto_address":
                keys = [crypto_address_key(value)]
            elif kind == "bin":
                keys = [value[:n] for n in (6, 7, 8) if len(value) >= n]
            for v in keys:
                e = self._entries.get(f"{kind}:{v}")
                if e is not None and e.action == "block" and (e.expires_at is None or at < e.expires_at):
                    found.append(f"blocklist_{kind}")
                    break
        return tuple(found)


def shipped_entries(path: Path = SHIPPED_CRYPTO_ADDRESSES) -> list[BlockEntry]:
    """The sanctioned crypto addresses paystream ships, as block entries dated at the
    epoch (any operator's entry for the same key is newer and wins). Raises
    BlocklistError naming the file when it is unusable: a worker must not start
    without its sanctioned-address list."""
    try:
        raw = tomllib.loads(path.read_text())
        listed = raw["address"]
        version = raw["version"]
        if not isinstance(listed, list) or len(listed) > MAX_ENTRIES:
            raise BlocklistError("address must be a list")
        return [
            BlockEntry.make(
                "crypto_address",
                a["value"],
                "block",
                f"sanctioned ({a['program']}, list {version})",
                _EPOCH,
                actor="shipped-list",
            )
            for a in listed
        ]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, BlocklistError) as e:
        raise BlocklistError(f"{path}: {type(e).__name__}: {e}") from None


def shipped_blocklist() -> Blocklist:
    """A blocklist holding the shipped entries (a worker then folds the topic over it)."""
    blocklist = Blocklist()
    for entry in shipped_entries():
        blocklist.apply(entry)
    return blocklist
