"""Transaction monitoring's case queue on the real topics (docs/compliance.md): the cases
the monitoring stage opened (compacted `monitoring-cases`, key case_id) folded with the
operators' decisions (compacted `monitoring-decisions`, key decision_id: every decision
kept, the audit trail). `paystream cases list|decide` (streams/cli/cases.py) and the ops
API (streams/api/cases_routes.py) read and write through `CaseQueue`; the folds are pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from connectors.kafka.clients import command_producer, read_to_end
from schemas.codec import Codec, DecodeError
from streams.domain.monitoring import MonitoringError, decision_record, fold_decisions
from streams.settings import client_config
from streams.topics import topic_names

CASE_SCHEMA, DECISION_SCHEMA = "MonitoringCase", "MonitoringDecision"
FLUSH_S = 30


def fold_cases(
    cases: Iterable[Mapping[str, Any] | None], decisions: Iterable[Mapping[str, Any] | None]
) -> list[dict[str, Any]]:
    """Every case (the latest record per case id; None: a tombstone or an unreadable record)
    with its `status` and the `decisions` that took effect, oldest opened first."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for case in cases:
        if case is not None:
            by_id[case["case_id"]] = case
    trails: dict[str, dict[str, Mapping[str, Any]]] = {}
    for d in decisions:
        if d is not None:  # the same decision written twice is one (its id)
            trails.setdefault(d["case_id"], {})[d["decision_id"]] = d
    out = []
    for cid, case in by_id.items():
        status, trail = fold_decisions(trails.get(cid, {}).values())
        out.append(dict(case) | {"status": status, "decisions": [dict(d) for d in trail]})
    return sorted(out, key=lambda c: (c["opened_at"], c["case_id"]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def view(case_or_decision: Mapping[str, Any]) -> dict[str, Any]:
    """A folded case (or a decision) as JSON values: times in ISO 8601."""
    return _jsonable(case_or_decision)


def select(
    cases: Iterable[Mapping[str, Any]], status: str | None = None, rule: str | None = None
) -> list[Mapping[str, Any]]:
    return [c for c in cases if (status is None or c["status"] == status) and (rule is None or c["rule"] == rule)]


class CaseQueue:
    """The case queue's IO: both topics read whole (a snapshot), a decision written and acknowledged."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def cases(self) -> list[dict[str, Any]]:

        names = topic_names(self.settings)
        codecs = {names.monitoring_cases: Codec(CASE_SCHEMA), names.monitoring_decisions: Codec(DECISION_SCHEMA)}
        read: dict[str, list[dict[str, Any] | None]] = {t: [] for t in codecs}
        for msg in read_to_end(client_config(self.settings), list(codecs), self.settings.partitions):
            try:
                record = codecs[msg.topic()].decode(msg.value()) if msg.value() is not None else None
            except DecodeError:
                record = None  # not a case nor a decision of ours: it cannot open or decide one
            read[msg.topic()].append(record)
        return fold_cases(read[names.monitoring_cases], read[names.monitoring_decisions])

    def decide(self, case_id: str, decision: str, operator: str, reason: str, at: datetime) -> dict[str, Any]:
        """Record `decision` on the case as it stands now (MonitoringError: no such case, or it cannot take it)."""

        case = next((c for c in self.cases() if c["case_id"] == case_id), None)
        if case is None:
            raise MonitoringError("case_not_found", f"no case {case_id}")
        record = decision_record(case_id, case["status"], decision, operator, reason, at)
        producer = command_producer(client_config(self.settings))
        producer.produce(
            topic_names(self.settings).monitoring_decisions,
            key=record["decision_id"].encode(),
            value=Codec(DECISION_SCHEMA).encode(record, check=True),
        )
        if producer.flush(FLUSH_S) != 0:
            raise RuntimeError(f"the broker did not acknowledge the decision in {FLUSH_S} s")
        return record
