"""Transaction monitoring (AML): rules over event-time windows of one subject's activity,
and the case queue's decisions. Pure: the monitoring stage (streams/stages/monitoring.py)
keeps the state, the CLI and the ops API record decisions (docs/compliance.md).

Subjects and what they see (an `Activity`, one per subject, forwarded by the payments stage):
  card      captures and refunds paid with the card token    structuring, refund_abuse
  merchant  captures and refunds of the merchant             rapid_in_out, refund_abuse
  device    card creates from a device (metadata `device`)   many_cards_per_device

Rules (thresholds in `Thresholds`, per currency where money is compared):
  structuring            >= structuring_payments captures of one currency, each within
                         near_threshold_bps under that currency's reporting threshold,
                         inside structuring_window_ms;
  rapid_in_out           refunds of at least rapid_refunded_bps of the captured volume
                         of one currency, itself at least rapid_min_captured_minor,
                         inside rapid_window_ms;
  refund_abuse           >= refund_min_refunds refunds of one currency and refunds at
                         least refund_ratio_bps of the captures by count, inside refund_window_ms;
  many_cards_per_device  >= device_cards distinct card tokens inside device_window_ms.

Windows trail the subject's watermark (the latest event time it has seen), never the
wall clock. Structuring and the device rule keep their items (bounded by the rule's
count: reaching it opens a case); the volume rules count in `BUCKETS` buckets per
window, so their window spans between window_ms and window_ms + one bucket. Activity
older than the window when it arrives is too late and not counted.

A case consumes its window: the rule's state starts afresh after it, and activity at
or before the case's end (`cut_ms`) is not counted again, so one piece of evidence is
in at most one case of a rule, and a rule opens at most one case per subject and
window. The case id is derived from (rule, subject, currency, window).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import attrgetter
from types import MappingProxyType
from typing import Any

from schemas.money import format_minor, is_currency
from schemas.state import state_json, state_loads
from schemas.times import from_ms, to_ms

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
BPS = 10_000
# A volume rule's window in buckets: its resolution is window_ms / BUCKETS.
BUCKETS = 24

STRUCTURING, RAPID_IN_OUT, REFUND_ABUSE, MANY_CARDS = (
    "structuring",
    "rapid_in_out",
    "refund_abuse",
    "many_cards_per_device",
)
RULES = (STRUCTURING, RAPID_IN_OUT, REFUND_ABUSE, MANY_CARDS)
CARD, MERCHANT, DEVICE = "card", "merchant", "device"
SUBJECT_RULES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {CARD: (STRUCTURING, REFUND_ABUSE), MERCHANT: (RAPID_IN_OUT, REFUND_ABUSE), DEVICE: (MANY_CARDS,)}
)
CAPTURE, REFUND, ATTEMPT = "capture", "refund", "attempt"
KINDS = (CAPTURE, REFUND, ATTEMPT)
_VOLUME_RULES = (RAPID_IN_OUT, REFUND_ABUSE)

# USD/EUR/GBP 10,000.00: the US currency transaction report's threshold and the EU's
# cash and transfer thresholds (AMLD) are of this order.
DEFAULT_REPORTING_THRESHOLD_MINOR = MappingProxyType({"USD": 1_000_000, "EUR": 1_000_000, "GBP": 1_000_000})


class MonitoringError(ValueError):
    """An unusable activity, threshold or decision; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Thresholds:
    """Every rule's threshold (documented defaults; docs/compliance.md, Transaction monitoring)."""

    # Per currency, minor units; a currency absent here is not checked for structuring.
    reporting_threshold_minor: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_REPORTING_THRESHOLD_MINOR)
    )
    near_threshold_bps: int = 1_000  # "just under": within 10% below the threshold
    structuring_payments: int = 3
    structuring_window_ms: int = 2 * DAY_MS
    rapid_window_ms: int = DAY_MS
    rapid_refunded_bps: int = 8_000
    rapid_min_captured_minor: int = 100_000  # 1,000.00 of a two-decimal currency
    refund_window_ms: int = 7 * DAY_MS
    refund_ratio_bps: int = 5_000
    refund_min_refunds: int = 5
    device_window_ms: int = DAY_MS
    device_cards: int = 5
    evidence_max: int = 10  # per currency, on a volume rule's case: the latest ones
    currencies_max: int = 8  # per subject and rule: a further one pushes out the least recent

    def __post_init__(self) -> None:
        counts = {
            "structuring_payments": self.structuring_payments,
            "device_cards": self.device_cards,
            "refund_min_refunds": self.refund_min_refunds,
        }
        for name, value in counts.items():
            if not 2 <= value <= 1_000:
                raise MonitoringError("invalid_threshold", f"{name} must be 2..1000, not {value}")
        for name in ("near_threshold_bps", "rapid_refunded_bps", "refund_ratio_bps"):
            if not 1 <= getattr(self, name) <= BPS:
                raise MonitoringError("invalid_threshold", f"{name} must be 1..{BPS} basis points")
        for rule in RULES:
            if not BUCKETS <= self.window_ms(rule) <= 366 * DAY_MS:
                raise MonitoringError("invalid_threshold", f"the {rule} window must be {BUCKETS} ms..366 days")
        if not 1 <= self.evidence_max <= 100 or not 1 <= self.currencies_max <= 64 or self.rapid_min_captured_minor < 1:
            raise MonitoringError(
                "invalid_threshold", "evidence_max 1..100, currencies_max 1..64, rapid_min_captured_minor >= 1"
            )
        for currency, minor in self.reporting_threshold_minor.items():
            if not is_currency(currency) or not 1 <= minor <= 2**63 - 1:
                raise MonitoringError(
                    "invalid_threshold", "reporting_threshold_minor: ISO 4217 codes to minor units >= 1"
                )

    def window_ms(self, rule: str) -> int:
        # Read several times per activity: tests, not a dict built at each call.
        if rule == RAPID_IN_OUT:
            return self.rapid_window_ms
        if rule == REFUND_ABUSE:
            return self.refund_window_ms
        if rule == STRUCTURING:
            return self.structuring_window_ms
        if rule == MANY_CARDS:
            return self.device_window_ms
        raise KeyError(rule)

    @property
    def retention_ms(self) -> int:
        """How long past its last activity a subject's state can still matter."""
        return max(self.window_ms(r) for r in RULES) * (BUCKETS + 1) // BUCKETS + 1

    def near_threshold(self, currency: str, amount_minor: int) -> int | None:
        """The reporting threshold `amount_minor` is just under, or None."""
        limit = self.reporting_threshold_minor.get(currency)
        if limit is None:
            return None
        floor = limit - limit * self.near_threshold_bps // BPS
        return limit if floor <= amount_minor < limit else None


