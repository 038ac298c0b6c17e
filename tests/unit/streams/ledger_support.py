"""PaymentEvent builders and random legal payment histories, shared by the ledger,
chain and audit tests (imported as tests.unit.streams.ledger_support)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from connectors.providers.simulated import ProviderResult
from streams.domain.payments import Payment, Policy, decide
from tests.unit.streams.conftest import Commands, ScriptedProvider, saga_of

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MERCHANT = "m_acme"
CURRENCIES = ("USD", "JPY", "KWD", "EUR")


def event(
    etype: str,
    *,
    amount: int = 0,
    fee: int = 0,
    payment_id: str = "pay_1",
    merchant: str = MERCHANT,
    currency: str = "USD",
    authorized: int = 0,
    captured: int = 0,
    refunded: int = 0,
    version: int = 1,
    status: str | None = None,
    at: datetime = T0,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A PaymentEvent record as the payments stage writes it (unsealed)."""
    return {
        "event_id": event_id or f"evt-{payment_id}-{version}-{etype}",
        "type": etype,
        "payment_id": payment_id,
        "merchant_id": merchant,
        "command_id": f"cmd-{payment_id}-{version}",
        "currency": currency,
        "amount_minor": amount,
        "fee_minor": fee,
        "payment_status": status or etype,
        "authorized_minor": authorized,
        "captured_minor": captured,
        "refunded_minor": refunded,
        "version": version,
        "provider": "simcard",
        "provider_ref": None,
        "reason_code": None,
        "card_token": "tok_abcdefghijklmnopqrstuvwxyz234567",
        "card_bin": "424242",
        "card_last4": "4242",
        "occurred_at": at,
        "chain_seq": 0,
        "prev_hash": None,
        "key_id": None,
        "signature": None,
    }


@dataclass
class _Pay:
    payment_id: str
    merchant: str
    currency: str
    authorized: int = 0
    captured: int = 0
    refunded: int = 0
    settled: int = 0
    disputed: int = 0  # the open dispute
    lost: int = 0  # lost in disputes: gone for good
    open: bool = True  # the hold can still be captured
    version: int = 0


OPS = ("capture", "capture", "void", "expire", "refund", "refund", "dispute", "close", "settle")


@st.composite
def histories(draw: st.DrawFn, max_payments: int = 5, max_ops: int = 30) -> list[dict[str, Any]]:
    """A legal sequence of PaymentEvents over a few payments, merchants and
    currencies: partial captures, void/expiry of the rest, refunds, disputes,
    settlements, fees; every amount an integer of minor units."""
    pays = []
    for i in range(draw(st.integers(1, max_payments))):
        pay = _Pay(
            f"pay_{i}", draw(st.sampled_from(("m_acme", "m_globex", "m_initech"))), draw(st.sampled_from(CURRENCIES))
        )
        pays.append(pay)
    out: list[dict[str, Any]] = []
    clock = [T0]

    def emit(pay: _Pay, etype: str, amount: int, fee: int = 0, status: str | None = None) -> None:
        pay.version += 1
        clock[0] += timedelta(seconds=draw(st.integers(0, 3600)))
        out.append(
            event(
                etype,
                amount=amount,
                fee=fee,
                payment_id=pay.payment_id,
                merchant=pay.merchant,
                currency=pay.currency,
                authorized=pay.authorized,
                captured=pay.captured,
                refunded=pay.refunded,
                version=pay.version,
                status=status,
                at=clock[0],
            )
        )

    for pay in pays:
        if draw(st.booleans()) and draw(st.booleans()):
            emit(pay, "declined", 0, status="declined")
            pay.open = False
            continue
        pay.authorized = draw(st.integers(1, 10**9))
        emit(pay, "authorized", pay.authorized, status="authorized")
    amounts = st.integers(1, 10**9)
    fees = st.integers(0, 500)
    for _ in range(draw(st.integers(0, max_ops))):
        pay = draw(st.sampled_from(pays))
        op = draw(st.sampled_from(OPS))
        if pay.authorized == 0:
            continue
        rest_hold = pay.authorized - pay.captured
        refundable = pay.captured - pay.refunded - pay.disputed - pay.lost
        if op == "capture" and pay.open and rest_hold:
            amount = min(draw(amounts), rest_hold)
            pay.captured += amount
            emit(pay, "captured", amount, draw(fees))
        elif op in ("void", "expire") and pay.open:
            pay.open = False
            emit(pay, "voided" if op == "void" else "expired", rest_hold)
        elif op == "refund" and refundable and not pay.disputed:  # no refund while a dispute is open
            amount = min(draw(amounts), refundable)
            pay.refunded += amount
            emit(pay, "refunded", amount)
        elif op == "dispute" and refundable and not pay.disputed:
            pay.disputed = min(draw(amounts), refundable)
            emit(pay, "dispute_opened", pay.disputed, draw(st.sampled_from((0, 1_500))))
        elif op == "close" and pay.disputed:
            won = draw(st.booleans())
            emit(pay, "dispute_won" if won else "dispute_lost", pay.disputed)
            pay.lost += 0 if won else pay.disputed
            pay.disputed = 0
        elif op == "settle" and pay.captured - pay.refunded - pay.lost > pay.settled:
            amount = pay.captured - pay.refunded - pay.lost - pay.settled
            pay.settled += amount
            emit(pay, "settled", amount)
    return out


