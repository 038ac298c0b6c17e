"""THE feature spec: one incremental, bounded state machine per entity, shared by the
stream (risk agent), offline training and replay, so online and offline features
cannot drift.

Per transaction the caller does, in this order:

    fv = features(tx, states)   # reads the states as they are *before* the tx
    update(states, tx)          # then folds the tx into them

Labels (chargebacks, confirmed fraud, matured genuine transactions) are folded in
with `apply_label` when they are *revealed*, never earlier.

Windows are bucketed sliding windows (see docs/fraud.md for why): a window of span
W with k buckets counts the events whose bucket id `ts_ms // (W / k)` lies in the k
buckets ending at the bucket of the evaluation time. Integer-only (counts and sums of
minor units), so the same inputs give the same bits on every path.

State is serializable (`to_bytes` / `from_bytes`, a versioned varint format) for a
RocksDB table and bounded: every window holds at most k buckets, a card remembers at
most `RECENT_MERCHANTS` merchants, and a serialized state is at most `MAX_STATE_BYTES`.
"""

from __future__ import annotations

import math
import operator
import re
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from schemas.money import CURRENCY_EXPONENTS
from schemas.times import to_ms as datetime_to_ms

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# (name, span_ms, buckets). Resolution = span / buckets: 10 s, 1 min, 1 h, 6 h, 1 d.
CARD_WINDOWS = (
    ("1m", MINUTE_MS, 6),
    ("1h", HOUR_MS, 60),
    ("1d", DAY_MS, 24),
    ("7d", 7 * DAY_MS, 28),
    ("30d", 30 * DAY_MS, 30),
)
MERCHANT_WINDOWS = CARD_WINDOWS[1:]
ENTITY_WINDOWS = CARD_WINDOWS[1:3]  # IP and device: 1 h, 1 d
LABEL_WINDOWS = (("7d", 7 * DAY_MS, 28), ("30d", 30 * DAY_MS, 30))
CARD_LABEL_WINDOWS = (("30d", 30 * DAY_MS, 30),)

RECENT_MERCHANTS = 16
MAX_STATE_BYTES = 8_192
# Lifetime counters saturate here; features of older cards do not need more.
MAX_LIFETIME_TX = 2**40
SINCE_LAST_CAP_S = 30 * 86_400.0
STATE_VERSION = 1
_NAN = math.nan


class FeatureInputError(ValueError):
    """A transaction whose inputs cannot be turned into features (missing or garbled)."""


class StateError(ValueError):
    """Bytes that are not a state this version can read."""


# --------------------------------------------------------------------------- input


class Txn(NamedTuple):
    """A transaction as the feature code sees it: validated, integer time and money."""

    ts_ms: int
    card: str
    merchant: str
    amount_minor: int
    currency: str
    ip: str | None = None
    device: str | None = None


def is_event_time(at: Any) -> bool:
    """What `to_ms` takes: a timezone-aware datetime."""
    return isinstance(at, datetime) and at.tzinfo is not None


def to_ms(at: datetime) -> int:
    if not is_event_time(at):
        raise FeatureInputError("occurred_at must be a timezone-aware datetime")
    return datetime_to_ms(at)


def make_txn(tx: Mapping[str, Any]) -> Txn:
    """Validate a transaction dict (the scorer's contract) into a `Txn`.

    Keys: card_token, merchant_id, amount_minor (int), currency (ISO 4217),
    occurred_at (aware datetime), optional ip, device.
    """
    if not isinstance(tx, Mapping):
        raise FeatureInputError("a transaction must be a mapping")
    card = tx.get("card_token")
    merchant = tx.get("merchant_id")
    amount = tx.get("amount_minor")
    currency = tx.get("currency")
    if not isinstance(card, str) or not card:
        raise FeatureInputError("card_token missing")
    if not isinstance(merchant, str) or not merchant:
        raise FeatureInputError("merchant_id missing")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise FeatureInputError("amount_minor must be a non-negative integer")
    if currency not in CURRENCY_EXPONENTS:
        raise FeatureInputError(f"currency {currency!r} is not ISO 4217")
    ts_ms = to_ms(tx.get("occurred_at"))  # type: ignore[arg-type]
    ip = tx.get("ip") or None
    device = tx.get("device") or None
    if ip is not None and not isinstance(ip, str):
        raise FeatureInputError("ip must be a string")
    if device is not None and not isinstance(device, str):
        raise FeatureInputError("device must be a string")
    return Txn(ts_ms, card, merchant, amount, currency, ip, device)


