"""The event store's chain: canonical bytes, sealing with Ed25519, verifying links
and signatures, through the Avro round trip the events really take."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from streams.domain.chain import (
    ChainError,
    ChainHead,
    Signer,
    canonical_bytes,
    event_hash,
    link_problem,
    seal,
    signature_problem,
    verify,
)
from tests.unit.streams.ledger_support import event

EVENTS = Codec("PaymentEvent")
# Test fixtures only: fixed seeds so failures reproduce. Real keys come from the key store.
KEY_V1 = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY_V2 = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
SIGNER = Signer("sig-v1", KEY_V1)
PUBLIC = {"sig-v1": KEY_V1.public_key(), "sig-v2": KEY_V2.public_key()}


def sealed_chain(events: list[dict], partition: int = 0, signer: Signer = SIGNER) -> tuple[list[dict], ChainHead]:
    head = ChainHead.genesis(partition)
    out = []
    for e in events:
        sealed, head = seal(e, head, signer)
        out.append(sealed)
    return out, head


def test_seal_fills_the_chain_fields_and_verifies() -> None:
    genesis = ChainHead.genesis(3)
    sealed, head = seal(event("authorized", amount=100), genesis, SIGNER)
    assert (sealed["chain_seq"], sealed["prev_hash"], sealed["key_id"]) == (1, genesis.hash, "sig-v1")
    assert len(sealed["signature"]) == 64
    assert head == ChainHead(3, 1, event_hash(sealed))
    assert verify(sealed, genesis, PUBLIC) == head


def test_seal_is_deterministic_and_does_not_touch_its_input() -> None:
    e = event("captured", amount=100)
    before = dict(e)
    assert seal(e, ChainHead.genesis(0), SIGNER) == seal(dict(e), ChainHead.genesis(0), SIGNER)
    assert e == before


def test_a_chain_survives_the_avro_round_trip() -> None:
    at = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)  # Avro keeps milliseconds: so does the hash
    events, head = sealed_chain([event("authorized", amount=100, at=at), event("captured", amount=60, version=2)])
    prev = ChainHead.genesis(0)
    for e in events:
        prev = verify(EVENTS.decode(EVENTS.encode(e, check=True)), prev, PUBLIC)
    assert prev == head


def test_genesis_binds_the_partition() -> None:
    assert ChainHead.genesis(0).hash != ChainHead.genesis(1).hash
    (first,), _ = sealed_chain([event("authorized", amount=100)], partition=0)
    with pytest.raises(ChainError) as err:
        verify(first, ChainHead.genesis(1), PUBLIC)
    assert err.value.reason == "broken_link"


def test_head_bytes_round_trip() -> None:
    _, head = sealed_chain([event("authorized", amount=1)], partition=7)
    assert ChainHead.from_bytes(7, head.to_bytes()) == head
    with pytest.raises(ValueError):
        ChainHead.from_bytes(7, head.to_bytes()[:-1])


# --- canonical form ---


def test_canonical_form_ignores_key_order_signature_and_nulls() -> None:
    e = event("captured", amount=100)
    assert canonical_bytes(e) == canonical_bytes(dict(reversed(list(e.items()))))
    assert canonical_bytes(e) == canonical_bytes(e | {"signature": b"x" * 64})
    # a newer schema's optional field (null in old events) leaves old bytes unchanged
    assert canonical_bytes(e) == canonical_bytes(e | {"acquirer_ref": None})
    assert canonical_bytes(e) != canonical_bytes(e | {"acquirer_ref": "A1"})


def test_canonical_form_refuses_floats() -> None:
    with pytest.raises(ChainError) as err:
        canonical_bytes(event("captured") | {"amount_minor": 1.5})
    assert err.value.reason == "not_canonical"


FIELDS = sorted(set(event("captured")) - {"signature", "chain_seq", "prev_hash", "key_id"})


@settings(max_examples=60)
@given(st.sampled_from(FIELDS))
def test_changing_any_field_breaks_the_signature(name: str) -> None:
    (sealed,), _ = sealed_chain([event("captured", amount=100, fee=3)])
    value = sealed[name]
    changed = (
        {int: lambda v: v + 1, str: lambda v: v + "x", datetime: lambda v: v.replace(year=2030)}[type(value)](value)
        if value is not None
        else "x"
    )
    assert signature_problem(sealed | {name: changed}, PUBLIC) == "bad_signature"


# --- verification failures, one reason each ---


def test_tampered_amount_is_a_bad_signature() -> None:
    (sealed,), _ = sealed_chain([event("captured", amount=100)])
    assert signature_problem(sealed, PUBLIC) is None
    assert signature_problem(sealed | {"amount_minor": 10_000}, PUBLIC) == "bad_signature"


def test_signature_by_another_key_under_a_known_id_is_bad() -> None:
    (sealed,), _ = sealed_chain([event("captured", amount=100)], signer=Signer("sig-v1", KEY_V2))
    assert signature_problem(sealed, PUBLIC) == "bad_signature"


def test_rotated_keys_still_verify_old_events() -> None:
    (old,), head = sealed_chain([event("authorized", amount=100)])
    new, _ = seal(event("captured", amount=100, version=2), head, Signer("sig-v2", KEY_V2))
    assert signature_problem(old, PUBLIC) is None and signature_problem(new, PUBLIC) is None


def test_foreign_key_id_is_unknown() -> None:
    foreign = Ed25519PrivateKey.generate()
    (sealed,), _ = sealed_chain([event("captured", amount=100)], signer=Signer("attacker", foreign))
    assert signature_problem(sealed, PUBLIC) == "unknown_key"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"signature": None}, "unsigned"),
        ({"key_id": None}, "unsigned"),
        ({"chain_seq": 0}, "unsigned"),
        ({"signature": b"\x00" * 63}, "bad_signature"),
        ({"prev_hash": b"\x00" * 31}, "unchained"),
        ({"key_id": "k" * 65}, "unknown_key"),
    ],
)
def test_malformed_chain_fields(change: dict, reason: str) -> None:
    (sealed,), _ = sealed_chain([event("captured", amount=100)])
    assert signature_problem(sealed | change, PUBLIC) == reason


def test_link_problems() -> None:
    events, _ = sealed_chain([event("authorized", amount=100, version=v) for v in (1, 2, 3)])
    genesis = ChainHead.genesis(0)
    head1 = verify(events[0], genesis, PUBLIC)
    assert link_problem(events[1], head1) is None
    assert link_problem(events[2], head1) == "seq_gap"  # events[1] deleted
    assert link_problem(events[0], head1) == "seq_behind"  # replayed / reordered
    other, _ = sealed_chain([event("voided", amount=100, version=9), event("voided", amount=1, version=10)])
    assert link_problem(other[1], head1) == "broken_link"  # a fork: seq 2 of another history
    with pytest.raises(ChainError) as err:
        verify(events[2], head1, PUBLIC)
    assert err.value.reason == "seq_gap"


def test_signer_keeps_its_key_out_of_repr() -> None:
    assert repr(SIGNER) == "Signer(key_id='sig-v1')"
