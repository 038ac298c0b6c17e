"""The monitoring stage, as plain values: transaction monitoring's two steps (docs/compliance.md).

Payment events are keyed by payment_id, but every rule watches one subject (a card, a
merchant, a device) across payments, so the activity is re-keyed once, as the ledger's
entries are:
  1. `activities`: in the payments stage's transaction, each captured or refunded event
     becomes one MonitoringActivity per subject (its merchant, and its card token if it
     has one), and a card create's first event one for the payer's device (metadata
     `device`: events do not carry it, the create does), each keyed
     '<subject kind>:<subject id>' for monitoring-activity. Forwarded with the event, so
     exactly when the event is written.
  2. `handle`: in the subject's partition of monitoring-activity, an activity is applied
     once (a mark per activity id, kept `retention_ms` by event time), folded into the
     subject's window state (streams/domain/monitoring.py), and the cases it opens go to
     monitoring-cases in the same transaction. An idle subject's state is swept once the
     partition's event time is past its last activity by the retention (forget timers,
     bounded per message as in the other stages). The states a batch changes are kept
     as values (`Subjects`) and written once, at the batch's end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.state import ParsedOnce
from schemas.times import from_ms, to_ms
from streams.domain.monitoring import (
    ATTEMPT,
    CAPTURE,
    CARD,
    DEVICE,
    MERCHANT,
    REFUND,
    Activity,
    MonitoringCase,
    MonitoringError,
    SubjectState,
    Thresholds,
    expired,
    observe,
)
from streams.domain.timers import PAGE_MAX_BYTES, SWEEP_MAX, Timer, TimerStore

Get = Callable[[bytes], bytes | None]

MONEY_EVENTS = {"captured": CAPTURE, "refunded": REFUND}
# A create's first event: the attempt a device made, whatever its outcome (card testing is declines).
ATTEMPT_EVENTS = frozenset({"authorized", "declined", "authorization_pending"})
DEVICE_ID_MAX_CHARS = 200  # longer is not a device id we keep state for
APPLIED_MARK = b"1"

# Subjects' window states by their stored bytes: a merchant's state (its latest evidence
# per rule and currency) is read at every one of its captures, so each state written is
# kept beside its bytes and the next batch's first activity of it parses nothing. `observe` never
# mutates the state it is given (it copies what it changes), so a kept state is shared safely.
# Full, at the demo's mix: ~5 MB of bytes (states of ~5 KB: each evidence stored once per subject) and the
# parsed states (their rules share the Evidence objects).
SUBJECT_STATES_MAX = 1024
_subject_states = ParsedOnce(SubjectState.from_bytes, SUBJECT_STATES_MAX)


def subject_key(subject_kind: str, subject_id: str) -> bytes:
    """monitoring-activity's key: the subject's partition holds its window state."""
    return f"{subject_kind}:{subject_id}".encode()


def _device(cmd: Mapping[str, Any]) -> str | None:
    device = (cmd.get("metadata") or {}).get("device")
    return device if isinstance(device, str) and 0 < len(device) <= DEVICE_ID_MAX_CHARS else None


def _activity(
    event: Mapping[str, Any], subject_kind: str, subject_id: str, kind: str, amount_minor: int
) -> tuple[bytes, dict[str, Any]]:
    return subject_key(subject_kind, subject_id), {
        "activity_id": f"{event['event_id']}/{subject_kind}",
        "subject_kind": subject_kind,
        "subject_id": subject_id,
        "kind": kind,
        "payment_id": event["payment_id"],
        "merchant_id": event["merchant_id"],
        "currency": event["currency"],
        "amount_minor": amount_minor,
        "occurred_at": event["occurred_at"],
        "card_token": event.get("card_token"),
    }


def activities(cmd: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> list[tuple[bytes, dict[str, Any]]]:
    """(key, MonitoringActivity) for each subject of `cmd`'s payment events."""
    out = []
    device = _device(cmd) if cmd.get("kind") == "create" else None
    for e in events:
        kind = MONEY_EVENTS.get(e["type"])
        if kind is not None and e["amount_minor"] > 0:
            out.append(_activity(e, MERCHANT, e["merchant_id"], kind, e["amount_minor"]))
            if e.get("card_token"):
                out.append(_activity(e, CARD, e["card_token"], kind, e["amount_minor"]))
        elif (
            device is not None
            and e["type"] in ATTEMPT_EVENTS
            and e.get("card_token")
            and e["payment_id"] == cmd["payment_id"]
            and cmd.get("amount_minor") is not None
        ):
            out.append(_activity(e, DEVICE, device, ATTEMPT, cmd["amount_minor"]))
            device = None  # one attempt per create
    return out


