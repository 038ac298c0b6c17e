"""Limits while pending: a pending merchant's creates up to a per-currency daily cap,
counted once per payment, by the create's event day (streams/domain/kyc_limits.py, streams/stages/idempotency.py)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain import kyc_limits
from streams.domain.merchants import merchant_record
from streams.stages.idempotency import KeyEffects, claim_key, handle

RETENTION = timedelta(hours=24)
CAPS = {"USD": 50_000}


class Stage:
    def __init__(self, merchant: dict[str, Any] | None, caps: dict[str, int] = CAPS, route: bool = False) -> None:
        self.table: dict[bytes, bytes] = {}
        self.merchant, self.caps = merchant, caps
        self.route = timedelta(days=180) if route else None

    def send(self, cmd: dict[str, Any]) -> KeyEffects:
        effects = handle(
            cmd,
            5,
            int(cmd["occurred_at"].timestamp() * 1000),
            self.table.get,
            RETENTION,
            route_retention=self.route,
            merchant=self.merchant,
            pending_caps=self.caps,
        )
        for k, v in effects.writes:
            if v is None:
                self.table.pop(k, None)
            else:
                self.table[k] = v
        return effects

    def reason(self, cmd: dict[str, Any]) -> str | None:
        return self.send(cmd).command["rejection_reason"]


def pending(cmds, **kw: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return merchant_record("m_acme", kyc_status="pending", updated_at=cmds.t0, **kw)


def test_a_pending_merchant_takes_creates_up_to_the_cap_then_is_refused(cmds) -> None:
    stage = Stage(pending(cmds))
    assert stage.reason(cmds.create("o1", amount=30_000)) is None
    assert stage.reason(cmds.create("o2", amount=20_000)) is None  # exactly the cap
    over = stage.send(cmds.create("o3", amount=1)).command
    assert over["rejection_reason"] == kyc_limits.REASON
    assert "50000" in over["rejection_detail"] and "USD" in over["rejection_detail"]
    assert claim_key(5, "m_acme", "o3") not in stage.table  # refused: claims nothing


def test_a_redelivered_or_retried_create_is_counted_once(cmds) -> None:
    stage = Stage(pending(cmds), route=True)
    first = cmds.create("o1", amount=40_000)
    assert stage.reason(first) is None
    assert stage.reason(first) is None  # the same command again
    assert stage.reason(cmds.create("o1", amount=40_000, command_id="retry")) is None  # the client's retry
    # Counted once: 10,000 left.
    assert stage.reason(cmds.create("o2", amount=10_000)) is None
    assert stage.reason(cmds.create("o3", amount=1)) == kyc_limits.REASON


def test_the_day_is_the_creates_event_day_not_the_wall_clock(cmds) -> None:
    stage = Stage(pending(cmds))
    day_end = cmds.t0.replace(hour=23, minute=59, second=59, microsecond=0)
    assert stage.reason(cmds.create("o1", amount=50_000, at=day_end)) is None
    assert stage.reason(cmds.create("o2", amount=1, at=day_end)) == kyc_limits.REASON
    next_day = day_end + timedelta(seconds=1)
    assert stage.reason(cmds.create("o3", amount=50_000, at=next_day)) is None
    # A late create of the first day still counts against the first day.
    assert stage.reason(cmds.create("o4", amount=1, at=day_end - timedelta(hours=1))) == kyc_limits.REASON


def test_each_currency_has_its_own_cap_and_none_means_refused(cmds) -> None:
    stage = Stage(pending(cmds), caps={"USD": 100, "EUR": 200})
    assert stage.reason(cmds.create("o1", amount=100)) is None
    assert stage.reason(cmds.create("o2", amount=200, currency="EUR")) is None
    assert stage.reason(cmds.create("o3", amount=1, currency="EUR")) == kyc_limits.REASON
    assert stage.reason(cmds.create("o4", amount=1, currency="GBP")) == "merchant_not_verified"
    assert Stage(pending(cmds), caps={}).reason(cmds.create("o1", amount=1)) == "merchant_not_verified"
    assert Stage(pending(cmds), caps={"USD": 0}).reason(cmds.create("o1", amount=1)) == "merchant_not_verified"


def test_only_pending_merchants_are_capped_and_the_registrys_other_rules_still_apply(cmds) -> None:
    verified = merchant_record("m_acme", kyc_status="verified", updated_at=cmds.t0)
    assert Stage(verified).reason(cmds.create("o1", amount=10**9)) is None
    rejected = merchant_record("m_acme", kyc_status="rejected", updated_at=cmds.t0)
    assert Stage(rejected).reason(cmds.create("o1", amount=1)) == "merchant_not_verified"
    eur_only = Stage(pending(cmds, currencies=["EUR"]), caps={"USD": 100, "EUR": 100})
    assert eur_only.reason(cmds.create("o1", amount=1)) == "currency_not_allowed"
    # Follow-ups are never capped (their create was).
    stage = Stage(pending(cmds))
    create = cmds.create("o1", amount=50_000)
    stage.send(create)
    assert stage.reason(cmds.capture(create["payment_id"], "cap-1")) is None


def test_a_days_total_is_forgotten_after_the_day_and_the_retention(cmds) -> None:
    stage = Stage(pending(cmds))
    stage.send(cmds.create("o1", amount=1))
    day = kyc_limits.event_day(int(cmds.t0.timestamp() * 1000))
    key = kyc_limits.tally_key(5, "m_acme", "USD", day)
    assert key in stage.table
    later = cmds.t0 + timedelta(days=3)
    stage.send(cmds.create("o2", amount=1, at=later))
    assert key not in stage.table


def test_event_day_floors_in_utc() -> None:
    assert kyc_limits.event_day(0) == date(1970, 1, 1)
    assert kyc_limits.event_day(kyc_limits.DAY_MS - 1) == date(1970, 1, 1)
    assert kyc_limits.event_day(-1) == date(1969, 12, 31)
    assert kyc_limits.day_end_ms(date(1970, 1, 1)) == kyc_limits.DAY_MS


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(1, 30_000), st.integers(0, 1), st.booleans()), min_size=1, max_size=25
    )
)
def test_property_admitted_payments_never_pass_the_cap_and_each_counts_once(cmds, ops) -> None:
    """Any mix of creates, same-key retries and redeliveries over two days: each day's
    admitted distinct payments sum to at most the cap, the stored total is exactly that
    sum, and a payment admitted once stays admitted."""
    stage = Stage(pending(cmds))
    admitted: dict[tuple[int, str], int] = {}  # (day, key) -> amount first admitted
    for key_n, amount, day_n, redeliver in ops:
        cmd = cmds.create(f"o{key_n}-d{day_n}", amount=amount, at=cmds.t0 + timedelta(days=day_n))
        for _ in range(2 if redeliver else 1):
            reason = stage.reason(cmd)
            if (day_n, cmd["idempotency_key"]) in admitted:
                assert reason is None
            elif reason is None:
                admitted[(day_n, cmd["idempotency_key"])] = amount
            else:
                assert reason == kyc_limits.REASON
    for day_n in (0, 1):
        spent = sum(a for (d, _), a in admitted.items() if d == day_n)
        assert spent <= CAPS["USD"]
        day = kyc_limits.event_day(int((cmds.t0 + timedelta(days=day_n)).timestamp() * 1000))
        raw = stage.table.get(kyc_limits.tally_key(5, "m_acme", "USD", day))
        assert (int(raw) if raw is not None else 0) == spent
