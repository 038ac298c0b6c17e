"""Properties of `decide` over random command sequences, run the way the payments
agent runs it: a dedup table by command_id, the payment stored as JSON between steps.

Invariants (DESIGN.md): every command has exactly one outcome; no idempotency key is
applied twice; captured <= authorized <= amount and refunded <= captured; no capture
after void or expiry; replay is deterministic; money is integer minor units.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.providers.simulated import Call, ProviderResult
from schemas.codec import Codec
from schemas.ids import derive_outcome_id, derive_payment_id
from streams.domain.payments import Decision, Payment, Policy, decide, expire_due
from streams.domain.timers import Timer
from tests.unit.streams.conftest import ScriptedProvider, saga_of

POLICY = Policy()
OUTCOMES = Codec("PaymentOutcome")
EVENTS = Codec("PaymentEvent")
MERCHANTS = ("m_acme", "m_globex")
CREATE_KEYS = ("order-1", "order-2", "order-3")
FOLLOW_UP_KEYS = ("k1", "k2", "k3", "k4")
DAY_MS = 24 * 3600 * 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Provider(ScriptedProvider):
    """Deterministic by amount: 1 is declined; 2,500 times out (a status query then
    finds it approved); a capture of 5,000 is refused; everything else approved."""

    def authorize(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, currency: str, call: Call | None = None
    ) -> ProviderResult:
        super().authorize(key, card_bin, card_last4, amount_minor, currency)
        if amount_minor == 1:
            return ProviderResult("declined", "card_declined")
        return ProviderResult("unknown", "provider_timeout") if amount_minor == 2_500 else ProviderResult("approved")

    def capture(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, call: Call | None = None
    ) -> ProviderResult:
        super().capture(key, card_bin, card_last4, amount_minor)
        return (
            ProviderResult("declined", "capture_refused")
            if amount_minor == 5_000
            else ProviderResult("approved", fee_minor=3)
        )


steps = st.lists(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(("create",) * 2 + ("capture",) * 3 + ("refund",) * 2 + ("void", "expire")),
            "owner": st.sampled_from(MERCHANTS),
            "create_key": st.sampled_from(CREATE_KEYS),
            "target": st.integers(0, 100),  # which earlier create a follow-up is about
            "key": st.sampled_from(FOLLOW_UP_KEYS),
            "foreign": st.sampled_from((False,) * 7 + (True,)),  # sent by the other merchant
            "amount": st.sampled_from((None, 1, 500, 1_000, 2_500, 5_000, 10_000, 12_000)),  # see Provider
            "currency": st.sampled_from((None, None, None, "USD", "EUR")),
            "capture_method": st.sampled_from(("automatic", "manual")),
            "advance_ms": st.sampled_from((0, 1, 60_000, DAY_MS, 8 * DAY_MS)),
            "redeliver": st.sampled_from((None,) * 8 + (1, 2, 5)),  # resend the n-th last message as is
        }
    ),
    min_size=1,
    max_size=40,
)


def to_commands(cmds, drawn: list[dict[str, Any]]) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The messages on the validated topic, in order, for the drawn steps. Event time
    only moves forward; a redelivery is an earlier message again, byte for byte."""
    sent: list[dict[str, Any]] = []
    created: list[tuple[str, str]] = []  # (merchant, payment_id) of every create so far
    clock = cmds.t0
    for i, s in enumerate(drawn):
        if i == 0:
            s = s | {"kind": "create", "redeliver": None}  # start with a payment; unknown ones come below
        if s["redeliver"] is not None:
            sent.append(sent[-min(s["redeliver"], len(sent))])
            continue
        clock += timedelta(milliseconds=s["advance_ms"])
        common = {"at": clock, "command_id": f"cmd-{i}"}
        if s["kind"] == "create":
            sent.append(
                cmds.create(
                    s["create_key"],
                    merchant=s["owner"],
                    amount=s["amount"] or 10_000,
                    currency=s["currency"] or "USD",
                    capture_method=s["capture_method"],
                    **common,
                )
            )
            created.append((s["owner"], sent[-1]["payment_id"]))
            continue
        # Mostly about an earlier create; otherwise a payment that may not exist.
        owner, pid = (
            created[s["target"] % len(created)]
            if created and s["target"] < 90
            else (s["owner"], derive_payment_id(s["owner"], s["create_key"]))
        )
        sender = MERCHANTS[1 - MERCHANTS.index(owner)] if s["foreign"] else owner
        sent.append(
            cmds.follow_up(
                s["kind"], pid, s["key"], merchant=sender, amount=s["amount"], currency=s["currency"], **common
            )
        )
    return sent