@dataclass(frozen=True)
class Activity:
    """One payment fact as one subject sees it (event time `at_ms`)."""

    activity_id: str  # unique per (source event, subject): a redelivery has the same id
    subject_kind: str
    subject_id: str
    kind: str  # capture | refund | attempt
    payment_id: str
    merchant_id: str
    currency: str
    amount_minor: int
    at_ms: int
    card_token: str | None = None

    def __post_init__(self) -> None:
        if self.subject_kind not in SUBJECT_RULES or not self.subject_id:
            raise MonitoringError("invalid_subject", f"subject {self.subject_kind!r}/{self.subject_id!r}")
        if self.kind not in KINDS:
            raise MonitoringError("invalid_kind", f"kind {self.kind!r} is not one of {KINDS}")
        if not is_currency(self.currency) or self.amount_minor < 0:
            raise MonitoringError("invalid_amount", f"{self.amount_minor} {self.currency!r}")
        if self.subject_kind == DEVICE and (self.kind != ATTEMPT or not self.card_token):
            raise MonitoringError("invalid_kind", "a device sees card attempts, each with its card token")
        if self.subject_kind != DEVICE and self.kind == ATTEMPT:
            raise MonitoringError("invalid_kind", f"a {self.subject_kind} sees captures and refunds")


@dataclass(frozen=True)
class Evidence:
    payment_id: str
    merchant_id: str
    kind: str
    currency: str
    amount_minor: int
    at_ms: int
    card_token: str | None = None

    @classmethod
    def of(cls, a: Activity) -> Evidence:
        return cls(a.payment_id, a.merchant_id, a.kind, a.currency, a.amount_minor, a.at_ms, a.card_token)