def activity_of(record: Mapping[str, Any]) -> Activity:
    """The domain's Activity of a MonitoringActivity record (MonitoringError when unusable)."""
    return Activity(
        record["activity_id"],
        record["subject_kind"],
        record["subject_id"],
        record["kind"],
        record["payment_id"],
        record["merchant_id"],
        record["currency"],
        record["amount_minor"],
        to_ms(record["occurred_at"]),
        record.get("card_token"),
    )


def case_record(case: MonitoringCase) -> dict[str, Any]:
    """The MonitoringCase Avro record of a case."""
    return {
        "case_id": case.case_id,
        "rule": case.rule,
        "subject_kind": case.subject_kind,
        "subject_id": case.subject_id,
        "merchant_id": case.merchant_id,
        "currency": case.currency,
        "window_start": from_ms(case.window_start_ms),
        "window_end": from_ms(case.window_end_ms),
        "opened_at": from_ms(case.opened_at_ms),
        "evidence": [
            {
                "payment_id": e.payment_id,
                "merchant_id": e.merchant_id,
                "kind": e.kind,
                "currency": e.currency,
                "amount_minor": e.amount_minor,
                "occurred_at": from_ms(e.at_ms),
                "card_token": e.card_token,
            }
            for e in case.evidence
        ],
        "measures": dict(case.measures),
        "summary": case.summary,
    }


def state_key(partition: int, subject: bytes) -> bytes:
    return f"{partition}/s/".encode() + subject


def mark_key(partition: int, activity_id: str) -> bytes:
    return f"{partition}/a/{activity_id}".encode()


class Subjects:
    """The subject states one batch has changed (None: deleted), by state key. A merchant
    sees hundreds of activities a batch and its state is ~5 KB: serialized at each, that
    was a fifth of the stage's CPU, and only a transaction's last value of a key is stored (the
    table and its changelog keep one per key and transaction). So `handle` reads and
    changes the states here, and `writes` gives each once, at the batch's end."""

    def __init__(self) -> None:
        self.states: dict[bytes, SubjectState | None] = {}

    def state(self, key: bytes, get: Get) -> SubjectState | None:
        if key in self.states:
            return self.states[key]
        raw = get(key)
        return _subject_states.get(raw) if raw is not None else None

    def writes(self) -> list[tuple[bytes, bytes | None]]:
        """Each changed state's bytes (kept beside them for the next batch); the batch starts afresh."""
        out: list[tuple[bytes, bytes | None]] = []
        for key, state in self.states.items():
            written = None
            if state is not None:
                written = state.to_bytes()
                _subject_states.remember(written, state)
            out.append((key, written))
        self.states = {}
        return out


@dataclass
class Effects:
    skipped: bool = False  # applied before (a redelivery): nothing to write or send
    refused: MonitoringError | None = None  # not a usable activity: dead-letter it
    writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)  # the states' are in `Subjects`
    cases: list[MonitoringCase] = field(default_factory=list)
    fired: list[Timer] = field(default_factory=list)


def handle(
    record: Mapping[str, Any],
    partition: int,
    record_ts_ms: int,
    get: Get,
    thresholds: Thresholds,
    subjects: Subjects,
    sweep_max: int = SWEEP_MAX,
) -> Effects:
    try:
        activity = activity_of(record)
    except MonitoringError as e:
        return Effects(refused=e)
    mark = mark_key(partition, activity.activity_id)
    if get(mark) is not None:
        return Effects(skipped=True)
    key = state_key(partition, subject_key(activity.subject_kind, activity.subject_id))
    state, cases = observe(subjects.state(key, get), activity, thresholds)
    # Into `subjects` only once nothing more can raise: a record parked by a bug changes nothing.
    states: dict[bytes, SubjectState | None] = {key: state}
    writes: dict[bytes, bytes | None] = {mark: APPLIED_MARK}

    timers = TimerStore(get, partition, PAGE_MAX_BYTES)
    due_ms = activity.at_ms + thresholds.retention_ms  # one delay for every forget timer: the queue stays in order
    timers.push(Timer("forget", due_ms, mark.decode()))
    if state is not None:
        timers.push(Timer("forget", due_ms, key.decode()))
    watermark_ms = timers.advance(activity.at_ms, record_ts_ms)
    out = Effects(cases=cases)
    for timer in timers.pop_due("forget", watermark_ms, sweep_max):
        out.fired.append(timer)
        ref = timer.ref.encode()
        if ref.startswith(f"{partition}/a/".encode()):  # a mark goes
            if (writes[ref] if ref in writes else get(ref)) is not None:
                writes[ref] = None
            continue
        # A subject's state only if nothing came since (its later activity pushed a later timer).
        current = states[ref] if ref in states else subjects.state(ref, get)
        if current is not None and expired(current, watermark_ms, thresholds):
            states[ref] = None
    out.writes = [*writes.items(), *timers.pending.items()]
    subjects.states.update(states)
    return out