def request(cmd: dict[str, Any]) -> dict[str, Any]:
    """What a command asks for: a retry regenerates command_id and occurred_at only."""
    return {k: v for k, v in cmd.items() if k not in ("command_id", "occurred_at")}


def ms(cmd: dict[str, Any]) -> int:
    return (cmd["occurred_at"] - EPOCH) // timedelta(milliseconds=1)


@dataclass
class Agent:
    """The payments agent's loop without Kafka: dedup table, payments table, outcome
    log; plus, for checking, the request each (payment, key) was first applied with."""

    provider: Provider = field(default_factory=Provider)
    table: dict[str, bytes] = field(default_factory=dict)
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    watermark_ms: int = 0
    applied_keys: Counter[tuple[str, str]] = field(default_factory=Counter)
    requests: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def handle(self, cmd: dict[str, Any]) -> None:
        if cmd["command_id"] in self.applied:
            return  # a redelivery: already answered
        pid = cmd["payment_id"]
        before = Payment.from_json(self.table[pid]) if pid in self.table else None
        d = decide(before, cmd, saga_of(self.provider), POLICY)
        self.check_decision(before, cmd, d)
        if d.changed:
            if cmd["kind"] != "resolve":
                self.applied_keys[(pid, cmd["idempotency_key"])] += 1
                self.requests[(pid, cmd["idempotency_key"])] = request(cmd)
            self.table[pid] = d.payment.to_json()
        self.applied[cmd["command_id"]] = d.outcome
        self.published.append(d.outcome)
        self.events.extend(d.events)
        self.timers.extend(d.timers)
        self.check_state()
        for internal in d.commands:  # the stage reads what it sent itself
            self.handle(internal)
        self.watermark_ms = max(self.watermark_ms, ms(cmd))
        self.fire_timers()

    def fire_timers(self) -> None:
        due = sorted((t for t in self.timers if t.due_ms <= self.watermark_ms), key=lambda t: t.due_ms)
        self.timers = [t for t in self.timers if t.due_ms > self.watermark_ms]
        for timer in due:
            before = Payment.from_json(self.table[timer.ref])
            d = expire_due(before, timer, saga_of(self.provider), POLICY)
            if d is None:
                continue
            assert (d.outcome, d.commands, d.timers) == (None, (), ())
            assert d.payment.hold_minor == 0 and d.payment.released_minor > before.released_minor
            assert [e["type"] for e in d.events] == ["expired"]
            self.table[timer.ref] = d.payment.to_json()
            self.events.extend(d.events)
            self.check_state()

    def payments(self) -> list[Payment]:
        return [Payment.from_json(data) for data in self.table.values()]

    def check_state(self) -> None:
        for p in self.payments():
            assert 0 <= p.refunded_minor <= p.captured_minor <= p.authorized_minor <= p.amount_minor, p
            assert {k for (pid, k) in self.requests if pid == p.payment_id} == set(p.idempotency)
        assert max(self.applied_keys.values(), default=0) <= 1, "an idempotency key was applied twice"
        assert len(self.published) == len(self.applied)
        self.check_events()

    def check_events(self) -> None:
        """The events of a payment add up to its amounts, in version order, once each."""
        assert len({e["event_id"] for e in self.events}) == len(self.events)
        for p in self.payments():
            mine = [e for e in self.events if e["payment_id"] == p.payment_id]
            assert [e["version"] for e in mine] == list(range(1, p.version + 1))
            total = Counter()
            for e in mine:
                EVENTS.encode(e, check=True)
                total[e["type"]] += e["amount_minor"]
                assert e["fee_minor"] >= 0 and (e["fee_minor"] == 0 or e["type"] == "captured")
            assert total["authorized"] == p.authorized_minor
            assert total["captured"] == p.captured_minor
            assert total["refunded"] == p.refunded_minor
            assert total["voided"] + total["expired"] == p.released_minor
            assert mine[-1]["payment_status"] == p.status

    def check_decision(self, before: Payment | None, cmd: dict[str, Any], d: Decision) -> None:
        out = d.outcome
        assert out["command_id"] == cmd["command_id"]
        assert out["outcome_id"] == derive_outcome_id(cmd["command_id"])
        OUTCOMES.encode(out, check=True)
        if not d.changed:
            assert d.payment is before, "a rejection or replay changed the payment"
            assert out["status"] in ("rejected", "replayed")

        if before is not None and before.merchant_id != cmd["merchant_id"]:
            assert (out["reason_code"], d.changed) == ("payment_not_found", False), "another merchant's payment"
            return
        first = self.requests.get((cmd["payment_id"], cmd["idempotency_key"]))
        if first is not None:
            # A key already applied: answered from its record, never applied again.
            assert not d.changed
            expected = ("replayed", None) if request(cmd) == first else ("rejected", "idempotency_conflict")
            assert (out["status"], out["reason_code"] if out["status"] == "rejected" else None) == expected
            return
        if d.changed:
            check_transition(before, cmd, d)