@dataclass(frozen=True)
class MonitoringCase:
    case_id: str
    rule: str
    subject_kind: str
    subject_id: str
    merchant_id: str
    currency: str | None
    window_start_ms: int  # the activity counted is at window_start_ms..window_end_ms, both included
    window_end_ms: int
    opened_at_ms: int  # the event time the condition held: the subject's watermark then
    evidence: tuple[Evidence, ...]
    measures: Mapping[str, int]
    summary: str


_by_time = attrgetter("at_ms", "payment_id")  # evidence's order: by event time, then payment


def case_id(rule: str, subject_kind: str, subject_id: str, currency: str | None, start_ms: int, end_ms: int) -> str:
    parts = (rule, subject_kind, subject_id, currency or "", str(start_ms), str(end_ms))
    return "case_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


# --- per subject state: plain values, JSON in the stage's table ---

# A volume bucket: [index, captured_minor, captures, refunded_minor, refunds]
Bucket = list[int]
STORED_SUM_MAX = 2**64 - 1  # the largest integer state_json writes


@dataclass
class RuleState:
    cut_ms: int | None = None  # activity at or before this was judged by the last case
    items: list[Evidence] = field(default_factory=list)
    buckets: dict[str, list[Bucket]] = field(default_factory=dict)  # currency -> buckets by index

    def empty(self) -> bool:
        return not self.items and not self.buckets and self.cut_ms is None


# An Evidence as stored: its fields in declaration order, one array.
EvidenceRow = tuple[str, str, str, str, int, int, str | None]
_evidence_row = attrgetter("payment_id", "merchant_id", "kind", "currency", "amount_minor", "at_ms", "card_token")


@dataclass
class SubjectState:
    wm_ms: int  # the latest event time this subject has seen
    rules: dict[str, RuleState] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """{"wm_ms", "evidence": [row, ...], "rules": {rule: {"cut_ms", "items": [index, ...], "buckets"}}}:
        a merchant's two volume rules keep mostly the same latest activities, so each is
        stored once, as an array, and a rule's items are indexes into the subject's rows.
        Rules share the Evidence objects of one activity (`observe` makes one, `from_bytes`
        one per row), so a row per object: found by identity, no hashing of fields."""
        # id -> the object, in order of first appearance: each alive in self meanwhile, so ids are unique.
        unique = {id(e): e for rs in self.rules.values() for e in rs.items}
        row_of = {k: i for i, k in enumerate(unique)}
        rows = list(map(_evidence_row, unique.values()))
        rules = {
            rule: {"cut_ms": rs.cut_ms, "items": [row_of[id(e)] for e in rs.items], "buckets": rs.buckets}
            for rule, rs in self.rules.items()
        }
        return state_json({"wm_ms": self.wm_ms, "evidence": rows, "rules": rules})

    @classmethod
    def from_bytes(cls, raw: bytes) -> SubjectState:
        """Also reads the states written before the shared rows (each rule's items as objects)."""
        d = state_loads(raw)
        if "evidence" not in d:
            # Equal items of several rules made one object, so the next write stores them once.
            shared: dict[tuple[Any, ...], Evidence] = {}
            rules = {
                r: RuleState(
                    s["cut_ms"],
                    [shared.setdefault(tuple(e.values()), Evidence(**e)) for e in s["items"]],
                    s["buckets"],
                )
                for r, s in d["rules"].items()
            }
            return cls(d["wm_ms"], rules)
        evidence = [Evidence(*row) for row in d["evidence"]]
        rules = {
            r: RuleState(s["cut_ms"], [evidence[i] for i in s["items"]], s["buckets"]) for r, s in d["rules"].items()
        }
        return cls(d["wm_ms"], rules)


