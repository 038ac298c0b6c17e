"""The feature spec: windows count what they should, state round-trips through bytes,
and the online path (one tx at a time, state through bytes between steps, dict input)
gives exactly the offline path's features for the same history."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import (
    DAY_MS,
    FEATURE_NAMES,
    HOUR_MS,
    MAX_STATE_BYTES,
    CardState,
    EntityState,
    FeatureInputError,
    MerchantCounts,
    MerchantState,
    StateError,
    Txn,
    TxStates,
    Windows,
    apply_label,
    batch_features,
    compute,
    features,
    make_txn,
    to_ms,
    update,
)

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # a Monday
T0_MS = to_ms(T0)


def same(a, b) -> bool:
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def tx_dict(t: Txn) -> dict:
    return {
        "card_token": t.card,
        "merchant_id": t.merchant,
        "amount_minor": t.amount_minor,
        "currency": t.currency,
        "occurred_at": T0 + timedelta(milliseconds=t.ts_ms - T0_MS),
        "ip": t.ip,
        "device": t.device,
    }


def online(events) -> list:
    """The stream's way: every state lives as bytes between steps (a RocksDB table),
    the tx arrives as the scorer's dict."""
    db: dict[tuple[str, str], bytes] = {}

    def load(kind, key, cls):
        raw = db.get((kind, key))
        return None if raw is None else cls.from_bytes(raw)

    out = []
    for kind, ev in events:
        if kind == "label":
            card, merchant, revealed_ms, fraud = ev
            c, m = load("card", card, CardState), load("merchant", merchant, MerchantState)
            apply_label(c, m, revealed_ms, fraud)
            if c is not None:
                db["card", card] = c.to_bytes()
            if m is not None:
                db["merchant", merchant] = m.to_bytes()
            continue
        d = tx_dict(ev)
        states = TxStates(
            load("card", ev.card, CardState) or CardState(),
            load("merchant", ev.merchant, MerchantState) or MerchantState(),
            load("ip", ev.ip, EntityState) if ev.ip else None,
            load("device", ev.device, EntityState) if ev.device else None,
        )
        out.append(features(d, states))
        update(states, d)
        db["card", ev.card] = states.card.to_bytes()
        db["merchant", ev.merchant] = states.merchant.to_bytes()
        if ev.ip:
            db["ip", ev.ip] = states.ip.to_bytes()
        if ev.device:
            db["device", ev.device] = states.device.to_bytes()
        assert all(len(v) <= MAX_STATE_BYTES for v in db.values())
    return out


txns = st.builds(
    Txn,
    ts_ms=st.integers(0, 40 * DAY_MS),
    card=st.sampled_from(["c1", "c2", "c3"]),
    merchant=st.sampled_from(["m1", "m2", "m3", "m4"]),
    amount_minor=st.integers(0, 10**9),
    currency=st.sampled_from(["USD", "USD", "USD", "JPY", "KWD"]),
    ip=st.sampled_from([None, "10.0.0.1", "10.0.0.2"]),
    device=st.sampled_from([None, "d1"]),
)


@st.composite
def histories(draw):
    txs = sorted(draw(st.lists(txns, max_size=60)), key=lambda t: t.ts_ms)
    # Occasional late (out-of-order) events, as a partition may deliver them.
    if txs and draw(st.booleans()):
        late = txs[-1]._replace(ts_ms=max(0, txs[-1].ts_ms - draw(st.integers(0, 2 * DAY_MS))))
        txs.append(late)
    events = []
    for t in txs:
        if draw(st.integers(0, 3)) == 0:
            events.append(("label", (t.card, t.merchant, t.ts_ms, draw(st.booleans()))))
        events.append(("tx", Txn(T0_MS + t.ts_ms, *t[1:])))
    return events


@settings(max_examples=60, deadline=None)
@given(histories())
def test_online_equals_offline(events):
    events = [(k, e if k == "tx" else (e[0], e[1], T0_MS + e[2], e[3])) for k, e in events]
    offline = list(batch_features(events))
    assert len(offline) == sum(1 for k, _ in events if k == "tx")
    for a, b in zip(online(events), offline, strict=True):
        assert same(a, b), (a, b)


def test_online_equals_offline_on_a_simulated_history():
    from models.simulate import SimConfig, simulate

    df = simulate(SimConfig(days=10, n_cards=60, n_merchants=40, seed=3))
    events = [
        ("tx", Txn(int(r.ts_ms), r.card_id, r.merchant_id, int(r.amount_minor), r.currency)) for r in df.itertuples()
    ]
    offline = list(batch_features(events))
    assert len(offline) > 500
    assert any(v.card_cnt_1h > 0 for v in offline)
    for a, b in zip(online(events), offline, strict=True):
        assert same(a, b)


def tx(minutes: float, amount: int = 1000, card="c", merchant="m", currency="USD", ip=None):
    return Txn(T0_MS + int(minutes * 60_000), card, merchant, amount, currency, ip, None)