def check_transition(before: Payment | None, cmd: dict[str, Any], d: Decision) -> None:
    after, out = d.payment, d.outcome
    assert out["payment_status"] == after.status
    assert after.version == (before.version if before else 0) + len(d.events)
    if cmd["kind"] == "resolve":
        assert before.status == "pending" and out["status"] == "succeeded"
        assert after.status in ("pending", "captured", "authorized", "failed")
        return
    assert cmd["idempotency_key"] in after.idempotency
    if cmd["kind"] == "create":
        assert before is None
        assert (out["status"], after.status) in {
            ("succeeded", "captured"),
            ("succeeded", "authorized"),
            ("succeeded", "pending"),
            ("rejected", "declined"),
            ("rejected", "failed"),
        }
        return
    assert out["status"] == "succeeded"
    assert len(after.idempotency) == len(before.idempotency) + 1
    assert len(d.events) == 1
    assert after.authorized_minor == before.authorized_minor and after.amount_minor == before.amount_minor
    captured = after.captured_minor - before.captured_minor
    refunded = after.refunded_minor - before.refunded_minor
    window_closed = ms(cmd) >= before.created_at_ms + POLICY.auth_window // timedelta(milliseconds=1)
    if cmd["kind"] == "capture":
        assert before.status in ("authorized", "partially_captured"), "capture after void, expiry or decline"
        assert not window_closed, "capture after the authorization window"
        assert captured == (cmd["amount_minor"] or before.authorized_minor - before.captured_minor) and refunded == 0
    elif cmd["kind"] == "refund":
        assert refunded == (cmd["amount_minor"] or before.captured_minor - before.refunded_minor) and captured == 0
    else:
        assert (captured, refunded) == (0, 0)
        assert after.hold_minor == 0 < before.hold_minor
        expected = "expired" if before.status == "authorized" else before.status
        assert after.status == {"void": "voided", "expire": expected}[cmd["kind"]]
        if cmd["kind"] == "expire":
            assert window_closed, "expired inside the authorization window"


def run(commands: list[dict[str, Any]]) -> Agent:
    agent = Agent()
    for cmd in commands:
        agent.handle(cmd)
    return agent