def observe(state: SubjectState | None, a: Activity, t: Thresholds) -> tuple[SubjectState | None, list[MonitoringCase]]:
    """The subject's state with `a` counted, and the cases it opens; None: nothing left to keep."""
    wm = a.at_ms if state is None else max(state.wm_ms, a.at_ms)
    rules = {} if state is None else dict(state.rules)
    cases: list[MonitoringCase] = []
    evidence = Evidence.of(a)  # one object however many rules keep it: stored once (SubjectState.to_bytes)
    for rule in SUBJECT_RULES[a.subject_kind]:
        rs = _expire(rules.get(rule, RuleState()), rule, wm, t)
        window_ms = t.window_ms(rule)
        if a.at_ms > wm - window_ms and (rs.cut_ms is None or a.at_ms > rs.cut_ms):
            rs = _count(rs, rule, a, evidence, t)
            case = _judge(rs, rule, a, wm, t)
            if case is not None:
                cases.append(case)
                rs = RuleState(cut_ms=wm)
        if rs.empty():
            rules.pop(rule, None)
        else:
            rules[rule] = rs
    return (SubjectState(wm, rules) if rules else None), cases


def expired(state: SubjectState, watermark_ms: int, t: Thresholds) -> bool:
    """Nothing of the subject can count any more once the partition's event time is here."""
    return state.wm_ms + t.retention_ms <= watermark_ms


def _bucket_ms(rule: str, t: Thresholds) -> int:
    return t.window_ms(rule) // BUCKETS


def _expire(rs: RuleState, rule: str, wm: int, t: Thresholds) -> RuleState:
    start = wm - t.window_ms(rule)  # exclusive
    bms = _bucket_ms(rule, t)
    # Older activity is too late anyway, but a kept bucket may start up to a bucket before the window:
    # the cut is kept while it can fall in one, so a later case's window never reaches back before it.
    cut = rs.cut_ms if rs.cut_ms is not None and rs.cut_ms > start - bms else None
    # Mostly nothing has expired since the subject's last activity: the state as it is, no copies
    # (a currency's buckets are by index, so its first is its oldest).
    if (
        cut == rs.cut_ms
        and all(bs and (bs[0][0] + 1) * bms > start for bs in rs.buckets.values())
        and all(e.at_ms > start for e in rs.items)
    ):
        return rs
    buckets = {c: kept for c, bs in rs.buckets.items() if (kept := [b for b in bs if (b[0] + 1) * bms > start])}
    return RuleState(cut, [e for e in rs.items if e.at_ms > start], buckets)


def _latest_per_currency(items: list[Evidence], currency: str, keep: int) -> list[Evidence]:
    """`items` with only the latest `keep` of `currency`."""
    mine = sorted((e for e in items if e.currency == currency), key=_by_time)
    return [e for e in items if e.currency != currency] + mine[-keep:]


def _count(rs: RuleState, rule: str, a: Activity, evidence: Evidence, t: Thresholds) -> RuleState:
    if rule == MANY_CARDS:  # the latest attempt per card
        return replace(rs, items=[e for e in rs.items if e.card_token != a.card_token] + [evidence])
    if rule == STRUCTURING:
        if a.kind != CAPTURE or t.near_threshold(a.currency, a.amount_minor) is None:
            return rs
        items = rs.items + [evidence]
        currencies = _bounded_currencies(
            {e.currency: max(x.at_ms for x in items if x.currency == e.currency) for e in items},
            a.currency,
            t.currencies_max,
        )
        return replace(rs, items=[e for e in items if e.currency in currencies])
    # a volume rule
    bms = _bucket_ms(rule, t)
    index = a.at_ms // bms
    # Copies of what changes only (this currency's list and its slot): states are shared, never mutated.
    buckets = dict(rs.buckets)
    mine = buckets[a.currency] = list(buckets.get(a.currency, ()))
    at = next((i for i, b in enumerate(mine) if b[0] == index), None)
    if at is None:
        slot = [index, 0, 0, 0, 0]
        mine.append(slot)
        mine.sort()
    else:
        slot = mine[at] = list(mine[at])
    if a.kind == CAPTURE:
        slot[1] += a.amount_minor
        slot[2] += 1
    else:
        slot[3] += a.amount_minor
        slot[4] += 1
    # The state is stored as JSON of 64-bit numbers at most (schemas.state): a sum past them is refused
    # here, with the activity that makes it, not when the state is written (at the stage's batch end).
    if slot[1] > STORED_SUM_MAX or slot[3] > STORED_SUM_MAX:
        raise MonitoringError("invalid_amount", f"a {a.currency} bucket's volume past {STORED_SUM_MAX}")
    keep = _bounded_currencies({c: bs[-1][0] for c, bs in buckets.items()}, a.currency, t.currencies_max)
    items = _latest_per_currency(rs.items + [evidence], a.currency, t.evidence_max)
    return RuleState(
        rs.cut_ms, [e for e in items if e.currency in keep], {c: bs for c, bs in buckets.items() if c in keep}
    )