# --------------------------------------------------------------------------- windows


class Windows:
    """Bucketed sliding windows of (count, sum) over one event stream, one per spec
    entry `(name, span_ms, k)`. Each holds at most k buckets `[bucket_id, count, sum]`,
    oldest first, plus running totals. One object per entity, not one per window:
    the loops are the hot path of replay."""

    __slots__ = ("res", "spans", "buckets", "counts", "totals")

    def __init__(self, spec: tuple[tuple[str, int, int], ...]) -> None:
        self.res, self.spans = _shape(spec)
        self.buckets: list[deque[list[int]]] = [deque() for _ in spec]
        self.counts = [0] * len(spec)
        self.totals = [0] * len(spec)

    def read(self, ts_ms: int) -> tuple[list[int], list[int]]:
        """(counts, sums) of each window ending at ts_ms's bucket; does not mutate."""
        counts = self.counts[:]
        totals = self.totals[:]
        for i, bs in enumerate(self.buckets):
            if bs and bs[0][0] <= ts_ms // self.res[i] - self.spans[i]:
                lo = ts_ms // self.res[i] - self.spans[i]
                if bs[-1][0] <= lo:  # all expired: the common case for short windows
                    counts[i] = totals[i] = 0
                    continue
                for b in bs:
                    if b[0] > lo:
                        break
                    counts[i] -= b[1]
                    totals[i] -= b[2]
        return counts, totals

    def add(self, ts_ms: int, value: int) -> None:
        counts, totals = self.counts, self.totals
        for i, bs, res, span in zip(range(len(self.res)), self.buckets, self.res, self.spans):
            bid = ts_ms // res
            if not bs:
                bs.append([bid, 1, value])
            else:
                last = bs[-1]
                if bid == last[0]:
                    last[1] += 1
                    last[2] += value
                elif bid > last[0]:
                    lo = bid - span
                    while bs and bs[0][0] <= lo:
                        old = bs.popleft()
                        counts[i] -= old[1]
                        totals[i] -= old[2]
                    bs.append([bid, 1, value])
                elif bid <= last[0] - span:
                    continue  # a late event older than this window: not counted
                else:
                    # A late event inside the window: counted in its own bucket.
                    j = len(bs) - 1
                    while j >= 0 and bs[j][0] > bid:
                        j -= 1
                    if j >= 0 and bs[j][0] == bid:
                        bs[j][1] += 1
                        bs[j][2] += value
                    else:
                        bs.insert(j + 1, [bid, 1, value])
                    assert len(bs) <= span
            counts[i] += 1
            totals[i] += value

    def _write(self, out: bytearray) -> None:
        """Appends the windows' varints: per window its bucket count (one byte: at most
        `_shape`'s bound), then per bucket (bucket id delta, count, sum), the delta and
        the sum zigzagged. One-byte values inline: most are."""
        append = out.append
        for bs in self.buckets:
            append(len(bs))
            prev = 0
            for bid, c, t in bs:
                d = bid - prev
                d = d * 2 if d >= 0 else -d * 2 - 1
                if d < 0x80:
                    append(d)
                else:
                    out += _varint(d)
                if 0 <= c < 0x80:
                    append(c)
                else:
                    out += _varint(c)
                t = t * 2 if t >= 0 else -t * 2 - 1
                if t < 0x80:
                    append(t)
                else:
                    out += _varint(t)
                prev = bid

    def _read(self, v: list[int], i: int) -> int:
        """Reads what `_write` wrote from v[i:] into this fresh object; the index after it.
        IndexError when v ends early (the caller's StateError)."""
        for w, bs in enumerate(self.buckets):
            n = v[i]
            i += 1
            if not n:
                continue
            if n > self.spans[w]:
                raise StateError(f"window holds {n} buckets, bound is {self.spans[w]}")
            end = i + 3 * n
            if end > len(v):
                raise IndexError(end)
            prev = count = total = 0
            triples = iter(v[i:end])
            i = end
            for d, c, t in zip(triples, triples, triples):
                bid = prev + ((d >> 1) ^ -(d & 1))
                t = (t >> 1) ^ -(t & 1)
                if bs and bid <= prev:
                    raise StateError("window buckets out of order")
                bs.append([bid, c, t])
                count += c
                total += t
                prev = bid
            self.counts[w] = count
            self.totals[w] = total
        return i


