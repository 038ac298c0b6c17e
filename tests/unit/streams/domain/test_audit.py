"""The audit and replay over topic records: a clean log passes with its counts;
each kind of tampering is caught at the right partition/offset with its reason."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings

from schemas.codec import Codec, DecodeError
from schemas.partitioning import partition_for
from streams.domain.audit import ENTRIES_TOPIC, EVENTS_TOPIC, LogStart, ReplayError, audit, compare, rebuild
from streams.domain.chain import CHAIN_FIELDS, ChainHead, Signer, event_hash, link, seal, sign_block
from streams.domain.ledger import (
    SettlementTerms,
    add_into,
    entry_to_record,
    post,
    reverse,
    shard_for,
)
from tests.unit.streams.ledger_support import event, histories, method_histories, run_methods

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # test fixture only
SIGNER = Signer("sig-v1", KEY)
PUBLIC = {"sig-v1": KEY.public_key()}
PARTITIONS = 4
EVENTS = Codec("PaymentEvent")
ENTRIES = Codec("LedgerEntry")


class Log:
    """The two topics as the workers would write them: events sealed per
    partition (keyed by payment_id), one entry per posting event (keyed by shard)."""

    def __init__(self, events: list[dict[str, Any]], signer: Signer = SIGNER) -> None:
        self.events: dict[int, list[dict]] = {p: [] for p in range(PARTITIONS)}
        self.entries: dict[int, list[dict]] = {p: [] for p in range(PARTITIONS)}
        self.heads = {p: ChainHead.genesis(p) for p in range(PARTITIONS)}
        self.balances: dict = {}
        for e in events:
            self.append(e, signer)

    def append(self, e: dict[str, Any], signer: Signer = SIGNER) -> None:
        p = partition_for(e["payment_id"].encode(), PARTITIONS)
        sealed, self.heads[p] = seal(e, self.heads[p], signer)
        self.events[p].append(EVENTS.decode(EVENTS.encode(sealed)))  # what a reader gets back
        shard = shard_for(e["merchant_id"], PARTITIONS)
        entry = post(e, shard=shard, settlement=SettlementTerms(e["currency"]))
        if entry is not None:
            add_into(self.balances, entry)
            self.entries[shard].append(ENTRIES.decode(ENTRIES.encode(entry_to_record(entry))))

    def records(self) -> list[tuple[str, int, int, Any]]:
        out = [(EVENTS_TOPIC, p, o, r) for p, rs in self.events.items() for o, r in enumerate(rs)]
        return out + [(ENTRIES_TOPIC, p, o, r) for p, rs in self.entries.items() for o, r in enumerate(rs)]

    def partition_of(self, payment_id: str) -> int:
        return partition_for(payment_id.encode(), PARTITIONS)


def lifecycle(pid: str = "pay_a", merchant: str = "m_acme") -> list[dict]:
    kw = {"payment_id": pid, "merchant": merchant}
    return [
        event("authorized", amount=10_000, authorized=10_000, version=1, **kw),
        event("captured", amount=4_000, fee=120, authorized=10_000, captured=4_000, version=2, **kw),
        event("captured", amount=3_000, fee=90, authorized=10_000, captured=7_000, version=3, **kw),
        event("voided", amount=3_000, authorized=10_000, captured=7_000, version=4, **kw),
        event("refunded", amount=500, authorized=10_000, captured=7_000, refunded=500, version=5, **kw),
        event("settled", amount=6_500, authorized=10_000, captured=7_000, refunded=500, version=6, **kw),
    ]


@pytest.fixture
def log() -> Log:
    return Log(lifecycle("pay_a") + lifecycle("pay_b", "m_globex") + lifecycle("pay_c"))


def first(report) -> tuple[str, int | None, int | None, str]:  # type: ignore[no-untyped-def]
    f = report.first_failure
    assert f is not None, "expected a failure"
    return f.topic, f.partition, f.offset, f.reason


def test_a_clean_log_passes_with_counts(log: Log) -> None:
    report = audit(log.records(), PUBLIC)
    assert report.ok, report.failures
    assert (report.events, report.entries, report.signatures_verified, report.payments) == (18, 18, 18, 3)
    assert report.events_authenticated == 18
    assert report.partitions == len([p for p, rs in log.events.items() if rs])
    assert report.totals == {} and report.records == 36 and report.accounts > 0


@settings(max_examples=60)
@given(histories())
def test_random_histories_audit_clean_and_rebuild_the_same_books(events: list[dict]) -> None:
    log = Log(events)
    report = audit(log.records(), PUBLIC)
    assert report.ok, report.failures
    rebuilt = rebuild(log.records())
    assert rebuilt.balances == log.balances
    assert rebuilt.chain_heads == {p: h for p, h in log.heads.items() if h.seq}
    assert compare(log.balances, rebuilt.chain_heads, rebuilt) == []


def blocks(log: Log, size: int) -> dict[int, list[dict]]:
    """The log's events as the payments stage writes them: linked, each block of
    `size` events per partition signed once, on its last event."""
    out: dict[int, list[dict]] = {}
    for p, events in log.events.items():
        head, out[p] = ChainHead.genesis(p), []
        for i, e in enumerate(events):
            linked, head = link({k: v for k, v in e.items() if k not in CHAIN_FIELDS}, head, SIGNER.key_id)
            last = i % size == size - 1 or i == len(events) - 1
            out[p].append(EVENTS.decode(EVENTS.encode(sign_block(linked, SIGNER) if last else linked)))
    return out


def with_events(log: Log, events: dict[int, list[dict]]) -> list[tuple[str, int, int, Any]]:
    log.events = events
    return log.records()


@pytest.mark.parametrize("size", [2, 4, 100])
def test_blocks_signed_on_their_last_event_audit_clean(log: Log, size: int) -> None:
    records = with_events(log, blocks(log, size))
    report = audit(records, PUBLIC)
    assert report.ok, report.failures
    signed = sum(1 for _, _, _, e in records if e.get("signature") is not None and "chain_seq" in e)
    assert (report.events_authenticated, report.signatures_verified) == (18, signed)
    assert signed < 18


def test_an_unsigned_tail_is_named_where_it_starts(log: Log) -> None:
    events = blocks(log, 2)
    p = log.partition_of("pay_a")
    head = ChainHead(p, events[p][-1]["chain_seq"], event_hash(events[p][-1]))
    tail, head = link(lifecycle("pay_t")[0], head, SIGNER.key_id)
    tail2, _ = link(lifecycle("pay_t")[1], head, SIGNER.key_id)
    at = len(events[p])
    events[p] += [EVENTS.decode(EVENTS.encode(e)) for e in (tail, tail2)]
    report = audit(with_events(log, events), PUBLIC)
    assert first(report) == (EVENTS_TOPIC, p, at, "unsigned")


def test_an_altered_event_inside_a_block_breaks_the_next_link(log: Log) -> None:
    events = blocks(log, 4)
    p = log.partition_of("pay_a")
    assert events[p][0]["signature"] is None
    events[p][0]["amount_minor"] += 1
    found = {(f.partition, f.offset, f.reason) for f in audit(with_events(log, events), PUBLIC).failures}
    assert (p, 1, "chain_broken_link") in found  # the unsigned event's hash changed under its successor


def test_a_block_whose_signature_fails_leaves_its_events_unsigned(log: Log) -> None:
    events = blocks(log, 3)
    p = log.partition_of("pay_a")
    sig = bytearray(events[p][2]["signature"])
    sig[0] ^= 0x01
    events[p][2]["signature"] = bytes(sig)
    found = {(f.offset, f.reason) for f in audit(with_events(log, events), PUBLIC).failures if f.partition == p}
    assert {(0, "unsigned"), (2, "bad_signature")} <= found


# --- tampering, each detected with its reason ---


def test_tampered_signature(log: Log) -> None:
    p = log.partition_of("pay_a")
    sig = bytearray(log.events[p][2]["signature"])
    sig[10] ^= 0x01
    log.events[p][2]["signature"] = bytes(sig)
    report = audit(log.records(), PUBLIC)
    assert first(report) == (EVENTS_TOPIC, p, 2, "bad_signature")
    assert report.failures_total == 1  # its successor still links: no cascade


def test_altered_amount(log: Log) -> None:
    p = log.partition_of("pay_b")
    i = next(i for i, e in enumerate(log.events[p]) if e["payment_id"] == "pay_b" and e["type"] == "refunded")
    log.events[p][i]["amount_minor"] = 50
    report = audit(log.records(), PUBLIC)
    assert first(report) == (EVENTS_TOPIC, p, i, "bad_signature")
    # the (untouched) entry no longer matches its altered event either
    assert "entry_mismatch" in {f.reason for f in report.failures}


def test_deleted_event(log: Log) -> None:
    p = log.partition_of("pay_c")
    del log.events[p][3]
    report = audit(log.records(), PUBLIC)
    assert first(report) == (EVENTS_TOPIC, p, 3, "chain_gap")
    assert "orphan_entry" in {f.reason for f in report.failures}  # its entry lost its event


def test_a_log_whose_head_was_deleted_is_named_and_cannot_be_replayed(log: Log) -> None:
    p = log.partition_of("pay_c")
    records = [(EVENTS_TOPIC, p, 2, LogStart())] + [
        r for r in log.records() if not (r[0] == EVENTS_TOPIC and r[1] == p and r[2] < 2)
    ]
    report = audit(records, PUBLIC)
    found = {(f.topic, f.partition, f.offset, f.reason) for f in report.failures}
    assert {(EVENTS_TOPIC, p, 2, "log_truncated"), (EVENTS_TOPIC, p, 2, "chain_gap")} <= found
    with pytest.raises(ReplayError):
        rebuild(records)


def test_reordered_events(log: Log) -> None:
    p = log.partition_of("pay_a")
    log.events[p][1], log.events[p][2] = log.events[p][2], log.events[p][1]
    report = audit(log.records(), PUBLIC)
    assert first(report) == (EVENTS_TOPIC, p, 1, "chain_reorder")


def test_forged_foreign_record(log: Log) -> None:
    p = log.partition_of("pay_a")
    head = ChainHead(p, log.heads[p].seq, log.heads[p].hash)
    forged, _ = seal(
        event(
            "refunded", amount=6_500, payment_id="pay_a", version=7, authorized=10_000, captured=7_000, refunded=7_000
        ),
        head,
        Signer("sig-v1-rotated", Ed25519PrivateKey.generate()),
    )
    log.events[p].append(forged)
    report = audit(log.records(), PUBLIC)
    assert first(report) == (EVENTS_TOPIC, p, len(log.events[p]) - 1, "unknown_key")


def test_forged_record_claiming_a_known_key_id(log: Log) -> None:
    p = log.partition_of("pay_a")
    forged, _ = seal(
        event("refunded", amount=1, payment_id="pay_a", version=7),
        log.heads[p],
        Signer("sig-v1", Ed25519PrivateKey.generate()),
    )
    log.events[p].append(forged)
    assert first(audit(log.records(), PUBLIC))[3] == "bad_signature"


def test_fork_two_records_at_one_position(log: Log) -> None:
    p = log.partition_of("pay_a")
    log.events[p].insert(3, dict(log.events[p][2]) | {"event_id": "evt-copy"})
    log.events[p][3] = seal(
        {k: v for k, v in log.events[p][3].items()}, ChainHead(p, 2, log.events[p][2]["prev_hash"]), SIGNER
    )[0]
    assert first(audit(log.records(), PUBLIC)) == (EVENTS_TOPIC, p, 3, "chain_fork")


def test_broken_link(log: Log) -> None:
    p = log.partition_of("pay_a")
    # re-sealed with a valid signature but chained to the wrong predecessor
    log.events[p][2] = seal(log.events[p][2], ChainHead(p, 2, b"\x07" * 32), SIGNER)[0]
    assert first(audit(log.records(), PUBLIC)) == (EVENTS_TOPIC, p, 2, "chain_broken_link")


def test_undecodable_record(log: Log) -> None:
    records = log.records()
    records.insert(0, (EVENTS_TOPIC, 0, 99, DecodeError("malformed_avro", "x")))
    report = audit(records, PUBLIC)
    assert any(f.reason == "undecodable" and f.detail == "malformed_avro" for f in report.failures)


# --- the books ---


def test_entry_altered_but_balanced_does_not_match_its_event(log: Log) -> None:
    p, rows = next((p, rs) for p, rs in log.entries.items() if rs)
    for line in rows[0]["lines"]:
        line["debit_minor"] and line.update(debit_minor=line["debit_minor"] + 1)
        line["credit_minor"] and line.update(credit_minor=line["credit_minor"] + 1)
    assert first(audit(log.records(), PUBLIC)) == (ENTRIES_TOPIC, p, 0, "entry_mismatch")


def test_unbalanced_entry(log: Log) -> None:
    p, rows = next((p, rs) for p, rs in log.entries.items() if rs)
    rows[0]["lines"][0]["debit_minor"] += 1
    report = audit(log.records(), PUBLIC)
    assert first(report) == (ENTRIES_TOPIC, p, 0, "entry_unbalanced")


def test_missing_and_duplicate_entries(log: Log) -> None:
    p, rows = next((p, rs) for p, rs in log.entries.items() if rs)
    rows.append(dict(rows[0]))  # a redelivery: counted, not applied twice
    report = audit(log.records(), PUBLIC)
    assert report.ok and report.duplicate_entries == 1
    del rows[1]
    assert "missing_entry" in {f.reason for f in audit(log.records(), PUBLIC).failures}


def test_conflicting_entry_and_orphan_reversal(log: Log) -> None:
    p, rows = next((p, rs) for p, rs in log.entries.items() if rs)
    rows.append(dict(rows[0]) | {"shard": 99})
    assert "entry_conflict" in {f.reason for f in audit(log.records(), PUBLIC).failures}
    rows.pop()
    original = post(event("captured", amount=5, payment_id="pay_x"), shard=p)
    rows.append(entry_to_record(reverse(original, correction_id="c1", occurred_at_ms=0)))
    report = audit(log.records(), PUBLIC)
    assert [f.reason for f in report.failures] == ["orphan_reversal"]


def test_a_one_sided_entry_is_refused_not_applied(log: Log) -> None:
    p, rows = next((p, rs) for p, rs in log.entries.items() if rs)
    rows[0]["lines"] = rows[0]["lines"][:1]
    report = audit(log.records(), PUBLIC)
    assert first(report) == (ENTRIES_TOPIC, p, 0, "entry_unbalanced")
    assert report.failures_total == 1 and report.totals == {}


# --- payment invariants on signed events ---


def test_capture_after_void() -> None:
    log = Log(
        [
            event("authorized", amount=100, authorized=100, version=1),
            event("voided", amount=100, authorized=100, version=2),
            event("captured", amount=100, authorized=100, captured=100, version=3),
        ]
    )
    report = audit(log.records(), PUBLIC)
    assert "capture_after_void" in {f.reason for f in report.failures}


def test_over_capture_and_over_refund() -> None:
    log = Log(
        [
            event("authorized", amount=100, authorized=100, version=1),
            event("captured", amount=150, authorized=100, captured=150, version=2),
            event("refunded", amount=200, authorized=100, captured=150, refunded=200, version=3),
        ]
    )
    reasons = {f.reason for f in audit(log.records(), PUBLIC).failures}
    assert {"captured_exceeds_authorized", "refunded_exceeds_captured"} <= reasons


def test_versions_must_increase_and_totals_add_up() -> None:
    log = Log(
        [
            event("authorized", amount=100, authorized=100, version=2),
            event("captured", amount=10, authorized=100, captured=30, version=2),
        ]
    )
    reasons = [f.reason for f in audit(log.records(), PUBLIC).failures]
    assert reasons == ["version_not_increasing", "totals_mismatch"]


def dispute_log(*tail: tuple[str, int]) -> Log:
    """A captured payment of 1,000 with 200 refunded, then the given (type, amount) events."""
    events = [
        event("authorized", amount=1_000, authorized=1_000, version=1),
        event("captured", amount=1_000, authorized=1_000, captured=1_000, version=2),
        event("refunded", amount=200, authorized=1_000, captured=1_000, refunded=200, version=3),
    ]
    refunded = 200
    for i, (etype, amount) in enumerate(tail, start=4):
        refunded += amount if etype == "refunded" else 0
        events.append(event(etype, amount=amount, authorized=1_000, captured=1_000, refunded=refunded, version=i))
    return Log(events)


def reasons_of(log: Log) -> list[str]:
    return [f.reason for f in audit(log.records(), PUBLIC).failures]


def test_a_dispute_lifecycle_audits_clean() -> None:
    assert (
        reasons_of(
            dispute_log(
                ("dispute_opened", 800),
                ("dispute_won", 800),
                ("dispute_opened", 300),
                ("dispute_lost", 300),
                ("refunded", 500),
            )
        )
        == []
    )


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        ((("dispute_opened", 900),), "disputed_exceeds_captured"),
        ((("dispute_opened", 300), ("dispute_opened", 300)), "dispute_already_open"),
        ((("dispute_opened", 300), ("refunded", 100)), "refund_during_dispute"),
        ((("dispute_opened", 300), ("dispute_lost", 200)), "dispute_mismatch"),
        ((("dispute_won", 300),), "dispute_mismatch"),
        ((("dispute_opened", 800), ("dispute_lost", 800), ("refunded", 1)), "disputed_exceeds_captured"),
    ],
)
def test_dispute_invariants(tail: tuple, reason: str) -> None:
    assert reason in reasons_of(dispute_log(*tail))


def test_duplicate_event_id() -> None:
    e = event("authorized", amount=100, authorized=100, version=1)
    log = Log([e, e | {"version": 2}])
    assert "duplicate_event" in {f.reason for f in audit(log.records(), PUBLIC).failures}


# --- replay ---


def test_rebuild_and_compare_name_the_differences(log: Log) -> None:
    rebuilt = rebuild(log.records())
    assert rebuilt.balances == log.balances and rebuilt.events == 18 and rebuilt.entries == 18
    live = dict(log.balances)
    key = next(iter(live))
    live[key] += 1
    live[("house:fees:9", "USD")] = 0  # a stored zero is no difference
    heads = dict(rebuilt.chain_heads)
    p = next(iter(heads))
    heads[p] = ChainHead(p, heads[p].seq - 1, heads[p].hash)
    diffs = compare(live, heads, rebuilt)
    assert [(d.kind, d.key) for d in diffs] == [("balance", f"{key[0]} {key[1]}"), ("chain_head", f"partition {p}")]
    assert diffs[0].live == str(live[key]) and diffs[0].rebuilt == str(log.balances[key])


def test_rebuild_applies_redelivered_entries_once(log: Log) -> None:
    p, rows = next((p, rs) for p, rs in log.entries.items() if rs)
    rows.append(dict(rows[0]))
    rebuilt = rebuild(log.records())
    assert rebuilt.balances == log.balances and rebuilt.duplicate_entries == 1


@pytest.mark.parametrize(
    ("record", "reason"),
    [(DecodeError("malformed_avro", "x"), "undecodable"), ({"lines": []}, "malformed")],
)
def test_rebuild_names_a_record_it_cannot_fold(record: Any, reason: str) -> None:
    with pytest.raises(ReplayError) as err:
        rebuild([(ENTRIES_TOPIC, 2, 41, record)])
    assert (err.value.partition, err.value.offset) == (2, 41) and reason in str(err.value)


# --- split payments and bank payouts ---


def market_log() -> tuple[Log, list]:
    """A split payment (captured, partly refunded) through decide(), its day settled and paid
    out: the platform and one seller paid, the other seller's account closed (reversed)."""
    from connectors.providers.bank import DAY_MS, BankRail
    from streams.domain.ledger import entry_from_record
    from streams.domain.payments import Policy, decide
    from streams.domain.payouts import payout_of_settlement, run_payouts
    from streams.domain.settlement import cutoff_ms, settle
    from tests.unit.streams.conftest import Commands, saga_of

    cmds, events, p = Commands(), [], None
    create = cmds.create(amount=10_000, capture_method="manual") | {
        "splits": [{"merchant_id": "m_sa", "amount_minor": 6_000}, {"merchant_id": "m_sb", "amount_minor": 3_000}],
        "platform_fee_minor": 1_000,
    }
    for cmd in (
        create,
        cmds.capture(create["payment_id"], "c1"),
        cmds.refund(create["payment_id"], "r1", amount=2_500),
    ):
        d = decide(p, cmd, saga_of(), Policy())
        p, events = d.payment, events + list(d.events)
    log = Log(events)
    entries = [e for rs in log.entries.values() for e in rs]
    run = settle(cmds.t0.date(), [entry_from_record(e) for e in entries], shards=PARTITIONS)
    paid = run_payouts(
        [payout_of_settlement(e) for e in run.entries],
        {},
        bank=BankRail(closed_accounts=frozenset({"m_sb"})),
        as_of_ms=cutoff_ms(cmds.t0.date()) + 5 * DAY_MS,
        shards=PARTITIONS,
    )
    extra = [*run.entries, *paid.entries]
    for e in extra:
        log.entries[e.shard].append(ENTRIES.decode(ENTRIES.encode(entry_to_record(e))))
    return log, extra