def _bounded_currencies(latest: Mapping[str, int], current: str, limit: int) -> set[str]:
    """At most `limit` currencies: the current one and the most recently active others."""
    if len(latest) <= limit and current in latest:
        return set(latest)
    others = sorted((c for c in latest if c != current), key=lambda c: (latest[c], c), reverse=True)
    return {current, *others[: limit - 1]}


def _judge(rs: RuleState, rule: str, a: Activity, wm: int, t: Thresholds) -> MonitoringCase | None:
    start = wm - t.window_ms(rule) + 1
    if rule == MANY_CARDS:
        if len(rs.items) < t.device_cards:
            return None
        evidence = sorted(rs.items, key=_by_time)
        measures = {"cards": len(evidence)}
        summary = f"{len(evidence)} cards used from one device within {_span(t.device_window_ms)}"
        return _case(rule, a, None, _start(start, rs), wm, evidence, measures, summary)
    if rule == STRUCTURING:
        evidence = sorted((e for e in rs.items if e.currency == a.currency), key=_by_time)
        if len(evidence) < t.structuring_payments:
            return None
        limit = t.reporting_threshold_minor[a.currency]
        measures = {
            "payments": len(evidence),
            "total_minor": sum(e.amount_minor for e in evidence),
            "threshold_minor": limit,
        }
        summary = (
            f"{len(evidence)} captures just under the reporting threshold of {format_minor(limit, a.currency)} "
            f"(within {t.near_threshold_bps / 100:g}%) within {_span(t.structuring_window_ms)}, "
            f"{format_minor(measures['total_minor'], a.currency)} in all"
        )
        return _case(rule, a, a.currency, _start(start, rs), wm, evidence, measures, summary)
    buckets = rs.buckets.get(a.currency, [])
    captured, captures = sum(b[1] for b in buckets), sum(b[2] for b in buckets)
    refunded, refunds = sum(b[3] for b in buckets), sum(b[4] for b in buckets)
    measures = {"captured_minor": captured, "captures": captures, "refunded_minor": refunded, "refunds": refunds}
    if rule == RAPID_IN_OUT:
        if captured < t.rapid_min_captured_minor or refunded * BPS < captured * t.rapid_refunded_bps:
            return None
        summary = (
            f"{format_minor(refunded, a.currency)} refunded of {format_minor(captured, a.currency)} captured "
            f"within {_span(t.rapid_window_ms)}"
        )
    else:
        if refunds < t.refund_min_refunds or refunds * BPS < captures * t.refund_ratio_bps:
            return None
        summary = f"{refunds} refunds against {captures} captures in {a.currency} within {_span(t.refund_window_ms)}"
    bms = _bucket_ms(rule, t)
    evidence = sorted((e for e in rs.items if e.currency == a.currency), key=_by_time)
    return _case(rule, a, a.currency, _start(buckets[0][0] * bms, rs), wm, evidence, measures, summary)


def _start(start_ms: int, rs: RuleState) -> int:
    return start_ms if rs.cut_ms is None else max(start_ms, rs.cut_ms + 1)