@lru_cache(maxsize=16)
def _shape(spec: tuple[tuple[str, int, int], ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(bucket resolution ms, bucket count) per window of a spec: once per spec, not per state."""
    assert all(span % k == 0 and k < 0x80 for _, span, k in spec)
    return tuple(span // k for _, span, k in spec), tuple(k for _, _, k in spec)


# --------------------------------------------------------------------------- varint codec
# A state is two bytes (version, kind), then unsigned LEB128 varints (signed values
# zigzagged) and, in a card's, one length-prefixed text. Written straight into one
# bytearray (one-byte values inline) and split a whole state at a time (a regex finds
# each varint's bytes in C), not a method call per field (docs/performance.md). Byte
# for byte the format written before (tests/unit/models/test_feature_state_bytes.py).

# One varint: continuation bytes (high bit set), then its last byte.
_VARINT = re.compile(rb"[\x80-\xff]*[\x00-\x7f]")
# A card's first four: first_ms, last_ms, n, the currency's length (its text follows).
_CARD_HEAD = re.compile(rb"([\x80-\xff]*[\x00-\x7f])" * 4)
_MAX_VARINT_BYTES = 41  # 7 * 41 bits: what the format has always accepted


def _zigzag(v: int) -> int:
    return v * 2 if v >= 0 else -v * 2 - 1


# Cached: the large values are mostly bucket ids of the current time, the same in
# every state written for a while (bounded, as everything).
@lru_cache(maxsize=4096)
def _varint(v: int) -> bytes:
    assert v >= 0
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _pack(out: bytearray, values: list[int]) -> None:
    for v in values:
        if 0 <= v < 0x80:
            out.append(v)
        else:
            out += _varint(v)


@lru_cache(maxsize=4096)
def _varint_value(tok: bytes) -> int:
    if len(tok) > _MAX_VARINT_BYTES:
        raise StateError("varint too long")
    v = 0
    for b in reversed(tok):
        v = (v << 7) | (b & 0x7F)
    return v


def _unpack(data: bytes, pos: int) -> list[int]:
    """Every varint of data[pos:] (all of it must be varints)."""
    # Every byte below 0x80 ends a varint, so a last byte below it leaves none out.
    if len(data) > pos and data[-1] >= 0x80:
        raise StateError("state bytes truncated")
    return [t[0] if len(t) == 1 else _varint_value(t) for t in _VARINT.findall(data, pos)]


def _open(data: bytes, kind: int) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateError("state must be bytes")
    data = bytes(data)
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"state of {len(data)} bytes exceeds {MAX_STATE_BYTES}")
    if len(data) < 2 or data[0] != STATE_VERSION or data[1] != kind:
        raise StateError("not a state of this kind and version")
    return data


def _read_windows(data: bytes, pos: int, *windows: Windows) -> list[int]:
    """Reads the windows from the varints of data[pos:]; the values left after them."""
    v = _unpack(data, pos)
    i = 0
    try:
        for w in windows:
            i = w._read(v, i)
    except IndexError:
        raise StateError("state bytes truncated") from None
    return v[i:]


def _done(rest: list[int]) -> None:
    if rest:
        raise StateError(f"{len(rest)} trailing values")


def _close(buf: bytearray) -> bytes:
    out = bytes(buf)
    assert len(out) <= MAX_STATE_BYTES, f"state of {len(out)} bytes over the bound"
    return out


# --------------------------------------------------------------------------- entity states


class CardState:
    """Per card token: velocity windows, lifetime amount moments, recent merchants,
    revealed fraud labels."""

    __slots__ = ("first_ms", "last_ms", "n", "currency", "m_n", "m_s1", "m_s2", "windows", "merchants", "labels")
    _KIND = 1

    def __init__(self) -> None:
        self.first_ms = -1  # -1: never seen
        self.last_ms = -1
        self.n = 0
        # Amount moments are kept in the card's first currency ("home"), as exact
        # integers: n, sum, sum of squares. Exact, so order and path cannot change them.
        self.currency: str | None = None
        self.m_n = 0
        self.m_s1 = 0
        self.m_s2 = 0
        self.windows = Windows(CARD_WINDOWS)
        self.merchants: list[int] = []  # crc32 of merchant ids, most recent first
        self.labels = Windows(CARD_LABEL_WINDOWS)

    def update(self, tx: Txn) -> None:
        ts = tx.ts_ms
        if self.first_ms < 0:
            self.first_ms = ts
            self.currency = tx.currency
        self.last_ms = max(self.last_ms, ts)
        self.n = min(self.n + 1, MAX_LIFETIME_TX)
        home = tx.currency == self.currency
        amount = tx.amount_minor if home else 0
        if home and self.m_n < MAX_LIFETIME_TX:
            self.m_n += 1
            self.m_s1 += amount
            self.m_s2 += amount * amount
        self.windows.add(ts, amount)
        h = _merchant_hash(tx.merchant)
        ms = self.merchants
        if h in ms:
            ms.remove(h)
        ms.insert(0, h)
        del ms[RECENT_MERCHANTS:]

    def apply_label(self, revealed_ms: int, fraud: bool) -> None:
        if fraud:
            self.labels.add(revealed_ms, 1)

    def to_bytes(self) -> bytes:
        cur = b"" if self.currency is None else self.currency.encode()
        out = bytearray((STATE_VERSION, self._KIND))
        _pack(out, [_zigzag(self.first_ms), _zigzag(self.last_ms), self.n, len(cur)])
        out += cur
        _pack(out, [self.m_n, _zigzag(self.m_s1), self.m_s2])
        self.windows._write(out)
        _pack(out, [len(self.merchants), *self.merchants])
        self.labels._write(out)
        return _close(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> CardState:
        data = _open(data, cls._KIND)
        m = _CARD_HEAD.match(data, 2)
        if m is None:
            raise StateError("state bytes truncated")
        head = [_varint_value(tok) for tok in m.groups()]
        pos = m.end()
        n = head[3]
        if n > 64 or pos + n > len(data):
            raise StateError("bad text field")
        s = cls()
        s.first_ms = (head[0] >> 1) ^ -(head[0] & 1)
        s.last_ms = (head[1] >> 1) ^ -(head[1] & 1)
        s.n = head[2]
        try:
            s.currency = data[pos : pos + n].decode() or None
        except UnicodeDecodeError:
            raise StateError("the currency is not UTF-8") from None
        v = _unpack(data, pos + n)
        if len(v) < 3:
            raise StateError("state bytes truncated")
        s.m_n, s.m_s1, s.m_s2 = v[0], (v[1] >> 1) ^ -(v[1] & 1), v[2]
        try:
            i = s.windows._read(v, 3)
            k = v[i]
            if k > RECENT_MERCHANTS:
                raise StateError("too many recent merchants")
            s.merchants = v[i + 1 : i + 1 + k]
            i = s.labels._read(v, i + 1 + k)
        except IndexError:
            raise StateError("state bytes truncated") from None
        _done(v[i:])
        return s


_PLAIN_INT = {int}


class MerchantCounts(NamedTuple):
    """What the merchant features are made of, read at one event time: integers, so
    they travel on the wire exactly (ValidatedCommand.merchant_features)."""

    cnt_1h: int
    cnt_1d: int
    cnt_7d: int
    cnt_30d: int
    labeled_7d: int
    labeled_30d: int
    fraud_7d: int
    fraud_30d: int

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> MerchantCounts:
        """From the wire record; FeatureInputError when it cannot be a merchant's counts."""
        try:
            counts = cls._make(_merchant_counts_of(record))
        except (KeyError, TypeError):
            raise FeatureInputError("merchant_features: missing fields") from None
        # Plain ints (the wire's) are checked at C speed, anything else one by one.
        fast = set(map(type, counts)) == _PLAIN_INT and min(counts) >= 0
        if not fast and not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise FeatureInputError("merchant_features: counts must be non-negative integers")
        if counts.fraud_7d > counts.labeled_7d or counts.fraud_30d > counts.labeled_30d:
            raise FeatureInputError("merchant_features: more fraud labels than labels")
        return counts


_merchant_counts_of = operator.itemgetter(*MerchantCounts._fields)


class MerchantState:
    """Per merchant (or terminal): transaction counts, and labels revealed so far as
    windows of (labeled count, fraud count) by reveal time."""

    __slots__ = ("windows", "labels")
    _KIND = 2

    def __init__(self) -> None:
        self.windows = Windows(MERCHANT_WINDOWS)
        self.labels = Windows(LABEL_WINDOWS)

    def counts(self, ts_ms: int) -> MerchantCounts:
        """The merchant's counts as a transaction at ts_ms sees them (before it is folded in)."""
        mc1h, mc1d, mc7d, mc30d = self.windows.read(ts_ms)[0]
        (l7, l30), (f7, f30) = self.labels.read(ts_ms)
        return MerchantCounts(mc1h, mc1d, mc7d, mc30d, l7, l30, f7, f30)

    def update(self, tx: Txn) -> None:
        self.windows.add(tx.ts_ms, 0)

    def apply_label(self, revealed_ms: int, fraud: bool) -> None:
        self.labels.add(revealed_ms, 1 if fraud else 0)

    def to_bytes(self) -> bytes:
        out = bytearray((STATE_VERSION, self._KIND))
        self.windows._write(out)
        self.labels._write(out)
        return _close(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> MerchantState:
        s = cls()
        _done(_read_windows(_open(data, cls._KIND), 2, s.windows, s.labels))
        return s


class EntityState:
    """Per IP address or device: transaction counts over 1 h and 1 d."""

    __slots__ = ("windows",)
    _KIND = 3

    def __init__(self) -> None:
        self.windows = Windows(ENTITY_WINDOWS)

    def update(self, tx: Txn) -> None:
        self.windows.add(tx.ts_ms, 0)

    def to_bytes(self) -> bytes:
        out = bytearray((STATE_VERSION, self._KIND))
        self.windows._write(out)
        return _close(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> EntityState:
        s = cls()
        _done(_read_windows(_open(data, cls._KIND), 2, s.windows))
        return s


def _merchant_hash(merchant: str) -> int:
    return zlib.crc32(merchant.encode())


@dataclass(slots=True)
class TxStates:
    """The states one transaction reads and updates. ip/device are None when the
    transaction has none; merchant is None when the caller has the merchant's counts
    from elsewhere (`compute`'s `merchant`) and keeps no merchant state."""

    card: CardState = field(default_factory=CardState)
    merchant: MerchantState | None = field(default_factory=MerchantState)
    ip: EntityState | None = None
    device: EntityState | None = None


# --------------------------------------------------------------------------- features


class FeatureVector(NamedTuple):
    """The model's input columns, in this fixed order. NaN means "not available"."""

    amount_major: float
    amount_log10: float
    hour_of_day: float
    is_weekend: float
    is_night: float
    card_age_days: float
    card_tx_total: float
    card_secs_since_last: float
    card_cnt_1m: float
    card_cnt_1h: float
    card_cnt_1d: float
    card_cnt_7d: float
    card_cnt_30d: float
    card_sum_1m: float
    card_sum_1h: float
    card_sum_1d: float
    card_sum_7d: float
    card_sum_30d: float
    card_amount_z: float
    card_amount_ratio_30d: float
    card_new_merchant: float
    card_foreign_currency: float
    card_fraud_labels_30d: float
    merch_cnt_1h: float
    merch_cnt_1d: float
    merch_cnt_7d: float
    merch_cnt_30d: float
    merch_risk_7d: float
    merch_risk_30d: float
    merch_labeled_30d: float
    ip_cnt_1h: float
    ip_cnt_1d: float
    device_cnt_1h: float
    device_cnt_1d: float


FEATURE_NAMES: tuple[str, ...] = FeatureVector._fields
N_FEATURES = len(FEATURE_NAMES)
_TEN_POW = {e: float(10**e) for e in set(CURRENCY_EXPONENTS.values())}
_EXP = dict(CURRENCY_EXPONENTS)


def compute(tx: Txn, states: TxStates, merchant: MerchantCounts | None = None) -> FeatureVector:
    """Features of `tx` from the states as they are before it. Pure: reads only.
    `merchant`: the merchant's counts read elsewhere (the stream's keys stage, which
    holds the whole merchant) instead of from `states.merchant`."""
    ts = tx.ts_ms
    scale = _TEN_POW[_EXP[tx.currency]]
    amount = tx.amount_minor / scale
    day, in_day = divmod(ts, DAY_MS)
    hour = in_day // HOUR_MS
    weekend = 1.0 if (day + 3) % 7 >= 5 else 0.0  # 1970-01-01 was a Thursday

    card = states.card
    if card.first_ms < 0:
        age = 0.0
        since = _NAN
    else:
        age = (ts - card.first_ms) / DAY_MS
        since = min(max(ts - card.last_ms, 0) / 1000.0, SINCE_LAST_CAP_S)
    (c1m, c1h, c1d, c7d, c30d), (s1m, s1h, s1d, s7d, s30d) = card.windows.read(ts)
    home_scale = _TEN_POW[_EXP[card.currency]] if card.currency else scale
    foreign = 0.0 if card.currency is None or card.currency == tx.currency else 1.0
    z = _NAN
    ratio = _NAN
    if not foreign:
        n = card.m_n
        if n >= 2:
            # Exact integer variance numerator: n*S2 - S1^2 = n^2 * var.
            num = n * card.m_s2 - card.m_s1 * card.m_s1
            if num > 0:
                z = (n * tx.amount_minor - card.m_s1) / math.sqrt(num)
        if c30d and s30d:
            ratio = tx.amount_minor * c30d / s30d
    new_merchant = 0.0 if _merchant_hash(tx.merchant) in card.merchants else 1.0
    labels_30d = card.labels.read(ts)[0][0]

    if merchant is None:
        if states.merchant is None:
            raise ValueError("neither the merchant's counts nor its state")
        merchant = states.merchant.counts(ts)
    mc1h, mc1d, mc7d, mc30d, l7, l30, f7, f30 = merchant

    # Absent from the tx: NaN (unknown). Present but never seen: 0 transactions.
    ip1h, ip1d = _entity_counts(states.ip, tx.ip, ts)
    dv1h, dv1d = _entity_counts(states.device, tx.device, ts)

    return FeatureVector(
        amount,
        math.log10(amount + 1.0),
        float(hour),
        weekend,
        1.0 if hour < 6 else 0.0,
        age,
        float(card.n),
        since,
        float(c1m),
        float(c1h),
        float(c1d),
        float(c7d),
        float(c30d),
        s1m / home_scale,
        s1h / home_scale,
        s1d / home_scale,
        s7d / home_scale,
        s30d / home_scale,
        z,
        ratio,
        new_merchant,
        foreign,
        float(labels_30d),
        float(mc1h),
        float(mc1d),
        float(mc7d),
        float(mc30d),
        f7 / l7 if l7 else _NAN,
        f30 / l30 if l30 else _NAN,
        float(l30),
        ip1h,
        ip1d,
        dv1h,
        dv1d,
    )


# --------------------------------------------------------------------------- per method

#: The methods the models score: cards by the card model (trained on models/simulate.py's
#: card traffic), the others by one model over the same vector plus the method's
#: indicator (trained on models/simulate_methods.py's traffic; docs/fraud.md, "Every method").
MODELLED_METHODS = frozenset({"card", "wallet", "bank_transfer", "bnpl", "crypto"})
NON_CARD_METHODS = ("wallet", "bank_transfer", "bnpl", "crypto")
#: The non-card model's input: the feature vector, then one indicator column per method.
METHODS_MODEL_FEATURES: tuple[str, ...] = FEATURE_NAMES + tuple(f"method_{m}" for m in NON_CARD_METHODS)


_COMMON = {"amount_major": "amount_major", "hour_of_day": "hour_of_day", "is_night": "is_night"}


def _instrument_view(prefix: str, columns: tuple[str, ...]) -> dict[str, str]:
    # The instrument's state is kept by the same class as a card's (CardState, under
    # the method's own key), so its columns are the card_* ones, named for the method.
    return _COMMON | {f"{prefix}_{c.removeprefix('card_')}": c for c in columns}


#: method -> {its feature name: the FeatureVector column it reads}. The same vector
#: for every method (one feature code, online and offline), each method naming the
#: columns that fit its instrument; rules (models/rules/v3.toml `[methods.*]`) use these names.
METHOD_FEATURES: dict[str, dict[str, str]] = {
    # The wallet account (the device's payment token) and the device itself.
    "wallet": _instrument_view(
        "wallet",
        (
            "card_cnt_1m",
            "card_cnt_1h",
            "card_cnt_1d",
            "card_sum_1d",
            "card_age_days",
            "card_tx_total",
            "card_new_merchant",
            "card_amount_z",
        ),
    )
    | {"device_cnt_1h": "device_cnt_1h", "device_cnt_1d": "device_cnt_1d", "ip_cnt_1h": "ip_cnt_1h"},
    # The debited account (its hash, or the mandate): debits per day and week, new payees.
    "bank_transfer": _instrument_view(
        "account",
        (
            "card_cnt_1h",
            "card_cnt_1d",
            "card_cnt_7d",
            "card_sum_1d",
            "card_sum_7d",
            "card_age_days",
            "card_tx_total",
            "card_new_merchant",
            "card_amount_ratio_30d",
        ),
    ),
    # The customer's account at the BNPL provider: plans stacked in a week or a month.
    "bnpl": _instrument_view(
        "customer",
        (
            "card_cnt_1h",
            "card_cnt_1d",
            "card_cnt_7d",
            "card_cnt_30d",
            "card_sum_30d",
            "card_age_days",
            "card_tx_total",
            "card_new_merchant",
            "card_amount_z",
        ),
    )
    | {"ip_cnt_1h": "ip_cnt_1h", "device_cnt_1d": "device_cnt_1d"},
    # The payer's (refund) address: a fresh address, bursts of payments from one address.
    "crypto": _instrument_view(
        "address",
        (
            "card_cnt_1h",
            "card_cnt_1d",
            "card_cnt_7d",
            "card_sum_1d",
            "card_age_days",
            "card_tx_total",
            "card_new_merchant",
        ),
    ),
}


def method_features(method: str, fv: FeatureVector) -> dict[str, float]:
    """The method's named features read from a vector (a card: every column)."""
    view = METHOD_FEATURES.get(method)
    if view is None:
        return dict(zip(FEATURE_NAMES, fv))
    return {name: getattr(fv, column) for name, column in view.items()}


def _entity_counts(state: EntityState | None, key: str | None, ts: int) -> tuple[float, float]:
    if key is None:
        return _NAN, _NAN
    if state is None:
        return 0.0, 0.0
    c1h, c1d = state.windows.read(ts)[0]
    return float(c1h), float(c1d)


def features(tx: Txn | Mapping[str, Any], states: TxStates) -> FeatureVector:
    """Features of a transaction (a `Txn`, or the scorer's dict, validated here)."""
    return compute(tx if isinstance(tx, Txn) else make_txn(tx), states)


def update(states: TxStates, tx: Txn | Mapping[str, Any]) -> None:
    """Fold a transaction into every state it touches (after its features were read)."""
    t = tx if isinstance(tx, Txn) else make_txn(tx)
    states.card.update(t)
    if states.merchant is not None:
        states.merchant.update(t)
    if t.ip is not None:
        if states.ip is None:
            states.ip = EntityState()
        states.ip.update(t)
    if t.device is not None:
        if states.device is None:
            states.device = EntityState()
        states.device.update(t)


def apply_label(card: CardState | None, merchant: MerchantState | None, revealed_ms: int, fraud: bool) -> None:
    """A label revealed at `revealed_ms` (event time of the label, not of the tx)."""
    if card is not None:
        card.apply_label(revealed_ms, fraud)
    if merchant is not None:
        merchant.apply_label(revealed_ms, fraud)


# --------------------------------------------------------------------------- offline store


class StateStore:
    """All entity states in memory, for offline training and replay: the same state
    classes the stream keeps in RocksDB, in dicts."""

    def __init__(self) -> None:
        self.cards: dict[str, CardState] = {}
        self.merchants: dict[str, MerchantState] = {}
        self.ips: dict[str, EntityState] = {}
        self.devices: dict[str, EntityState] = {}

    def states_for(self, tx: Txn) -> TxStates:
        card = self.cards.get(tx.card)
        if card is None:
            card = self.cards[tx.card] = CardState()
        merchant = self.merchants.get(tx.merchant)
        if merchant is None:
            merchant = self.merchants[tx.merchant] = MerchantState()
        ip = device = None
        if tx.ip is not None:
            ip = self.ips.get(tx.ip)
            if ip is None:
                ip = self.ips[tx.ip] = EntityState()
        if tx.device is not None:
            device = self.devices.get(tx.device)
            if device is None:
                device = self.devices[tx.device] = EntityState()
        return TxStates(card, merchant, ip, device)

    def step(self, tx: Txn) -> FeatureVector:
        """features then update: one transaction of a history."""
        states = self.states_for(tx)
        fv = compute(tx, states)
        update(states, tx)
        return fv

    def label(self, card: str, merchant: str, revealed_ms: int, fraud: bool) -> None:
        apply_label(self.cards.get(card), self.merchants.get(merchant), revealed_ms, fraud)


def batch_features(events: Iterable[tuple[str, Any]]) -> Iterator[FeatureVector]:
    """The offline path over a history: `("tx", Txn)` and `("label", (card, merchant,
    revealed_ms, fraud))` events in processing order; yields one vector per tx."""
    store = StateStore()
    for kind, ev in events:
        if kind == "tx":
            yield store.step(ev)
        elif kind == "label":
            store.label(*ev)
        else:
            raise ValueError(f"unknown event kind {kind!r}")