def test_a_split_payment_settled_and_paid_out_audits_clean() -> None:
    log, extra = market_log()
    assert {e.event_type for e in extra} == {"settlement", "payout_sent", "payout_paid", "reversal"}
    report = audit(log.records(), PUBLIC)
    assert report.ok, report.first_failure
    assert not report.totals


def test_a_split_entry_crediting_another_share_does_not_match_its_event() -> None:
    log, _ = market_log()
    shard, offset, record = next(
        (s, o, r) for s, rs in log.entries.items() for o, r in enumerate(rs) if r["event_type"] == "captured"
    )
    lines = record["lines"]
    a = next(i for i, x in enumerate(lines) if x["account"] == "merchant:m_sa:pending")
    b = next(i for i, x in enumerate(lines) if x["account"] == "merchant:m_sb:pending")
    lines[a] = lines[a] | {"credit_minor": lines[a]["credit_minor"] + 1}
    lines[b] = lines[b] | {"credit_minor": lines[b]["credit_minor"] - 1}  # still balanced
    assert first(audit(log.records(), PUBLIC)) == (ENTRIES_TOPIC, shard, offset, "entry_mismatch")


def test_a_payout_paid_twice_is_named_where_it_was_posted() -> None:
    log, extra = market_log()
    paid = next(e for e in extra if e.event_type == "payout_paid")
    twice = entry_to_record(paid) | {"entry_id": "je_" + "0" * 32}
    log.entries[paid.shard].append(ENTRIES.decode(ENTRIES.encode(twice)))
    report = audit(log.records(), PUBLIC)
    assert [f.reason for f in report.failures] == ["payout_twice"]


# --- payment methods: the bank-transfer lifecycle audits clean (streams/domain/methods.py) ---


@settings(max_examples=40, deadline=None)
@given(method_histories())
def test_method_histories_audit_clean(commands: list[dict]) -> None:
    _, events = run_methods(commands)
    report = audit(Log(events).records(), PUBLIC)
    assert report.ok, report.failures


def test_a_bank_submission_that_claims_no_capture_is_named() -> None:
    submitted = event("bank_submitted", amount=10_000, authorized=10_000, captured=0, status="submitted")
    report = audit(Log([submitted]).records(), PUBLIC)
    assert first(report)[3] == "totals_mismatch"
