"""The walking skeleton against the real broker: command in, exactly one outcome out."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.support import T0, Pipeline, create, follow_up, make_settings, run, start_worker

pytestmark = pytest.mark.integration


def test_thousand_commands_one_outcome_each_and_bad_bytes_go_to_dlq(pipeline: Pipeline) -> None:
    merchant = f"m_{uuid.uuid4().hex[:6]}"
    commands = [create(merchant, f"k{i}", amount=100 + i) for i in range(1000)]
    junk = b"\xc3\x01" + b"\x00" * 8 + b"definitely not a command"
    items: list = commands[:500] + [(b"junk-key", junk)] + commands[500:]

    seen = run(pipeline, items, dead_letters=1)

    for c in commands:
        outs = seen.outcomes[c["command_id"]]
        assert len(outs) == 1, (c["command_id"], outs)
        assert outs[0]["status"] == "succeeded" and outs[0]["payment_status"] == "authorized"
        assert outs[0]["authorized_minor"] == c["amount_minor"]
    [dlq] = seen.dead_letters
    assert dlq["reason"] == "unknown_fingerprint"
    assert dlq["source_topic"].endswith("payment-commands")
    assert dlq["raw_value"] == junk and dlq["raw_key"] == b"junk-key"
    assert dlq["source_offset"] >= 0 and 0 <= dlq["source_partition"] < pipeline.settings.partitions


def test_concurrent_duplicate_creates_charge_once(pipeline: Pipeline) -> None:
    merchant = f"m_{uuid.uuid4().hex[:6]}"
    first = create(merchant, "retry-me", amount=4200)
    retries = [first | {"command_id": f"cmd_{uuid.uuid4().hex}"} for _ in range(19)]
    conflict = first | {"command_id": f"cmd_{uuid.uuid4().hex}", "amount_minor": 4300}

    seen = run(pipeline, [first, *retries, conflict])

    statuses = [seen.outcomes[c["command_id"]][0]["status"] for c in [first, *retries]]
    assert statuses.count("succeeded") == 1 and statuses.count("replayed") == 19
    out = seen.outcomes[conflict["command_id"]][0]
    assert (out["status"], out["reason_code"]) == ("rejected", "idempotency_conflict")
    # every answer shows the one authorization of 4200
    assert {seen.outcomes[c["command_id"]][0]["authorized_minor"] for c in [first, *retries]} == {4200}


def test_capture_refund_void_sequences(pipeline: Pipeline) -> None:
    m = f"m_{uuid.uuid4().hex[:6]}"
    a, b = create(m, "a", amount=1000), create(m, "b", amount=500)
    pa, pb = a["payment_id"], b["payment_id"]
    steps = [
        a,
        b,
        follow_up("capture", m, pa, "a-cap1", 600),
        follow_up("capture", m, pa, "a-cap2", 600),  # over the authorization
        follow_up("capture", m, pa, "a-cap3", 400),
        follow_up("refund", m, pa, "a-ref1", 250),
        follow_up("refund", m, pa, "a-ref2"),  # the rest: 750
        follow_up("refund", m, pa, "a-ref3", 1),  # nothing left
        follow_up("void", m, pb, "b-void"),
        follow_up("capture", m, pb, "b-cap"),  # after void
        follow_up("void", m, pa, "a-void"),  # after capture
        follow_up("capture", m, "pay_" + "0" * 32, "x-cap"),  # unknown payment
    ]
    seen = run(pipeline, steps)

    got = [
        (o["status"], o["reason_code"], o["payment_status"]) for o in (seen.outcomes[s["command_id"]][0] for s in steps)
    ]
    assert got == [
        ("succeeded", None, "authorized"),
        ("succeeded", None, "authorized"),
        ("succeeded", None, "partially_captured"),
        ("rejected", "amount_exceeds_authorized", "partially_captured"),
        ("succeeded", None, "captured"),
        ("succeeded", None, "partially_refunded"),
        ("succeeded", None, "refunded"),
        ("rejected", "already_refunded", "refunded"),
        ("succeeded", None, "voided"),
        ("rejected", "already_voided", "voided"),
        ("rejected", "already_captured", "refunded"),
        ("rejected", "payment_not_found", None),
    ]


@pytest.fixture
def own_pipeline(bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    """A worker of its own, for a test that moves event time days ahead: on the shared
    pipeline that would expire the other tests' authorizations in the same partition."""
    settings = make_settings(tmp_path, "expiry")
    worker = start_worker(settings)
    yield Pipeline(settings, worker)
    assert worker.stop() == 0, worker.log_tail()