def run(history, probe):
    states = TxStates()
    for t in history:
        update(states, t)
    return features(probe, states)


def test_windows_count_prior_transactions_only():
    hist = [tx(0, 100), tx(0.5, 200), tx(30, 300), tx(60 * 20, 400)]
    fv = run(hist, tx(60 * 20 + 0.5, 999))
    assert fv.card_cnt_1m == 1 and fv.card_sum_1m == 4.0
    assert fv.card_cnt_1h == 1
    # 1 d window at 1 h buckets: buckets 0..20 are all inside the 24 of them.
    assert fv.card_cnt_1d == 4 and fv.card_sum_1d == 10.0
    assert fv.card_tx_total == 4
    assert fv.card_secs_since_last == 30.0
    fv8d = run(hist, tx(60 * 24 * 8, 999))
    assert fv8d.card_cnt_1d == 0 and fv8d.card_cnt_7d == 0 and fv8d.card_cnt_30d == 4


def test_window_expiry_is_bucket_aligned():
    w = Windows((("1h", HOUR_MS, 60), ("1d", DAY_MS, 24)))  # 1-minute, 1-hour buckets
    w.add(T0_MS + 30_000, 5)  # minute 0
    assert w.read(T0_MS + 59 * 60_000 + 59_999) == ([1, 1], [5, 5])  # minute 59: inside
    assert w.read(T0_MS + 60 * 60_000) == ([0, 1], [0, 5])  # minute 60: bucket 0 left
    # a late event older than a window is not counted there; one inside is
    w.add(T0_MS + 2 * HOUR_MS, 1)
    w.add(T0_MS, 1)
    w.add(T0_MS + 2 * HOUR_MS - 10 * 60_000, 7)
    assert w.read(T0_MS + 2 * HOUR_MS) == ([2, 4], [8, 14])
    for bs in w.buckets:
        assert [b[0] for b in bs] == sorted({b[0] for b in bs})


def test_window_holds_at_most_its_buckets():
    w = Windows((("1d", DAY_MS, 24),))
    for i in range(1000):
        w.add(T0_MS + i * 10 * 60_000, 1)
    assert len(w.buckets[0]) <= 24
    assert w.counts[0] == sum(b[1] for b in w.buckets[0])


def test_amount_z_score_is_exact_against_history():
    amounts = [1000, 1200, 800, 1000, 1100]
    hist = [tx(i * 60, a) for i, a in enumerate(amounts)]
    fv = run(hist, tx(600, 5000))
    mean = sum(amounts) / len(amounts)
    sd = math.sqrt(sum((a - mean) ** 2 for a in amounts) / len(amounts))
    assert fv.card_amount_z == pytest.approx((5000 - mean) / sd, rel=1e-12)
    assert fv.card_amount_ratio_30d == pytest.approx(5000 / mean)
    assert math.isnan(run(hist[:1], tx(600, 5000)).card_amount_z)


def test_foreign_currency_stays_out_of_amount_history():
    fv = run([tx(0, 1000), tx(1, 1000)], tx(2, 100_000, currency="JPY"))
    assert fv.card_foreign_currency == 1.0 and math.isnan(fv.card_amount_z)
    assert fv.amount_major == 100_000.0  # JPY has no minor unit


def test_time_features():
    fv = run([], tx(60 * 24 * 5 + 60 * 3))  # Saturday 03:00 UTC
    assert (fv.hour_of_day, fv.is_weekend, fv.is_night) == (3.0, 1.0, 1.0)
    fv = run([], tx(60 * 14))  # Monday 14:00
    assert (fv.hour_of_day, fv.is_weekend, fv.is_night) == (14.0, 0.0, 0.0)
    fv = run([tx(0)], tx(60 * 24 * 3))
    assert fv.card_age_days == 3.0


def test_new_merchant_and_recent_merchants_bounded():
    hist = [tx(i, merchant=f"m{i}") for i in range(40)]
    assert run(hist, tx(50, merchant="m39")).card_new_merchant == 0.0
    assert run(hist, tx(50, merchant="m0")).card_new_merchant == 1.0  # forgotten (bound 16)


def test_merchant_risk_uses_revealed_labels_only():
    states = TxStates()
    for i in range(4):
        update(states, tx(i, merchant="m"))
    probe = tx(10, merchant="m")
    assert math.isnan(features(probe, states).merch_risk_7d)
    apply_label(states.card, states.merchant, T0_MS + 5 * 60_000, True)
    apply_label(states.card, states.merchant, T0_MS + 6 * 60_000, False)
    fv = features(probe, states)
    assert fv.merch_risk_7d == 0.5 and fv.merch_labeled_30d == 2
    assert fv.card_fraud_labels_30d == 1
    assert fv.merch_cnt_1h == 4