def _span(ms: int) -> str:
    return f"{ms // DAY_MS} d" if ms % DAY_MS == 0 else f"{ms // HOUR_MS} h" if ms % HOUR_MS == 0 else f"{ms} ms"


def _case(
    rule: str,
    a: Activity,
    currency: str | None,
    start_ms: int,
    end_ms: int,
    evidence: Iterable[Evidence],
    measures: Mapping[str, int],
    summary: str,
) -> MonitoringCase:
    merchant = a.subject_id if a.subject_kind == MERCHANT else a.merchant_id
    return MonitoringCase(
        case_id(rule, a.subject_kind, a.subject_id, currency, start_ms, end_ms),
        rule,
        a.subject_kind,
        a.subject_id,
        merchant,
        currency,
        start_ms,
        end_ms,
        end_ms,
        tuple(evidence),
        dict(measures),
        summary,
    )


# --- the case queue: decisions ---

DECISIONS = ("escalate", "dismiss", "report")
OPEN, ESCALATED, DISMISSED, REPORTED = "open", "escalated", "dismissed", "reported"
STATUSES = (OPEN, ESCALATED, DISMISSED, REPORTED)
_RESULT = {"escalate": ESCALATED, "dismiss": DISMISSED, "report": REPORTED}
# escalate hands the case to a senior reviewer; dismiss and report close it.
_ALLOWED = {
    OPEN: frozenset(DECISIONS),
    ESCALATED: frozenset({"dismiss", "report"}),
    DISMISSED: frozenset(),
    REPORTED: frozenset(),
}
OPERATOR_MAX_CHARS = 64
REASON_MAX_CHARS = 1_000


def decided(status: str, decision: str) -> str:
    """The case's status after `decision`; MonitoringError when the case cannot take it."""
    if decision not in DECISIONS:
        raise MonitoringError("invalid_decision", f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    if decision not in _ALLOWED[status]:
        raise MonitoringError(
            "case_closed" if status in (DISMISSED, REPORTED) else "invalid_transition",
            f"a case {status} cannot be decided {decision}",
        )
    return _RESULT[decision]


def allowed_decisions(status: str) -> tuple[str, ...]:
    """The decisions a case now `status` can take (none once closed)."""
    return tuple(d for d in DECISIONS if d in _ALLOWED[status])


def decision_id(case: str, decision: str, operator: str, decided_at: datetime) -> str:
    parts = (case, decision, operator, str(to_ms(decided_at)))
    return "dec_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def decision_record(
    case: str, status: str, decision: str, operator: str, reason: str, decided_at: datetime
) -> dict[str, Any]:
    """A MonitoringDecision for a case now `status` (checked: who, what, why; when is the command's time)."""
    decided(status, decision)
    operator, reason = operator.strip(), reason.strip()
    decided_at = from_ms(to_ms(decided_at))  # the topic keeps milliseconds: the record says what it will read back
    if not 1 <= len(operator) <= OPERATOR_MAX_CHARS:
        raise MonitoringError("invalid_operator", f"operator must be 1..{OPERATOR_MAX_CHARS} characters")
    if not 1 <= len(reason) <= REASON_MAX_CHARS:
        raise MonitoringError("invalid_reason", f"a reason of 1..{REASON_MAX_CHARS} characters is required")
    return {
        "decision_id": decision_id(case, decision, operator, decided_at),
        "case_id": case,
        "decision": decision,
        "operator": operator,
        "reason": reason,
        "decided_at": decided_at,
    }


def fold_decisions(decisions: Iterable[Mapping[str, Any]]) -> tuple[str, list[Mapping[str, Any]]]:
    """One case's status from its decisions (any order; applied by decided_at, then id), and
    the trail of those that took effect. One the case could not take (two operators racing
    on a case) stays on the topic but changes nothing."""
    status, trail = OPEN, []
    for d in sorted(decisions, key=lambda d: (d["decided_at"], d["decision_id"])):
        try:
            status = decided(status, d["decision"])
        except MonitoringError:
            continue
        trail.append(d)
    return status, trail