# --- payment methods: random command histories of all four methods, run through decide ---

FEE = 105  # the scripted rail's fee per capture or bank submission
SAGA = saga_of(ScriptedProvider(capture_result=ProviderResult("approved", fee_minor=FEE)))
MANDATE = {"scheme": "ach", "mandate_id": "MD-1", "account_last4": "6789"}
INSTRUMENTS = {
    "card": {},
    "wallet": {"card": None, "wallet": {"provider": "google_pay", "token": "wtok_0a1b2c3d4e5f6a7b"}},
    "bank_transfer": {"card": None, "bank_account": MANDATE},
    "bnpl": {"card": None, "bnpl_provider": "later"},
}
CMDS = Commands()


def run_methods(commands: list[dict[str, Any]]) -> tuple[dict[str, Payment], list[dict[str, Any]]]:
    """The commands through decide, in order, as the payments stage runs them."""
    payments: dict[str, Payment] = {}
    events: list[dict[str, Any]] = []
    for cmd in commands:
        d = decide(payments.get(cmd["payment_id"]), cmd, SAGA, Policy())
        if d.changed:
            payments[cmd["payment_id"]] = d.payment
            events += d.events
    return payments, events


METHOD_OPS = ("capture", "refund", "void", "settle", "return", "dispute", "close")


@st.composite
def method_histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    commands: list[dict[str, Any]] = []
    pids = []
    for i in range(draw(st.integers(1, 6))):
        method = draw(st.sampled_from(tuple(INSTRUMENTS)))
        manual = method != "bank_transfer" and draw(st.booleans())
        cmd = (
            CMDS.create(
                f"order-{i}", amount=draw(st.integers(1, 10**7)), capture_method="manual" if manual else "automatic"
            )
            | INSTRUMENTS[method]
        )
        if method != "card":
            cmd["method"] = method
        commands.append(cmd)
        pids.append(cmd["payment_id"])
    for n in range(draw(st.integers(0, 25))):
        pid, op = draw(st.sampled_from(pids)), draw(st.sampled_from(METHOD_OPS))
        at, key = CMDS.t0 + (n + 1) * timedelta(hours=3), f"k{n}"
        amount = draw(st.none() | st.integers(1, 10**7))
        if op == "capture":
            commands.append(CMDS.capture(pid, key, amount=amount, at=at))
        elif op == "refund":
            commands.append(CMDS.refund(pid, key, amount=amount, at=at))
        elif op == "void":
            commands.append(CMDS.void(pid, key, at=at))
        elif op == "settle":
            commands.append(CMDS.follow_up("bank_settle", pid, key, at=at) | {"return_code": None})
        elif op == "return":
            commands.append(CMDS.follow_up("bank_return", pid, key, at=at) | {"return_code": "R01"})
        elif op == "dispute":
            commands.append(CMDS.dispute("dispute_open", pid, key, reason="fraudulent", at=at))
        else:
            commands.append(
                CMDS.dispute("dispute_close", pid, key, outcome=draw(st.sampled_from(("won", "lost"))), at=at)
            )
    return commands