@settings(max_examples=300, deadline=None)
@given(drawn=steps)
def test_invariants_hold_after_every_command(cmds, drawn: list[dict[str, Any]]) -> None:
    commands = to_commands(cmds, drawn)
    agent = run(commands)  # checks every step

    # Exactly one outcome per command_id, redeliveries included.
    answered = [o["command_id"] for o in agent.published]
    assert len(answered) == len(set(answered))
    # ...and the stage's own status queries are answered like any command.
    assert {o["command_id"] for o in agent.published if o["kind"] != "resolve"} == {c["command_id"] for c in commands}


@settings(max_examples=100, deadline=None)
@given(drawn=steps)
def test_replaying_the_same_commands_rebuilds_the_same_state(cmds, drawn: list[dict[str, Any]]) -> None:
    commands = to_commands(cmds, drawn)
    first, second = run(commands), run(commands)
    assert first.table == second.table
    assert first.published == second.published


def minor_fields(obj: Any) -> list[tuple[str, Any]]:
    """Every (name, value) of a `*_minor` field, at any depth."""
    if isinstance(obj, dict):
        found = [(k, v) for k, v in obj.items() if k.endswith("_minor")]
        return found + [kv for v in obj.values() for kv in minor_fields(v)]
    if isinstance(obj, list):
        return [kv for v in obj for kv in minor_fields(v)]
    return []


@settings(max_examples=100, deadline=None)
@given(drawn=steps)
def test_money_is_always_integer_minor_units(cmds, drawn: list[dict[str, Any]]) -> None:
    agent = run(to_commands(cmds, drawn))
    states = [asdict(p) for p in agent.payments()]  # includes every stored idempotency outcome
    fields = minor_fields([states, agent.published])
    assert len(fields) >= 4 * len(agent.published)  # four amount fields per outcome at least
    for name, value in fields:
        # Only an outcome's requested amount may be absent (a capture of "the rest").
        assert type(value) is int or (value is None and name == "amount_minor"), (name, value)
    for state in states:
        assert all(
            type(state[k]) is int for k in ("amount_minor", "authorized_minor", "captured_minor", "refunded_minor")
        )


# --- disputes: the state machine's events keep the books ---

dispute_steps = st.lists(
    st.tuples(
        st.sampled_from(("capture", "refund", "dispute_open", "dispute_evidence", "dispute_close", "void")),
        st.sampled_from((None, 1, 700, 3_000, 10_000)),  # amount
        st.sampled_from(("won", "lost")),
        st.sampled_from(("fraudulent", "general")),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(capture_method=st.sampled_from(("automatic", "manual")), drawn=dispute_steps)
def test_disputes_keep_the_ledger_invariants(cmds, capture_method: str, drawn: list) -> None:  # type: ignore[no-untyped-def]
    from streams.domain.ledger import add_into, post, totals_by_currency

    first = decide(None, cmds.create(capture_method=capture_method), saga_of(Provider()), POLICY)
    p, events, labels, balances = first.payment, list(first.events), [], {}
    lost = 0
    for i, (kind, amount, outcome, reason) in enumerate(drawn):
        at = cmds.t0 + timedelta(minutes=i + 1)
        if kind in ("capture", "refund", "void"):
            cmd = cmds.follow_up(kind, p.payment_id, f"k{i}", amount=amount, at=at)
        else:
            cmd = cmds.dispute(
                kind,
                p.payment_id,
                f"k{i}",
                amount=amount if kind == "dispute_open" else None,
                reason=reason if kind == "dispute_open" else None,
                evidence="e" if kind == "dispute_evidence" else None,
                outcome=outcome if kind == "dispute_close" else None,
                at=at,
            )
        d = decide(p, cmd, saga_of(Provider()), POLICY)
        if d.changed:
            if kind == "dispute_close" and outcome == "lost":
                lost += p.dispute_minor
            p = d.payment
        events.extend(d.events)
        labels.extend(d.labels)
        # refunded + disputed <= captured, with what lost disputes took for good
        assert p.refunded_minor + p.dispute_minor + p.dispute_lost_minor <= p.captured_minor
        assert p.dispute_lost_minor == lost
    for e in events:
        entry = post(e, shard=0)  # every JournalEntry asserts it balances per currency
        if entry is not None:
            add_into(balances, entry)
    assert totals_by_currency(balances) == {}
    assert -balances.get(("house:disputes:0", "USD"), 0) == p.dispute_minor  # holds exactly the open dispute
    assert balances.get(("house:holds:0", "USD"), 0) == p.hold_minor
    fees = sum(e["fee_minor"] for e in events)
    assert -balances.get(("merchant:m_acme:pending", "USD"), 0) == (
        p.captured_minor - p.refunded_minor - p.dispute_minor - p.dispute_lost_minor - fees
    )
    assert len(labels) == len(
        {e["event_id"] for e in events if e["type"] == "dispute_lost" and e["reason_code"] == "fraudulent"}
    )


_BASE = Payment("pay_p", "m_acme", "EUR", 10_000, "manual", "authorized", 10_000, 0, 0, "424242", "4242", 1, 1)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "captured_minor": st.integers(-1, 12_000),
            "refunded_minor": st.integers(-1, 12_000),
            "status": st.sampled_from(["authorized", "captured", "voided", "nonsense"]),
            "version": st.integers(1, 9),
            "released_minor": st.integers(0, 12_000),
            "dispute_evidence": st.lists(st.text(max_size=3), max_size=2).map(tuple),
        },
    )
)
def test_evolve_is_replace_and_keeps_the_invariants(changes: dict[str, Any]) -> None:
    from dataclasses import replace

    try:
        expected = replace(_BASE, **changes)
    except AssertionError:
        try:
            _BASE.evolve(**changes)
        except AssertionError:
            return
        raise AssertionError(f"evolve let {changes} through") from None
    evolved = _BASE.evolve(**changes)
    assert evolved == expected and Payment.from_json(evolved.to_json()) == expected