def test_expiry_by_event_time(own_pipeline: Pipeline) -> None:
    pipeline = own_pipeline
    m = f"m_{uuid.uuid4().hex[:6]}"
    c = create(m, "exp", amount=700)
    pid = c["payment_id"]
    early = follow_up("expire", m, pid, "exp-1", at=T0 + timedelta(days=6))
    late = follow_up("expire", m, pid, "exp-2", at=T0 + timedelta(days=7))
    capture = follow_up("capture", m, pid, "exp-cap", at=T0 + timedelta(days=7, hours=1))
    seen = run(pipeline, [c, early, late, capture])
    assert seen.outcomes[early["command_id"]][0]["reason_code"] == "authorization_window_open"
    assert seen.outcomes[late["command_id"]][0]["payment_status"] == "expired"
    assert seen.outcomes[capture["command_id"]][0]["reason_code"] == "already_expired"


def test_invalid_input_is_answered_and_never_stalls(pipeline: Pipeline) -> None:
    m = f"m_{uuid.uuid4().hex[:6]}"
    bad_card = create(m, "bad-card", card={"number": "4242424242424241", "exp_month": 1, "exp_year": 2030, "cvc": None})
    bad_ccy = create(m, "bad-ccy", currency="XYZ")
    zero = create(m, "zero", amount=0)
    good = create(m, "good")
    seen = run(pipeline, [bad_card, bad_ccy, zero, good])
    reasons = [seen.outcomes[c["command_id"]][0]["reason_code"] for c in (bad_card, bad_ccy, zero, good)]
    assert reasons == ["invalid_card_number", "invalid_currency", "invalid_amount", None]


def card(number: str) -> dict:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def test_saga_paths_and_their_payment_events(pipeline: Pipeline) -> None:
    """A lost authorization response is resolved by a status query (one authorization);
    a refused capture is compensated by a void; events add up to the amounts."""
    m = f"m_{uuid.uuid4().hex[:6]}"
    lost = create(m, "lost", amount=900, capture_method="automatic", card=card("4000000000000119"))
    refused = create(m, "refused", amount=800, capture_method="automatic", card=card("4000000000000341"))
    down = create(m, "down", amount=700, card=card("4000000000003055"))
    plain = create(m, "plain", amount=1000)
    cap = follow_up("capture", m, plain["payment_id"], "plain-cap", 400)
    ref = follow_up("refund", m, plain["payment_id"], "plain-ref", 100)
    terminal = {lost["payment_id"]: "captured", refused["payment_id"]: "voided", plain["payment_id"]: "refunded"}

    def settled(o) -> bool:  # type: ignore[no-untyped-def]
        return all(any(e["type"] == t for e in o.events[pid]) for pid, t in terminal.items())

    seen = run(pipeline, [lost, refused, down, plain, cap, ref], settled=settled)

    def answer(c: dict) -> tuple:
        o = seen.outcomes[c["command_id"]][0]
        return o["status"], o["reason_code"], o["payment_status"]

    assert answer(lost) == ("succeeded", None, "pending")
    assert answer(refused) == ("rejected", "capture_failed", "failed")
    assert answer(down) == ("succeeded", None, "pending")
    types = {pid: [e["type"] for e in seen.events[pid]] for pid in (*terminal, down["payment_id"])}
    assert types[lost["payment_id"]] == ["authorization_pending", "authorized", "captured"]
    assert types[refused["payment_id"]] == ["authorized", "voided"]
    assert types[plain["payment_id"]] == ["authorized", "captured", "refunded"]
    assert types[down["payment_id"]] == ["authorization_pending"]  # left to ops after bounded queries
    for pid in types:
        versions = [e["version"] for e in seen.events[pid]]
        assert versions == list(range(1, len(versions) + 1)), pid  # once each, in order
    amounts = [(e["type"], e["amount_minor"], e["fee_minor"]) for e in seen.events[plain["payment_id"]]]
    assert amounts == [("authorized", 1000, 0), ("captured", 400, 41), ("refunded", 100, 0)]


def test_an_idempotency_key_is_the_merchants_across_payments(pipeline: Pipeline) -> None:
    m = f"m_{uuid.uuid4().hex[:6]}"
    a, b = create(m, "ka", amount=1000), create(m, "kb", amount=1000)
    cap_a = follow_up("capture", m, a["payment_id"], "shared-key", 100)
    cap_b = follow_up("capture", m, b["payment_id"], "shared-key", 100)  # same key, other payment
    other = create(f"{m}x", "shared-key")  # another merchant's key space
    # Two rounds: commands of different payments have no order between them.
    first = run(pipeline, [a, b, cap_a])
    seen = run(pipeline, [cap_b, other])
    answer = {
        n: o.outcomes[c["command_id"]][0]
        for n, c, o in (("a", cap_a, first), ("b", cap_b, seen), ("other", other, seen))
    }
    assert (answer["a"]["status"], answer["a"]["payment_status"]) == ("succeeded", "partially_captured")
    assert (answer["b"]["status"], answer["b"]["reason_code"]) == ("rejected", "idempotency_conflict")
    assert answer["other"]["status"] == "succeeded"
