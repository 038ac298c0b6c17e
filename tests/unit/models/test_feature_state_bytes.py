"""The feature states' bytes: packed and read a whole list of varints at a time, they
are byte for byte what the per-field writer wrote before (kept here as the format's
reference), so states in RocksDB and in the changelogs restore as they were."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import (
    DAY_MS,
    HOUR_MS,
    STATE_VERSION,
    CardState,
    EntityState,
    MerchantCounts,
    MerchantState,
    StateError,
    Txn,
    TxStates,
    Windows,
    apply_label,
    compute,
    update,
)

T0_MS = 1_793_577_600_000  # 2026-11-02T00:00Z


# --- the format as the per-field writer wrote it (models/features.py before it packed lists)


def _uint(buf: bytearray, v: int) -> None:
    assert v >= 0
    while v >= 0x80:
        buf.append((v & 0x7F) | 0x80)
        v >>= 7
    buf.append(v)


def _sint(buf: bytearray, v: int) -> None:
    _uint(buf, v * 2 if v >= 0 else -v * 2 - 1)


def _windows(buf: bytearray, w: Windows) -> None:
    for bs in w.buckets:
        _uint(buf, len(bs))
        prev = 0
        for bid, c, t in bs:
            _sint(buf, bid - prev)
            _uint(buf, c)
            _sint(buf, t)
            prev = bid


def reference_bytes(state: CardState | MerchantState | EntityState) -> bytes:
    buf = bytearray((STATE_VERSION, state._KIND))
    if isinstance(state, CardState):
        _sint(buf, state.first_ms)
        _sint(buf, state.last_ms)
        _uint(buf, state.n)
        cur = (state.currency or "").encode()
        _uint(buf, len(cur))
        buf += cur
        _uint(buf, state.m_n)
        _sint(buf, state.m_s1)
        _uint(buf, state.m_s2)
        _windows(buf, state.windows)
        _uint(buf, len(state.merchants))
        for h in state.merchants:
            _uint(buf, h)
        _windows(buf, state.labels)
    elif isinstance(state, MerchantState):
        _windows(buf, state.windows)
        _windows(buf, state.labels)
    else:
        _windows(buf, state.windows)
    return bytes(buf)


def fields(state: CardState | MerchantState | EntityState) -> tuple:
    ws = [state.windows] + ([state.labels] if not isinstance(state, EntityState) else [])
    out = tuple((list(map(list, w.buckets)), w.counts, w.totals) for w in ws)
    if isinstance(state, CardState):
        out += (state.first_ms, state.last_ms, state.n, state.currency, state.m_n, state.m_s1, state.m_s2)
        out += (state.merchants,)
    return out


def states_of(txs: list[Txn], labels: list[tuple[int, bool]]) -> TxStates:
    states = TxStates()
    for t in txs:
        update(states, t)
    for at, fraud in labels:
        apply_label(states.card, states.merchant, at, fraud)
    return states


events = st.builds(
    Txn,
    # Late and early events alike: buckets out of arrival order, windows expiring.
    ts_ms=st.integers(T0_MS - 40 * DAY_MS, T0_MS + 40 * DAY_MS),
    card=st.just("c"),
    merchant=st.sampled_from(["m1", "m2", "m3"] + [f"m{i}" for i in range(20)]),
    amount_minor=st.sampled_from([0, 1, 63, 64, 127, 128, 10**6, 10**12, 2**63]),
    currency=st.sampled_from(["USD", "JPY", "KWD"]),
    ip=st.sampled_from([None, "10.0.0.1"]),
    device=st.sampled_from([None, "d1"]),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(events, max_size=80),
    st.lists(st.tuples(st.integers(T0_MS - 40 * DAY_MS, T0_MS + 40 * DAY_MS), st.booleans()), max_size=20),
)
def test_states_pack_byte_for_byte_as_the_reference_and_read_it_back(txs, labels):
    states = states_of(txs, labels)
    for state in (states.card, states.merchant, states.ip, states.device):
        if state is None:
            continue
        raw = reference_bytes(state)
        assert state.to_bytes() == raw
        again = type(state).from_bytes(raw)
        assert fields(again) == fields(state)
        assert again.to_bytes() == raw


def _history(seed: int, n: int) -> TxStates:
    rnd = random.Random(seed)
    states = TxStates()
    ts = T0_MS
    for _ in range(n):
        ts += rnd.choice([0, 1_000, 30_000, 600_000, 3_600_000, DAY_MS // 3])
        late = ts - rnd.choice([0, 0, 0, 5_000, 2 * HOUR_MS, 3 * DAY_MS])
        t = Txn(
            late,
            "c",
            f"m{rnd.randrange(40)}",
            rnd.choice([0, 1, 127, 128, 10**6, 10**12]),
            rnd.choice(["USD", "USD", "JPY"]),
            rnd.choice([None, "10.0.0.1"]),
            rnd.choice([None, "d1"]),
        )
        update(states, t)
        if rnd.random() < 0.2:
            apply_label(states.card, states.merchant, late + rnd.randrange(DAY_MS), rnd.random() < 0.5)
    return states


# sha256 of the bytes the per-field writer wrote for these histories (measured at fee0570).
GOLDEN = {
    (1, 0, "card"): "3b0e4842b28d6b39ec725a6459fb943f5f1d658f4d0ee991004dd50f2c182f31",
    (1, 0, "merchant"): "494ea659823c4b2beb4bb7d05bfc7e505afe4815bb7ab8e4d1810e9f3787ce68",
    (2, 3, "card"): "193966befdb74930a14c34cc3b00cb3de2ff822011817100d72e07d017bf38dd",
    (2, 3, "merchant"): "4ed8d705896a33b14b232d9e749729f998a73f6692652e3886cc0d30b21a3987",
    (2, 3, "ip"): "1b9022b2d5ae9527cbc415ea3103c6ca9a230e8dfacb63c85aea24c544788adf",
    (2, 3, "device"): "b0c21b1a3aed641ff41120c975fdffb5ae9516a3b03f7ab6defab3a8d0ff98d5",
    (3, 60, "card"): "6b183d845472f1ad001108a434c8d58dd2273201120f484a31cfcb20272b4336",
    (3, 60, "merchant"): "15b6cbb65f085152c9595cddda1f1fd0475b9da008f48eee307d8fbed5ab2ac0",
    (3, 60, "ip"): "7205ef439674a8b35cb4460915073e5531a909e6a16e6c3758981caf0b07aec0",
    (3, 60, "device"): "2e6a6c5a3eb0e836d5c02ab1e323152e4f91eaaf1837f26fba982aae21d15211",
    (4, 400, "card"): "5c1fd4f7c80d94a25dad0f0dd1c420249e5ef5de1a245b73ce49b0d4aef167f4",
    (4, 400, "merchant"): "c056d763d4a8cb5a091592b68e28daf97d0d95b14475afa350348009b93fc766",
    (4, 400, "ip"): "9e140ad911cb59454e9d17f28c8c2baf65a087c3c0506d8cd2ed7a906e29fa1a",
    (4, 400, "device"): "fab0cee6176f72e1ec490c7f099800406444ed15333e322243de46197544c5df",
}


@pytest.mark.parametrize("seed,n", [(1, 0), (2, 3), (3, 60), (4, 400)])
def test_the_bytes_are_the_ones_written_before(seed, n):
    states = _history(seed, n)
    for name in ("card", "merchant", "ip", "device"):
        state = getattr(states, name)
        if state is None:
            assert (seed, n, name) not in GOLDEN
            continue
        raw = state.to_bytes()
        assert hashlib.sha256(raw).hexdigest() == GOLDEN[seed, n, name]
        assert fields(type(state).from_bytes(raw)) == fields(state)


def test_a_varint_written_longer_than_needed_reads_as_before():
    # 0 as two bytes (0x80 0x00): the per-field reader took it; so does this one.
    assert EntityState.from_bytes(bytes((STATE_VERSION, 3, 0x80, 0x00, 0x00))).windows.counts == [0, 0]
    card = CardState.from_bytes(bytes((STATE_VERSION, 1, 0x81, 0x00, 0x01, 0x01, 0x00)) + bytes(10))
    assert (card.first_ms, card.last_ms, card.n, card.currency) == (-1, -1, 1, None)


@pytest.mark.parametrize("cls", [CardState, MerchantState, EntityState])
def test_garbled_varints_are_a_state_error(cls):
    good = cls().to_bytes()
    too_long = good[:2] + b"\xff" * 41 + b"\x01" + good[3:]
    # A card's first value is its first_ms; a window state's, its first window's bucket count.
    over_bound = good[:2] + (b"\x02\x02\x01\x41" if cls is CardState else b"\x7f") + good[3:]
    for bad in (good[:2] + b"\x80", good[:-1], too_long, over_bound):
        with pytest.raises(StateError):
            cls.from_bytes(bad)


def test_a_card_state_whose_currency_is_not_utf8_is_a_state_error():
    # The risk stage's loader falls back to rules on a StateError; anything else parked every create of the card.
    card = CardState()
    card.currency = "USD"
    good = card.to_bytes()
    assert CardState.from_bytes(good).currency == "USD"
    bad = good.replace(b"USD", b"\xff\xfeU", 1)
    with pytest.raises(StateError, match="UTF-8"):
        CardState.from_bytes(bad)


def test_buckets_out_of_order_are_a_state_error():
    # One window of two buckets, the second's id delta 0 (not after the first).
    raw = bytes((STATE_VERSION, 3, 2, 2, 1, 0, 0, 1, 0, 0))
    with pytest.raises(StateError, match="out of order"):
        EntityState.from_bytes(raw)


def test_a_state_without_its_merchant_reads_the_counts_given_and_updates_the_rest():
    txs = [Txn(T0_MS + i * 70_000, "c", "m1", 100 + i, "USD", "10.0.0.1") for i in range(30)]
    probe = Txn(T0_MS + 31 * 70_000, "c", "m1", 500, "USD", "10.0.0.1")
    full = states_of(txs, [(T0_MS + 5_000, True)])
    counts = full.merchant.counts(probe.ts_ms)
    assert isinstance(counts, MerchantCounts)
    bare = TxStates(CardState.from_bytes(full.card.to_bytes()), None, EntityState.from_bytes(full.ip.to_bytes()))
    assert compute(probe, bare, counts) == compute(probe, full)
    update(bare, probe)
    update(full, probe)
    assert bare.card.to_bytes() == full.card.to_bytes() and bare.merchant is None
    with pytest.raises(ValueError):
        compute(probe, bare)
