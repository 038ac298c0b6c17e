"""The case queue's folds: cases with their decisions, status and trail, and the JSON view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams.client.cases import fold_cases, select, view
from streams.domain.monitoring import decision_record

AT = datetime(2026, 12, 6, 12, tzinfo=UTC)


def case(cid: str, opened: datetime, rule: str = "structuring") -> dict:
    return {
        "case_id": cid,
        "rule": rule,
        "subject_kind": "card",
        "subject_id": "tok_a",
        "merchant_id": "m_1",
        "currency": "USD",
        "window_start": opened - timedelta(days=2),
        "window_end": opened,
        "opened_at": opened,
        "evidence": [],
        "measures": {"payments": 3},
        "summary": "three",
    }


def test_cases_fold_with_their_decisions_in_time_order() -> None:
    esc = decision_record("c1", "open", "escalate", "alice", "looks structured", AT + timedelta(minutes=1))
    rep = decision_record("c1", "escalated", "report", "bob", "SAR filed", AT + timedelta(minutes=2))
    dismissed = decision_record("c2", "open", "dismiss", "alice", "payroll", AT + timedelta(minutes=3))
    folded = fold_cases(
        [case("c2", AT - timedelta(hours=1), "rapid_in_out"), case("c1", AT), None, case("c3", AT)],
        [rep, None, esc, dismissed, esc],
    )  # None: a tombstone or an unreadable record; esc twice: one
    assert [(c["case_id"], c["status"]) for c in folded] == [("c2", "dismissed"), ("c1", "reported"), ("c3", "open")]
    assert [d["decision"] for d in folded[1]["decisions"]] == ["escalate", "report"]
    assert [c["case_id"] for c in select(folded, status="open")] == ["c3"]
    assert [c["case_id"] for c in select(folded, rule="rapid_in_out")] == ["c2"]


def test_the_latest_record_of_a_case_id_is_the_case_and_a_decision_on_an_unknown_case_shows_nothing() -> None:
    first, again = case("c1", AT), case("c1", AT) | {"summary": "again"}
    orphan = decision_record("nope", "open", "dismiss", "alice", "?", AT)
    (only,) = fold_cases([first, again], [orphan])
    assert only["summary"] == "again" and only["status"] == "open" and only["decisions"] == []


def test_the_view_is_json_values() -> None:
    d = decision_record("c1", "open", "escalate", "alice", "why", AT)
    (folded,) = fold_cases([case("c1", AT)], [d])
    v = view(folded)
    assert v["opened_at"] == AT.isoformat() and v["decisions"][0]["decided_at"] == AT.isoformat()
    assert v["measures"] == {"payments": 3}