def test_merchant_counts_read_elsewhere_give_the_same_features():
    """The stream's keys stage reads the merchant's counts and sends them on; the
    features from them are the features from the state itself."""
    states = TxStates()
    for i in range(4):
        update(states, tx(i, merchant="m"))
    apply_label(None, states.merchant, T0_MS + 5 * 60_000, True)
    probe = tx(10, merchant="m")
    counts = states.merchant.counts(probe.ts_ms)
    assert counts == MerchantCounts(4, 4, 4, 4, 1, 1, 1, 1)
    wire = MerchantCounts.from_record(counts._asdict())
    assert same(compute(probe, TxStates(states.card), wire), compute(probe, states))


@pytest.mark.parametrize(
    "record",
    [
        {},
        dict.fromkeys(MerchantCounts._fields, 0) | {"cnt_1d": -1},
        dict.fromkeys(MerchantCounts._fields, 0) | {"cnt_1d": True},
        dict.fromkeys(MerchantCounts._fields, 0) | {"fraud_7d": 1},
        None,
    ],
)
def test_merchant_counts_that_cannot_be_a_merchants_are_refused(record):
    with pytest.raises(FeatureInputError):
        MerchantCounts.from_record(record)


def test_ip_and_device_missing_are_nan():
    fv = run([tx(0, ip="1.2.3.4")], tx(1, ip="1.2.3.4"))
    assert fv.ip_cnt_1h == 1.0 and math.isnan(fv.device_cnt_1h)
    assert math.isnan(run([], tx(1)).ip_cnt_1h)


def test_feature_names_are_fixed_and_unique():
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == 34
    assert FEATURE_NAMES[0] == "amount_major"


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"card_token": "c", "merchant_id": "m", "amount_minor": "10", "currency": "USD", "occurred_at": T0},
        {"card_token": "c", "merchant_id": "m", "amount_minor": -1, "currency": "USD", "occurred_at": T0},
        {"card_token": "c", "merchant_id": "m", "amount_minor": 10, "currency": "XXX", "occurred_at": T0},
        {"card_token": "c", "merchant_id": "m", "amount_minor": 10, "currency": "USD", "occurred_at": "now"},
        {
            "card_token": "c",
            "merchant_id": "m",
            "amount_minor": 10,
            "currency": "USD",
            "occurred_at": datetime(2026, 1, 1),
        },
        {"card_token": "", "merchant_id": "m", "amount_minor": 10, "currency": "USD", "occurred_at": T0},
        "not a dict",
    ],
)
def test_garbled_input_is_a_feature_input_error(bad):
    with pytest.raises(FeatureInputError):
        make_txn(bad)


@pytest.mark.parametrize("cls", [CardState, MerchantState, EntityState])
def test_garbled_state_bytes_are_a_state_error(cls):
    good = cls().to_bytes()
    for bad in (b"", b"\x09\x01", good[:-1] + b"\xff", good + b"\x00", b"\x01" + bytes([9]) + good[2:]):
        with pytest.raises(StateError):
            cls.from_bytes(bad)


def test_busy_card_state_stays_under_the_bound():
    states = TxStates()
    for i in range(20_000):  # one every 2 min over ~28 days, every bucket non-empty
        t = tx(i * 2, amount=10**12 + i, merchant=f"m{i}")
        update(states, t)
    raw = states.card.to_bytes()
    assert len(raw) <= MAX_STATE_BYTES
    again = CardState.from_bytes(raw)
    assert again.to_bytes() == raw


# --- per method (docs/fraud.md, "Every method") ---


def test_each_methods_features_name_columns_of_the_one_vector():
    from models.features import METHOD_FEATURES, MODELLED_METHODS

    assert MODELLED_METHODS == {"card", "wallet", "bank_transfer", "bnpl", "crypto"}
    assert set(METHOD_FEATURES) == {"wallet", "bank_transfer", "bnpl", "crypto"}
    for view in METHOD_FEATURES.values():
        assert set(view.values()) <= set(FEATURE_NAMES) and not any(n.startswith("card_") for n in view)


def test_an_instruments_features_are_its_own_history_read_by_the_methods_names():
    from models.features import method_features

    t0 = datetime(2026, 11, 25, 10, tzinfo=UTC)
    wallet = {
        "card_token": "wallet:apple_pay:wtok_1",
        "method": "wallet",
        "merchant_id": "m_1",
        "amount_minor": 1_000,
        "currency": "USD",
        "device": "dev-1",
    }
    states = TxStates()
    for i in range(4):
        tx = wallet | {"occurred_at": t0.replace(second=10 * i)}
        fv = features(tx, states)
        update(states, tx)
    named = method_features("wallet", fv)
    assert named["wallet_cnt_1m"] == 3 and named["wallet_tx_total"] == 3 and named["device_cnt_1h"] == 3
    assert named["wallet_new_merchant"] == 0 and named["amount_major"] == 10.0
    crypto = method_features("crypto", fv)
    assert crypto["address_cnt_1h"] == 3 and "device_cnt_1h" not in crypto
    assert method_features("card", fv) == dict(zip(FEATURE_NAMES, fv))
