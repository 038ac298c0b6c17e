"""The signed, hash-chained event store. Pure: no Kafka, no key files.

Every PaymentEvent of a partition is chained to the one before it, and each block
of events is signed once, on its last event:

    canonical = canonical_bytes(event)            # every field but `signature`
    hash      = sha256(prev_hash || canonical)    # prev_hash: the previous event's hash
    signature = Ed25519(private key of key_id).sign(hash)   # the block's last event only

A block is what the payments stage writes for one partition in one batch (one
transaction). The last event's hash covers every earlier event through the
prev_hash links, so one signature authenticates the block: an event without a
signature is authentic once a later signed event of its partition links to it, and
an unsigned tail is a failure of the audit. Signing every event cost ~60 µs each
(7% of the payments stage); a block costs one. `seal` signs a block of one.

`chain_seq` (1-based), `prev_hash` and `key_id` are inside `canonical`, so the
position and the key are signed too. The first event of partition p links to
`ChainHead.genesis(p)`, so a chain cannot be moved to another partition.

Canonical form: JSON, not the Avro body. Keys sorted, no whitespace, UTF-8; fields
whose value is null are left out; bytes as lowercase hex; timestamps as integer
epoch milliseconds (what Avro's timestamp-millis keeps); no floats. Why JSON: the
signature must not depend on the reader's schema version. A decoded record gains
every field a newer schema adds (with its default), and the Avro body of the same
record under two schema versions differs, so an Avro canonical form breaks old
signatures at the first schema change. With nulls omitted, adding an optional
field (default null) leaves every old event's canonical bytes unchanged; and an
auditor in any language can rebuild the bytes from the decoded record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from schemas.errors import ReasonedError
from schemas.state import canonical_json
from streams.domain.ledger import to_ms

DOMAIN = b"paystream/PaymentEvent/chain/v1\n"  # separates these hashes from any other use of the keys
HASH_LEN = 32
SIGNATURE_LEN = 64
MAX_KEY_ID_LEN = 64
MAX_CANONICAL_BYTES = 64 * 1024  # an event is < 2 KiB; a bound on what we hash and sign
CHAIN_FIELDS = ("chain_seq", "prev_hash", "key_id", "signature")


class ChainError(ReasonedError, ValueError):
    """An event that does not verify, or cannot be sealed. `reason` is a stable code."""


@dataclass(frozen=True)
class ChainHead:
    """The last sealed event of a partition: its seq and hash."""

    partition: int
    seq: int
    hash: bytes

    def __post_init__(self) -> None:
        assert type(self.partition) is int and self.partition >= 0, self.partition
        assert type(self.seq) is int and self.seq >= 0, self.seq
        assert isinstance(self.hash, bytes) and len(self.hash) == HASH_LEN

    @classmethod
    def genesis(cls, partition: int) -> ChainHead:
        return cls(partition, 0, hashlib.sha256(DOMAIN + b"genesis " + str(partition).encode()).digest())

    def to_bytes(self) -> bytes:
        """For a RocksDB table: seq (8 bytes big-endian) + hash. The partition is the key."""
        return self.seq.to_bytes(8, "big") + self.hash

    @classmethod
    def from_bytes(cls, partition: int, data: bytes) -> ChainHead:
        if len(data) != 8 + HASH_LEN:
            raise ValueError(f"chain head of {len(data)} bytes")
        return cls(partition, int.from_bytes(data[:8], "big"), bytes(data[8:]))


class Signs(Protocol):
    """What sealing needs: the id of the key that signs, and an Ed25519 signature."""

    key_id: str

    def sign(self, digest: bytes) -> bytes: ...


@dataclass(frozen=True)
class Signer:
    """A signing key and its id; key storage and rotation live elsewhere."""

    key_id: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        assert _valid_key_id(self.key_id), "key id: 1-64 printable characters"
        assert isinstance(self.private_key, Ed25519PrivateKey)

    def sign(self, digest: bytes) -> bytes:
        return self.private_key.sign(digest)


def _valid_key_id(key_id: Any) -> bool:
    return isinstance(key_id, str) and 0 < len(key_id) <= MAX_KEY_ID_LEN and key_id.isprintable()


_LEAVES = frozenset((str, int, bool))  # exact types: `_plain` returns them unchanged


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return to_ms(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise ChainError("not_canonical", f"{type(value).__name__} has no canonical form")


def canonical_bytes(event: Mapping[str, Any]) -> bytes:
    """The signed form of an event: everything but the signature (see module doc)."""
    try:
        # Most fields are str or int leaves, taken as they are without a call per field.
        body = {
            k: v if type(v) in _LEAVES else _plain(v) for k, v in event.items() if k != "signature" and v is not None
        }
    except (TypeError, ValueError) as e:
        raise ChainError("not_canonical", str(e)[:200]) from None
    try:
        data = DOMAIN + canonical_json(body)
    except TypeError as e:  # an int past 64 bits: no Avro long holds it either
        raise ChainError("not_canonical", str(e)[:200]) from None
    if len(data) > MAX_CANONICAL_BYTES:
        raise ChainError("event_too_large", f"{len(data)} canonical bytes")
    return data


def event_hash(event: Mapping[str, Any]) -> bytes:
    """sha256(prev_hash || canonical_bytes(event)); the event's own prev_hash is used."""
    prev = event.get("prev_hash")
    if not isinstance(prev, bytes) or len(prev) != HASH_LEN:
        raise ChainError("unchained", "prev_hash is not a 32-byte hash")
    return hashlib.sha256(prev + canonical_bytes(event)).digest()