def test_evolve_refuses_an_unknown_field() -> None:
    import pytest

    with pytest.raises(TypeError):
        _BASE.evolve(captured=1)


@given(st.booleans(), st.lists(st.sampled_from(["routing", "routed", "changed", "timers"]), unique=True))
def test_a_decisions_evolve_is_replace(changed: bool, names: list[str]) -> None:
    from dataclasses import replace

    import pytest

    from connectors.providers.router import RoutingState
    from streams.domain.payments import Decision

    base = Decision(_BASE, {"kind": "create"}, changed=False, routing=RoutingState())
    values = {"routing": None, "routed": None, "changed": changed, "timers": ()}
    changes = {n: values[n] for n in names}
    assert base.evolve(**changes) == replace(base, **changes)
    with pytest.raises(TypeError):
        base.evolve(route=None)


@given(
    st.fixed_dictionaries(
        {"status": st.sampled_from(["pending", "authorized", "nonsense"]), "version": st.integers(0, 3)},
        optional={
            "fraud_action": st.sampled_from(["approve", "review"]),
            "method": st.sampled_from(["card", "wallet"]),
            "liability_shift": st.sampled_from([None, True]),
            "merchant_initiated": st.booleans(),
        },
    )
)
def test_a_new_payment_is_the_constructors(values: dict[str, Any]) -> None:
    import pytest

    required = {
        "payment_id": "pay_p",
        "merchant_id": "m_acme",
        "currency": "EUR",
        "amount_minor": 10_000,
        "capture_method": "manual",
        "authorized_minor": 0,
        "captured_minor": 0,
        "refunded_minor": 0,
        "card_bin": "424242",
        "card_last4": "4242",
        "created_at_ms": 1,
    }
    try:
        expected = Payment(**required, **values)
    except AssertionError:
        with pytest.raises(AssertionError):
            Payment.new(**required, **values)
        return
    made = Payment.new(**required, **values)
    assert made == expected and made.to_json() == expected.to_json()
    assert made.idempotency is not Payment.new(**required, **values).idempotency  # each its own
    with pytest.raises(TypeError):
        Payment.new(**values)  # the required fields missing
