"""The console's per-event chain verdicts (streams/domain/chain.py `verdicts`): blocks
linked and signed as the payments stage writes them, through the Avro round trip,
then tampered with in each way the verdict must name."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from streams.domain.chain import BROKEN, UNSIGNED, VERIFIED, ChainHead, Signer, Verdict, link, sign_block, verdicts
from tests.unit.streams.ledger_support import event

EVENTS = Codec("PaymentEvent")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a fixed test key: failures reproduce
SIGNER = Signer("sig-v1", KEY)
PUBLIC = {"sig-v1": KEY.public_key()}
PARTITION = 2


def blocks(sizes: list[int], sign_last: bool = True) -> list[dict]:
    """Events of payments pay_0, pay_1, ... in blocks of `sizes`, each block signed on
    its last event (the final block only if `sign_last`), decoded as a reader sees them."""
    head, out, n = ChainHead.genesis(PARTITION), [], 0
    for b, size in enumerate(sizes):
        block = []
        for _ in range(size):
            linked, head = link(
                event("authorized", amount=100 + n, payment_id=f"pay_{n % 3}", version=n + 1), head, SIGNER.key_id
            )
            block.append(linked)
            n += 1
        if sign_last or b < len(sizes) - 1:
            block[-1] = sign_block(block[-1], SIGNER)
        out += block
    return [EVENTS.decode(EVENTS.encode(e, check=True)) for e in out]


def ids(window: list[dict]) -> set[str]:
    return {e["event_id"] for e in window}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.integers(0, 4))
def test_every_event_of_signed_blocks_verifies_from_any_start(sizes: list[int], skip: int) -> None:
    window = blocks(sizes)
    skip = min(skip, len(window) - 1)
    # A reader starting later still verifies what it has the predecessor of.
    got = verdicts(PARTITION, window[skip:], ids(window[skip + 1 :]), PUBLIC)
    assert set(got.values()) <= {Verdict(VERIFIED)} and len(got) == len(window) - skip - 1


def test_a_block_awaiting_its_signature_is_unsigned_and_earlier_blocks_verified() -> None:
    window = blocks([2, 3], sign_last=False)
    got = verdicts(PARTITION, window, ids(window), PUBLIC)
    assert [got[e["event_id"]].verdict for e in window] == [VERIFIED] * 2 + [UNSIGNED] * 3


def test_tampering_is_broken_and_named() -> None:
    window = blocks([3, 2])
    changed = [dict(e) for e in window]
    changed[1]["amount_minor"] += 1  # its hash changes: the link from seq 3 breaks, the block's signature fails
    got = verdicts(PARTITION, changed, ids(changed), PUBLIC)
    assert got[changed[0]["event_id"]] == Verdict(BROKEN, "broken_link")  # its block no longer links past seq 2
    assert got[changed[2]["event_id"]] == Verdict(BROKEN, "broken_link")
    assert got[changed[3]["event_id"]] == Verdict(VERIFIED)

    forged = [dict(e) for e in window]
    forged[2]["signature"] = bytes(64)
    got = verdicts(PARTITION, forged, ids(forged), PUBLIC)
    assert {got[e["event_id"]] for e in forged[:3]} == {Verdict(BROKEN, "bad_signature")}

    assert verdicts(PARTITION, window, ids(window), {})[window[0]["event_id"]] == Verdict(BROKEN, "unknown_key")


def test_a_missing_predecessor_or_a_wrong_partition_is_broken() -> None:
    window = blocks([2, 2])
    gap = window[:1] + window[2:]
    assert verdicts(PARTITION, gap, {window[2]["event_id"]}, PUBLIC)[window[2]["event_id"]] == Verdict(
        BROKEN, "seq_gap"
    )
    first = window[0]["event_id"]
    assert verdicts(PARTITION + 1, window, {first}, PUBLIC)[first] == Verdict(BROKEN, "broken_link")  # not its genesis


def test_an_unchained_event_is_unsigned() -> None:
    e = EVENTS.decode(EVENTS.encode(event("authorized", amount=1), check=True))
    assert verdicts(PARTITION, [e], {e["event_id"]}, PUBLIC)[e["event_id"]] == Verdict(UNSIGNED, "unchained")