def link(event: Mapping[str, Any], prev: ChainHead, key_id: str) -> tuple[dict[str, Any], ChainHead]:
    """The event chained after `prev` under `key_id`, unsigned (its block's signature
    comes with the block's last event), and the partition's new head."""
    assert _valid_key_id(key_id), key_id
    linked = {**event, "chain_seq": prev.seq + 1, "prev_hash": prev.hash, "key_id": key_id, "signature": None}
    return linked, ChainHead(prev.partition, prev.seq + 1, event_hash(linked))


def sign_block(last: Mapping[str, Any], signer: Signs) -> dict[str, Any]:
    """The block's last event, signed over its hash (which covers the block).
    Deterministic: Ed25519 signatures are, so a retried transaction that ends its
    block on the same event writes the same bytes."""
    assert last["key_id"] == signer.key_id and last["signature"] is None, "sign a linked, unsigned event"
    signature = signer.sign(event_hash(last))
    assert len(signature) == SIGNATURE_LEN, "an Ed25519 signature is 64 bytes"
    return dict(last) | {"signature": signature}


def seal(event: Mapping[str, Any], prev: ChainHead, signer: Signs) -> tuple[dict[str, Any], ChainHead]:
    """The event chained after `prev` and signed (a block of one), and the new head."""
    linked, head = link(event, prev, signer.key_id)
    return sign_block(linked, signer), head


def awaits_signature(event: Mapping[str, Any]) -> bool:
    """Linked but unsigned: a block's event before its last, authentic once a later
    signed event of its partition links to it."""
    prev = event.get("prev_hash")
    return (
        event.get("signature") is None
        and _valid_key_id(event.get("key_id"))
        and type(event.get("chain_seq")) is int
        and event["chain_seq"] > 0
        and isinstance(prev, bytes)
        and len(prev) == HASH_LEN
    )


def signature_problem(event: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """None if the event is signed by one of `public_keys` (key id -> key) over
    its own hash; else `unsigned`, `unknown_key`, `unchained` or `bad_signature`."""
    key_id, signature = event.get("key_id"), event.get("signature")
    if key_id is None or signature is None or not event.get("chain_seq"):
        return "unsigned"
    if not _valid_key_id(key_id) or key_id not in public_keys:
        return "unknown_key"
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
        return "bad_signature"
    try:
        public_keys[key_id].verify(signature, event_hash(event))
    except ChainError as e:
        return e.reason
    except InvalidSignature:
        return "bad_signature"
    return None


def link_problem(event: Mapping[str, Any], prev: ChainHead) -> str | None:
    """None if the event is the next link after `prev`; else `seq_gap` (events
    missing before it), `seq_behind` (a position already taken: a duplicate, a
    reorder or a fork) or `broken_link` (right position, wrong prev_hash)."""
    seq = event.get("chain_seq")
    if type(seq) is not int:
        return "unsigned"
    if seq > prev.seq + 1:
        return "seq_gap"
    if seq <= prev.seq:
        return "seq_behind"
    return None if event.get("prev_hash") == prev.hash else "broken_link"


def verify(event: Mapping[str, Any], prev: ChainHead, public_keys: Mapping[str, Ed25519PublicKey]) -> ChainHead:
    """The new head if `event` is authentic and the next link after `prev`;
    ChainError with the reason otherwise."""
    problem = signature_problem(event, public_keys) or link_problem(event, prev)
    if problem is not None:
        raise ChainError(problem, f"partition {prev.partition} seq {event.get('chain_seq')!r} after {prev.seq}")
    return ChainHead(prev.partition, event["chain_seq"], event_hash(event))


VERIFIED, UNSIGNED, BROKEN = "verified", "unsigned", "broken"


@dataclass(frozen=True)
class Verdict:
    """One event's standing in its partition's chain: `verified` (linked to the event
    before it and vouched for by a valid block signature at or after it), `unsigned`
    (linked, but no signature follows it yet in what was read) or `broken` (`reason`
    names the first problem found)."""

    verdict: str
    reason: str | None = None


def verdicts(
    partition: int, window: list[Mapping[str, Any]], event_ids: set[str], public_keys: Mapping[str, Ed25519PublicKey]
) -> dict[str, Verdict]:
    """The verdict of each event of `event_ids` found in `window`: one partition's
    events in offset order, read from before the first of them (so the one before it
    is there) to the end of the log or past a signature after the last of them.
    Checks each event's link to its predecessor (seq - 1, or the partition's genesis),
    then walks the links forward to the first signed event and checks its signature."""
    by_seq: dict[int, int] = {}
    for i, e in enumerate(window):
        if type(e.get("chain_seq")) is int:
            by_seq.setdefault(e["chain_seq"], i)
    out: dict[str, Verdict] = {}
    for i, e in enumerate(window):
        if e.get("event_id") in event_ids:
            out[e["event_id"]] = _verdict(partition, window, by_seq, i, public_keys)
    return out


def _verdict(
    partition: int,
    window: list[Mapping[str, Any]],
    by_seq: dict[int, int],
    i: int,
    public_keys: Mapping[str, Ed25519PublicKey],
) -> Verdict:
    event = window[i]
    seq = event.get("chain_seq")
    if type(seq) is not int or seq < 1 or not isinstance(event.get("prev_hash"), bytes):
        return Verdict(UNSIGNED, "unchained")
    if seq == 1:
        expected = ChainHead.genesis(partition).hash
    elif seq - 1 in by_seq and by_seq[seq - 1] < i:
        expected = event_hash(window[by_seq[seq - 1]])
    else:
        return Verdict(BROKEN, "seq_gap")  # the event before it is not where the log puts it
    if event["prev_hash"] != expected:
        return Verdict(BROKEN, "broken_link")
    j = i
    while True:
        problem = signature_problem(window[j], public_keys)
        if problem is None:
            return Verdict(VERIFIED)
        if problem != "unsigned" or not awaits_signature(window[j]):
            return Verdict(BROKEN, problem)
        if j + 1 == len(window):
            return Verdict(UNSIGNED, "awaiting_block_signature")
        nxt, head = window[j + 1], ChainHead(partition, window[j]["chain_seq"], event_hash(window[j]))
        problem = link_problem(nxt, head)
        if problem is not None:
            return Verdict(BROKEN, problem)
        j += 1
