"""`paystream demo`: realistic traffic through a real worker, then a summary."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from connectors.clickhouse.client import connect
from connectors.clickhouse.migrate import migrate
from connectors.kafka import admin
from connectors.kafka.clients import command_producer, read_to_end
from connectors.providers.chain import SimChain, build_chains
from connectors.providers.charges import DECISIONS, approvals, double_charges
from connectors.providers.rails import Window, build_rails, schedule_toml
from connectors.providers.routing_log import RoutingView, read_routing_log
from connectors.vault.keys import ACS_SIGNING, WALLET_SIGNING, ActiveSigner, FileKeyStore
from schemas.codec import Codec
from schemas.ids import derive_payment_id
from schemas.times import to_ms
from streams.api.commands import follow_up_command
from streams.client.fraud import resolve_command
from streams.client.observe import Observer
from streams.client.processes import WorkerProcess
from streams.client.publish import RawMessage, publish_commands
from streams.demo.cards import CARD_WEIGHTS, ORDINARY_CARDS, TEST_CARDS, cardholder
from streams.demo.crypto import CryptoRun, crypto_commands, crypto_summary, run_crypto
from streams.demo.market import (
    Marketplace,
    market_records,
    market_split,
    run_marketplace,
)
from streams.demo.methods import (
    BankNotices,
    fraud_commands,
    fraud_summary,
    methods_summary,
    publish_fraud_blocks,
    run_bank_notices,
    sign_wallets,
    wallet_summary,
)
from streams.demo.subscriptions import (
    SubscriptionCounts,
    plan_subscriptions,
    run_subscriptions,
)
from streams.domain.authentication import (
    SIGNED_STATUSES,
    AuthenticationValue,
    Signer,
    issue_cavv,
)
from streams.domain.fx import FxRate, rate_to_record
from streams.domain.merchants import merchant_record
from streams.domain.methods import DISPUTABLE, METHODS
from streams.domain.payments import FRAUD_DISPUTE_REASONS, Policy
from streams.jobs.sink import catch_up
from streams.settings import Settings, client_config
from streams.topics import declared_topics, topic_names

BOOKS_TIMEOUT_S = 300.0
# The demo's reviewer decides this long after the create, by event time.
REVIEW_DELAY = timedelta(minutes=5)
# The demo's cardholder answers a 3DS step-up this long after the create, by event time,
# with an EMV 3DS transStatus drawn with these weights (mostly authenticated, some
# failures), and the ECI a Visa ACS returns with it.
STEP_UP_DELAY = timedelta(minutes=1)
THREE_DS_WEIGHTS = {"Y": 85, "A": 3, "N": 8, "U": 2, "R": 2}
THREE_DS_ECI = {"Y": "05", "A": "06", "N": "07", "U": "07", "R": "07"}
REVIEW_CODEC = Codec("FraudReview")
VALIDATED_CODEC = Codec("ValidatedCommand")
MERCHANTS = ("m_acme", "m_globex", "m_initech", "m_umbrella", "m_wayne")
# The registry: who is paid in what. `paystream settle` converts at the day's rates.
SETTLEMENT_CURRENCY = {"m_acme": "USD", "m_globex": "EUR", "m_initech": "GBP", "m_umbrella": "USD", "m_wayne": "JPY"}
# The treasury's quotes for the demo day, USD per major unit; the pairs are crossed from them.
USD_PER_UNIT = {"USD": "1", "EUR": "1.0842", "GBP": "1.2650", "JPY": "0.006634", "KWD": "3.2515"}
MERCHANT_CODEC, RATE_CODEC = Codec("MerchantRecord"), Codec("FxRate")
# --chaos-providers: the rail whose outage schedule the demo sets.
CHAOS_PROVIDER = "acq_north"
# The network disputes this share of captured payments; the reasons it gives.
DISPUTE_SHARE = 0.02
DEMO_DISPUTE_REASONS = ("fraudulent", "product_not_received", "duplicate", "unrecognized")
# Payment methods other than cards (drawn per payment from (seed, i), so the card
# traffic's draws stay as they were): the share of payments, where a rail takes the
# currency (streams/domain/methods.py; bank debits: ACH in USD, SEPA in EUR). Bank transfers
# get a large share so that a 1,000-payment day shows a few returns (~100 transfers).
METHOD_SHARES = (("wallet", 0.10), ("bank_transfer", 0.25), ("bnpl", 0.05))
METHOD_CURRENCIES = {"wallet": {"USD", "EUR", "GBP"}, "bank_transfer": {"USD", "EUR"}, "bnpl": {"USD", "EUR", "GBP"}}
BANK_SCHEMES = {"USD": "ach", "EUR": "sepa"}
# The worker's crypto policy (streams/worker/topology.py builds Policy with the default one).
CRYPTO_POLICY = Policy().crypto
# currency -> (typical amount range in minor units)
CURRENCIES = {
    "USD": (500, 50_000),
    "EUR": (500, 40_000),
    "GBP": (500, 30_000),
    "JPY": (500, 50_000),
    "KWD": (1_000, 90_000),
}


@dataclass
class Traffic:
    items: list[dict[str, Any] | RawMessage] = field(default_factory=list)
    command_ids: set[str] = field(default_factory=set)
    garbage: int = 0
    expected: Counter[str] = field(default_factory=Counter)
    run_id: str = ""


def generate(payments: int, seed: int, run_id: str, start: datetime) -> Traffic:
    """Commands for `payments` payments: creates, captures (some partial), voids,
    partial refunds, duplicate retries, key conflicts and invalid input."""
    rng = random.Random(seed)
    t = Traffic(run_id=run_id)
    clock = start

    def emit(kind: str, merchant: str, key: str, **fields: Any) -> dict[str, Any]:
        nonlocal clock
        clock += timedelta(milliseconds=rng.randint(1, 50))
        cmd = {
            "command_id": f"cmd_{run_id}_{len(t.items)}",
            "kind": kind,
            "merchant_id": merchant,
            "idempotency_key": key,
            "payment_id": None,
            "amount_minor": None,
            "currency": None,
            "capture_method": None,
            "card": None,
            "metadata": {},
            "occurred_at": clock,
        } | fields
        t.items.append(cmd)
        t.command_ids.add(cmd["command_id"])
        t.expected[kind] += 1
        return cmd

    for i in range(payments):
        merchant = rng.choice(MERCHANTS)
        currency = rng.choice(list(CURRENCIES))
        amount = rng.randint(*CURRENCIES[currency])
        test_card = rng.choices(TEST_CARDS, CARD_WEIGHTS)[0]
        pan = cardholder(test_card, rng, keep_last4=TEST_CARDS.index(test_card) >= ORDINARY_CARDS)
        manual = rng.random() < 0.3
        key = f"{run_id}-{i}"
        method = demo_method(seed, i, currency)
        # A marketplace payment (card only): the platform's, split among its sellers.
        split = (market_split(seed, i, amount) if method == "card" else None) or {}
        merchant = split.get("merchant_id", merchant)
        pid = derive_payment_id(merchant, key)
        card = {
            "number": pan,
            "exp_month": rng.randint(1, 12),
            "exp_year": start.year + rng.randint(1, 5),
            "cvc": "123",
        }
        roll = rng.random()
        instrument = {"card": card} if method == "card" else demo_instrument(method, currency, seed, i)
        if method == "bank_transfer":
            manual = False  # a bank debit has no hold to capture later
        if roll < 0.01:  # invalid input: answered with a rejection, never applied
            bad = rng.choice(("luhn", "currency", "amount"))
            emit(
                "create",
                merchant,
                key,
                payment_id=pid,
                amount_minor=0 if bad == "amount" else amount,
                currency="XYZ" if bad == "currency" else currency,
                card=card | ({"number": pan[:-1] + str((int(pan[-1]) + 1) % 10)} if bad == "luhn" else {}),
                capture_method="manual" if manual else "automatic",
            )
            continue
        create = emit(
            "create",
            merchant,
            key,
            payment_id=pid,
            amount_minor=amount,
            currency=currency,
            capture_method="manual" if manual else "automatic",
            metadata={"order_id": f"ord_{i}"},
            **instrument,
            **{k: v for k, v in split.items() if k != "merchant_id"},
        )
        if roll < 0.03:  # a client retry: same key, same body
            emit(
                "create",
                merchant,
                key,
                **{
                    k: create[k]
                    for k in (
                        "payment_id",
                        "amount_minor",
                        "currency",
                        "capture_method",
                        "metadata",
                        *instrument,
                        *split,
                    )
                    if k != "merchant_id"
                },
            )
        elif roll < 0.04:  # the same key reused for a different request
            emit(
                "create",
                merchant,
                key,
                payment_id=pid,
                amount_minor=amount + 1,
                currency=currency,
                capture_method=create["capture_method"],
                **instrument,
            )
        elif roll < 0.05 and i:  # a key of this merchant's earlier payment, reused on this one
            emit("refund", merchant, f"{run_id}-{i - 1}", payment_id=pid, amount_minor=1)
        if method == "card" and test_card == TEST_CARDS[-1]:
            continue  # declined: nothing to follow up
        if method == "bank_transfer":
            continue  # refunded only once settled: the bank's notices come after the day
        captured = amount if not manual else 0
        if manual:
            r = rng.random()
            if r < 0.5:
                captured = amount
                emit("capture", merchant, f"{key}-cap", payment_id=pid)
            elif r < 0.7:
                captured = amount // 2 or amount
                emit("capture", merchant, f"{key}-cap", payment_id=pid, amount_minor=captured)
            elif r < 0.85:
                emit("void", merchant, f"{key}-void", payment_id=pid)
                continue
        if captured and rng.random() < 0.15:
            first = max(1, captured // 3)
            emit("refund", merchant, f"{key}-ref1", payment_id=pid, amount_minor=first, currency=currency)
            if rng.random() < 0.5:
                emit("refund", merchant, f"{key}-ref2", payment_id=pid)  # the rest

    # Bad bytes, spread through the stream: each must become a dead letter.
    for _ in range(max(1, payments // 500)):
        junk = rng.choice((b"not avro at all", b"\xc3\x01" + bytes(8) + b"\x02", b"\xc3\x01\xff"))
        t.items.insert(rng.randrange(len(t.items) + 1), (b"junk", junk))
        t.garbage += 1
    return t


def with_fraud_showcase(traffic: Traffic) -> None:
    """Append the fraud showcase (streams/demo/methods.py: a decline and a review on
    every method) after the day's traffic, by event time."""
    last = max(c["occurred_at"] for c in traffic.items if isinstance(c, dict))
    for cmd in fraud_commands(traffic.run_id, last + timedelta(seconds=1)):
        traffic.items.append(cmd)
        traffic.command_ids.add(cmd["command_id"])
        traffic.expected[cmd["kind"]] += 1


def with_crypto(traffic: Traffic, seed: int, chains: dict[str, SimChain]) -> None:
    """Append the crypto customers (streams/demo/crypto.py: USDC and BTC, paid in full,
    short, too much or never) after the rest of the day's traffic, by event time."""
    last = max(c["occurred_at"] for c in traffic.items if isinstance(c, dict))
    for cmd in crypto_commands(traffic.run_id, seed, last + timedelta(seconds=1), chains, CRYPTO_POLICY):
        traffic.items.append(cmd)
        traffic.command_ids.add(cmd["command_id"])
        traffic.expected[cmd["kind"]] += 1


def demo_method(seed: int, i: int, currency: str) -> str:
    """The payment method of the demo's payment i: card, or one of METHOD_SHARES where
    its rails take the currency."""
    u = random.Random(f"{seed}:method:{i}").random()
    for method, share in METHOD_SHARES:
        if u < share:
            return method if currency in METHOD_CURRENCIES[method] else "card"
        u -= share
    return "card"


def demo_instrument(method: str, currency: str, seed: int, i: int) -> dict[str, Any]:
    """The create's instrument fields for a non-card method (PaymentCommand v6): no PAN anywhere."""
    rng = random.Random(f"{seed}:instrument:{i}")
    if method == "wallet":
        token = "wtok_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(24))
        cryptogram = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") for _ in range(28))
        return {
            "method": method,
            "wallet": {"provider": rng.choice(("apple_pay", "google_pay")), "token": token, "cryptogram": cryptogram},
        }
    if method == "bank_transfer":
        return {
            "method": method,
            "bank_account": {
                "scheme": BANK_SCHEMES[currency],
                "mandate_id": f"MD-{seed}-{i}",
                "account_last4": f"{rng.randrange(10_000):04d}",
            },
        }
    return {"method": method, "bnpl": {"provider": "later"}}


def chaos_schedule(start_ms: int, end_ms: int) -> dict[str, tuple[Window, ...]]:
    """The primary acquirer's bad day over the traffic's event-time span: down from
    10 % to 40 % of it, then degraded (40 % of calls refused, 4x latency) from 55 % to 75 %."""
    span_ms = max(end_ms - start_ms, 1_000)
    at = lambda share: start_ms + span_ms * share // 100  # noqa: E731
    return {
        CHAOS_PROVIDER: (
            Window(at(10), at(40), "outage"),
            Window(at(55), at(75), "degraded", error_per_mille=400, latency_factor=4),
        )
    }


def with_chaos(settings: Settings, traffic: Traffic, run_id: str) -> Settings:
    """Settings for a worker whose rails follow `chaos_schedule` and whose router logs
    its decisions (connectors/providers/routing_log.py) for the summary; the rails'
    records are their journals under providers_dir, as in every run."""
    times = [to_ms(c["occurred_at"]) for c in traffic.items if isinstance(c, dict)]
    directory = settings.data_dir / "demo" / f"chaos-{run_id}"
    directory.mkdir(parents=True, exist_ok=True)
    schedule_file = directory / "schedule.toml"
    schedule_file.write_text(schedule_toml(chaos_schedule(min(times), max(times))))
    return settings.model_copy(
        update={"providers": "rails", "provider_schedule_file": schedule_file, "routing_log_dir": directory / "routing"}
    )


def run_demo(settings: Settings, *, payments: int, timeout_s: float, seed: int, chaos_providers: bool = False) -> bool:
    console = Console()
    run_id = uuid.uuid4().hex[:8]
    traffic = generate(payments, seed, run_id, datetime.now(UTC))
    with_fraud_showcase(traffic)
    keys = FileKeyStore(settings.keys_dir)
    keys.init()  # the worker trusts the wallet providers' public keys of this store
    sign_wallets(traffic.items, ActiveSigner.of(keys, WALLET_SIGNING))
    chains = build_chains(settings.provider_seed)  # the worker's chains: same file, same seed
    with_crypto(traffic, seed, chains)
    commands = len(traffic.command_ids)
    log_file = settings.data_dir / "logs" / "demo-worker.log"
    console.print(
        f"demo: {payments} payments -> {commands} commands + {traffic.garbage} bad messages; worker log {log_file}"
    )
    if chaos_providers:
        settings = with_chaos(settings, traffic, run_id)
        console.print(f"chaos: {CHAOS_PROVIDER} follows {settings.provider_schedule_file}")

    # The observer reads every output topic from the start: they must exist before the worker does.
    admin.ensure_topics(client_config(settings), declared_topics(settings))
    open_the_day(settings, traffic.items[0]["occurred_at"] - timedelta(hours=1))
    publish_fraud_blocks(settings, run_id, traffic.items[0]["occurred_at"] - timedelta(hours=1))
    # Subscribers' cards are sealed onto card-vault before their subscriptions are published.
    next_day = datetime.combine(traffic.items[0]["occurred_at"].date() + timedelta(days=1), datetime.min.time(), UTC)
    subscribers = plan_subscriptions(settings, MERCHANTS, seed, run_id, next_day)
    with WorkerProcess(settings, log_file) as worker, Observer(settings) as observer:
        started = time.monotonic()
        publish_commands(settings, traffic.items)
        produced_s = time.monotonic() - started
        with Progress(
            TextColumn("[bold]outcomes"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("dlq {task.fields[dlq]}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("outcomes", total=commands, dlq=0)

            def progress(done: int, dlq: int) -> None:
                bar.update(task, completed=done, dlq=dlq)
                worker.supervise()

            complete = observer.wait_for(
                traffic.command_ids, traffic.garbage, timeout_s, progress, on_stall=worker.restart
            )
        elapsed_s = time.monotonic() - started

        # Each phase after the outcomes says what it waits for: a demo never sits silent.
        def phase(what: str) -> None:
            console.print(f"[dim]waiting: {what}[/dim]")

        # Fraud ops at work: the demo's operator approves every payment held for review.
        phase("the operator's approvals of the payments held for fraud review")
        reviewed, approved = approve_reviews(settings, observer, traffic, timeout_s) if complete else (0, 0)
        # The cardholders answer their 3DS step-ups.
        phase("the cardholders' answers to their 3DS step-ups")
        step_ups = complete_step_ups(settings, observer, traffic, seed, timeout_s) if complete else StepUps()
        # The chains move with the clock: ticks a poll apart until the crypto payments settle.
        phase("the crypto payments' confirmations on the chain, tick by tick")
        creates = [c for c in traffic.items if isinstance(c, dict) and c["kind"] == "create"]
        crypto = (
            run_crypto(settings, observer, creates, chains, CRYPTO_POLICY, traffic.run_id, timeout_s)
            if complete
            else CryptoRun()
        )
        # Weeks later by event time, the card network disputes some captures.
        phase("the disputes' outcomes")
        disputes = run_disputes(settings, observer, seed, traffic.run_id, timeout_s) if complete else Disputes()
        # From the next day on, months of subscription charges by the clock's event time.
        phase("months of subscription charges, tick by tick")
        subs = run_subscriptions(settings, observer, subscribers, timeout_s) if complete else SubscriptionCounts()
        # Days later by event time, the banks settle the transfers or return some.
        phase("the banks' settlement and return notices")
        bank = run_bank_notices(settings, observer, traffic.run_id, timeout_s) if complete else BankNotices()
        # The ledger runs behind the outcomes: stop the worker once every event is posted.
        phase(f"the ledger to apply every event's entry (at most {BOOKS_TIMEOUT_S:.0f}s)")
        books_closed = complete and observer.wait_until(observer.books_applied, BOOKS_TIMEOUT_S)
        books_s = time.monotonic() - started
        # Day end: settle the day, pay the merchants out through the bank (event time the next days).
        day = traffic.items[0]["occurred_at"].date()
        phase(f"settlement of {day} and the payouts' entries in the ledger (at most {BOOKS_TIMEOUT_S:.0f}s)")
        market = run_marketplace(settings, observer, seed, day, BOOKS_TIMEOUT_S) if books_closed else Marketplace()

    mine = {c: observer.outcomes[c] for c in traffic.command_ids if c in observer.outcomes}
    duplicated = sum(1 for v in mine.values() if len(v) > 1)
    dlq = len(observer.dead_letters)
    _summary(console, mine, elapsed_s, produced_s, commands, dlq, duplicated)
    _events(console, observer.events)
    console.print(f"held for fraud review: {reviewed}; approved by the demo's operator and authorized: {approved}")
    console.print(
        f"3DS step-ups: {step_ups.asked}; confirmed {step_ups.confirmed} (authenticated Y/A {step_ups.authenticated},"
        f" failed N/R {step_ups.failed}, unavailable U {step_ups.unavailable}); authorized after the step-up:"
        f" {step_ups.authorized}"
    )
    console.print(
        f"disputes: {disputes.opened} opened, {disputes.evidence} with evidence; won {disputes.won}, "
        f"lost {disputes.lost} ({disputes.labels} fraud labels sent to the risk stage)"
    )
    console.print(
        f"subscriptions: {subs.created} created, {subs.charged} charged, {subs.retries} dunning retries, "
        f"{subs.canceled} canceled; {subs.held} held (a charge paused for review or a provider timeout)"
    )
    console.print(
        f"splits: {market.split_payments} payments split among {market.split_accounts} accounts; "
        f"payouts: {market.payouts_sent} sent, {market.payouts_failed} failed and reversed"
    )
    console.print(methods_summary(observer.events, bank))
    console.print(fraud_summary(observer.events))
    console.print(wallet_summary(observer.events))
    console.print(crypto_summary(observer.events, {c["payment_id"] for c in creates}, crypto))
    if worker.restarts:
        console.print(f"[yellow]the worker was restarted {worker.restarts} time(s); see {log_file}")
    console.print(
        f"journal entries: {len(observer.entry_ids)}; books closed {books_closed} after {books_s:.1f}s"
        " (check them: paystream audit; paystream replay --verify)"
    )
    if books_closed:
        fill_read_models(settings, console, traffic.items[0]["occurred_at"].date())
    print(
        f"demo: commands={commands} outcomes={len(mine)} dlq={dlq} elapsed_s={elapsed_s:.1f} "
        f"entries={len(observer.entry_ids)}"
    )
    charges_ok = True
    if chaos_providers:
        assert settings.routing_log_dir is not None and settings.providers_dir is not None
        rails = build_rails(seed=settings.provider_seed, journal_dir=settings.providers_dir)  # the providers' books
        charges_ok = _providers(console, observer.events, read_routing_log(settings.routing_log_dir), approvals(rails))
    return (
        complete
        and len(mine) == commands
        and duplicated == 0
        and books_closed
        and step_ups.confirmed == step_ups.asked
        and charges_ok
        and subs.complete
        and market.completed
        and crypto.moved
        and bank.answered == bank.sent
    )


def provider_shares(events: dict[str, list[dict[str, Any]]]) -> Counter[str]:
    """Payments by the provider that decided their authorization (the events' view)."""
    shares: Counter[str] = Counter()
    for es in events.values():
        first = next((e for e in es if e["type"] in DECISIONS and e["provider"]), None)
        if first is not None:
            shares[first["provider"]] += 1
    return shares


def _providers(
    console: Console,
    events: dict[str, list[dict[str, Any]]],
    view: RoutingView,
    approved: Mapping[str, tuple[str, ...]],
) -> bool:
    """Routing shares, breaker trips and failovers (the routing log), and the
    double-charge check of the rails' approvals (`charges.approvals`); True if no
    payment was charged twice and the events agree with the rails."""
    shares = provider_shares(events)
    trips = view.trips()
    table = Table(title="providers under chaos")
    for col in ("provider", "payments", "share", "opens", "half-opens", "closes"):
        table.add_column(col, justify="left" if col == "provider" else "right")
    total = sum(shares.values()) or 1
    for name in sorted(set(shares) | {p for p, _ in trips}):
        table.add_row(
            name,
            str(shares[name]),
            f"{shares[name] / total:.1%}",
            str(trips[name, "open"]),
            str(trips[name, "half_open"]),
            str(trips[name, "closed"]),
        )
    console.print(table)
    check = double_charges(approved, events)
    opens, halves, closes = (sum(n for (_, to), n in trips.items() if to == s) for s in ("open", "half_open", "closed"))
    console.print(
        f"failovers {view.failovers}; payments charged twice {len(check.double_charged)}"
        f"{' ' + ', '.join(check.double_charged[:5]) if check.double_charged else ''}; events naming a provider"
        f" that holds no such authorization {len(check.mismatched)}; approvals the events never report"
        f" {len(check.unreported)} (lost answers not resolved yet)"
        + (" [routing log full: its counts are lower bounds]" if view.full else "")
    )
    print(
        f"chaos: failovers={view.failovers} opens={opens} half_opens={halves} closes={closes} "
        f"double_charges={len(check.double_charged)} mismatched={len(check.mismatched)} "
        f"unreported={len(check.unreported)} "
        f"checked={check.payments}"
    )
    return not check.double_charged and not check.mismatched


def approve_reviews(settings: Settings, observer: Observer, traffic: Traffic, timeout_s: float) -> tuple[int, int]:
    """Read the review queue for this run's payments, approve each (as `paystream fraud
    review --resolve ID approve` does), wait for the answers: (held, authorized)."""
    names = topic_names(settings)
    payment_ids = {c["payment_id"] for c in traffic.items if isinstance(c, dict) and c["kind"] == "create"}
    reviews = {}
    for msg in read_to_end(client_config(settings), [names.review], settings.partitions):
        review = REVIEW_CODEC.decode(msg.value())
        if review["payment_id"] in payment_ids:
            reviews[review["review_id"]] = review
    resolves = [
        resolve_command(r, "approve", r["occurred_at"] + REVIEW_DELAY, "demo-operator") for r in reviews.values()
    ]
    producer = command_producer(client_config(settings))
    for key, cmd in resolves:
        producer.produce(names.validated, key=key, value=VALIDATED_CODEC.encode(cmd))
    producer.flush(30)
    ids = {cmd["command_id"] for _, cmd in resolves}
    observer.wait_for(ids, 0, timeout_s)
    authorized = sum(
        1
        for c in ids
        if observer.outcomes.get(c) and observer.outcomes[c][0]["payment_status"] in ("authorized", "captured")
    )
    return len(reviews), authorized


def open_the_day(settings: Settings, as_of: datetime) -> None:
    """Register the demo's merchants (verified, with their settlement currencies) and
    publish the day's FX rates for every pair settlement will convert."""
    names = topic_names(settings)
    producer = command_producer(client_config(settings))
    records = [
        merchant_record(m, kyc_status="verified", settlement_currency=c, methods=METHODS, updated_at=as_of)
        for m, c in SETTLEMENT_CURRENCY.items()
    ]
    for record in records + market_records(as_of):
        producer.produce(
            names.merchants, key=record["merchant_id"].encode(), value=MERCHANT_CODEC.encode(record, check=True)
        )
    for base in CURRENCIES:
        for quote in set(SETTLEMENT_CURRENCY.values()) - {base}:
            cross = (Decimal(USD_PER_UNIT[base]) / Decimal(USD_PER_UNIT[quote])).quantize(Decimal("0.00000001"))
            rate = FxRate(base, quote, cross, as_of, "demo-treasury")
            producer.produce(
                names.fx_rates, key=rate.key.encode(), value=RATE_CODEC.encode(rate_to_record(rate), check=True)
            )
    if producer.flush(30) != 0:
        raise RuntimeError("the broker did not take the demo's merchants and rates in 30 s")


def fill_read_models(settings: Settings, console: Console, day: date) -> None:
    """What `paystream sink` would have written by now, so `paystream sql` answers at once."""
    client = connect(settings.clickhouse_url, settings.clickhouse_database)
    try:
        migrate(client)
        started = time.monotonic()
        stats = catch_up(settings, client, timeout_s=BOOKS_TIMEOUT_S)
        took_s = time.monotonic() - started
    finally:
        client.close()
    console.print(
        f"read models: {stats.rows_total} rows into ClickHouse in {took_s:.1f}s "
        f'({stats.rows_total / max(took_s, 1e-9):,.0f} rows/s); try: paystream sql "SELECT ..." (docs/analytics.md)'
    )
    nxt = day + timedelta(days=1)
    console.print(
        f"day end: the demo settled {day} and ran the payouts (paystream settle / payouts run); next: "
        f"paystream providers report --date {nxt}; paystream reconcile --date {nxt}"
    )


@dataclass(frozen=True)
class StepUps:
    """The demo's 3DS step-ups: payments the risk stage paused, confirms sent (by
    result) and the payments those authorized."""

    asked: int = 0
    confirmed: int = 0
    authenticated: int = 0  # Y or A
    failed: int = 0  # N or R
    unavailable: int = 0  # U
    authorized: int = 0


def step_up_confirms(
    creates: Iterable[Mapping[str, Any]],
    outcomes: Mapping[str, list[dict[str, Any]]],
    seed: int,
    run_id: str,
    acs: Signer | None = None,
) -> list[dict[str, Any]]:
    """One confirm (PaymentCommand v7) per payment whose create left it in
    requires_action, carrying the cardholder's 3DS result: drawn per payment from
    (seed, payment_id), so a run's answers do not depend on the order outcomes came in.
    With the simulated issuer's `acs` signer, a Y or A carries its signed authentication
    value (liability shifts); without, it is merchant-reported (no shift)."""
    confirms: dict[str, dict[str, Any]] = {}
    statuses, weights = zip(*THREE_DS_WEIGHTS.items())
    for create in creates:
        first = outcomes.get(create["command_id"])
        pid = create["payment_id"]
        # The create that paused it (not a retry's replay or a key conflict's refusal).
        if not first or (first[0]["status"], first[0]["payment_status"]) != ("succeeded", "requires_action"):
            continue
        rng = random.Random(f"{seed}:3ds:{pid}")
        status = rng.choices(statuses, weights)[0]
        confirms[pid] = follow_up_command(
            "confirm", create["merchant_id"], f"{create['idempotency_key']}-3ds", pid, None
        ) | {
            "command_id": f"cmd_{run_id}_3ds_{len(confirms)}",
            "occurred_at": create["occurred_at"] + STEP_UP_DELAY,
            "three_ds": {
                "trans_status": status,
                "eci": THREE_DS_ECI[status],
                "ds_trans_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            },
        }
        three_ds = confirms[pid]["three_ds"]
        if acs is not None and status in SIGNED_STATUSES:
            av = AuthenticationValue(
                acs.key_id,
                pid,
                create["merchant_id"],
                create["amount_minor"],
                create["currency"],
                status,
                three_ds["eci"],
                three_ds["ds_trans_id"],
                to_ms(confirms[pid]["occurred_at"]),
            )
            three_ds["authentication_value"] = issue_cavv(av, acs)
    return list(confirms.values())


def complete_step_ups(settings: Settings, observer: Observer, traffic: Traffic, seed: int, timeout_s: float) -> StepUps:
    """Answer every 3DS step-up of this run with a confirm through the front door
    (payment-commands, as a merchant sends it), wait for the answers, count them."""
    creates = [c for c in traffic.items if isinstance(c, dict) and c["kind"] == "create"]
    acs = ActiveSigner.of(FileKeyStore(settings.keys_dir), ACS_SIGNING)  # the simulated issuer's
    confirms = step_up_confirms(creates, observer.outcomes, seed, traffic.run_id, acs)
    publish_commands(settings, confirms)
    ids = {c["command_id"] for c in confirms}
    observer.wait_for(ids, 0, timeout_s)
    by_status = Counter(c["three_ds"]["trans_status"] for c in confirms)
    answered = [observer.outcomes[c][0] for c in ids if observer.outcomes.get(c)]
    return StepUps(
        asked=len(confirms),
        confirmed=len(answered),
        authenticated=by_status["Y"] + by_status["A"],
        failed=by_status["N"] + by_status["R"],
        unavailable=by_status["U"],
        authorized=sum(1 for o in answered if o["payment_status"] in ("authorized", "captured")),
    )


@dataclass(frozen=True)
class Disputes:
    """The card network's chargebacks on this run's captured payments, by outcome."""

    opened: int = 0
    evidence: int = 0
    won: int = 0
    lost: int = 0
    labels: int = 0  # lost fraud disputes: each a fraud label for the risk stage


def dispute_commands(events: Mapping[str, list[dict[str, Any]]], seed: int, run_id: str) -> list[dict[str, Any]]:
    """For about 2% of the captured payments (drawn per payment from (seed, payment_id)),
    the network's dispute_open 3 days after the capture, the merchant's evidence on half
    of them 5 days after, and the network's dispute_close 20 days after: mostly won with
    evidence, lost without. Event time runs on from the capture, never the wall clock."""
    out: list[dict[str, Any]] = []
    for pid, evs in sorted(events.items()):
        captured = [e for e in evs if e["type"] == "captured" and (e.get("method") or "card") in DISPUTABLE]
        rng = random.Random(f"{seed}:dispute:{pid}")
        if not captured or rng.random() >= DISPUTE_SHARE:
            continue
        at, merchant = captured[0]["occurred_at"], captured[0]["merchant_id"]
        reason = rng.choice(DEMO_DISPUTE_REASONS)
        with_evidence = rng.random() < 0.5
        won = rng.random() < (0.6 if with_evidence else 0.1)
        steps = [
            ("dispute_open", timedelta(days=3), {"reason": reason}),
            ("dispute_close", timedelta(days=20), {"outcome": "won" if won else "lost"}),
        ]
        if with_evidence:
            steps.insert(
                1, ("dispute_evidence", timedelta(days=5), {"evidence": f"delivery confirmation for order of {pid}"})
            )
        for kind, after, fields in steps:
            out.append(
                follow_up_command(kind, merchant, f"{pid}-{kind}", pid, None)
                | {
                    "command_id": f"cmd_{run_id}_dsp_{len(out)}",
                    "occurred_at": at + after,
                    "dispute": {"reason": None, "evidence_due_at": None, "evidence": None, "outcome": None} | fields,
                }
            )
    return out


def run_disputes(settings: Settings, observer: Observer, seed: int, run_id: str, timeout_s: float) -> Disputes:
    """The network disputes some captured payments; wait for every answer, count the outcomes."""
    commands = dispute_commands(observer.events, seed, run_id)
    publish_commands(settings, commands)
    ids = {c["command_id"] for c in commands}
    observer.wait_for(ids, 0, timeout_s)
    done = [
        c
        for c in commands
        if observer.outcomes.get(c["command_id"]) and observer.outcomes[c["command_id"]][0]["status"] == "succeeded"
    ]
    closes = [c for c in done if c["kind"] == "dispute_close"]
    lost = [c for c in closes if c["dispute"]["outcome"] == "lost"]
    reason_of = {c["payment_id"]: c["dispute"]["reason"] for c in done if c["kind"] == "dispute_open"}
    return Disputes(
        opened=sum(1 for c in done if c["kind"] == "dispute_open"),
        evidence=sum(1 for c in done if c["kind"] == "dispute_evidence"),
        won=len(closes) - len(lost),
        lost=len(lost),
        labels=sum(1 for c in lost if reason_of.get(c["payment_id"]) in FRAUD_DISPUTE_REASONS),
    )


def _summary(
    console: Console,
    outcomes: dict[str, list[dict[str, Any]]],
    elapsed_s: float,
    produced_s: float,
    commands: int,
    dlq: int,
    duplicated: int,
) -> None:
    by = Counter((o[0]["kind"], o[0]["status"], o[0]["reason_code"] or "") for o in outcomes.values())
    table = Table(title="outcomes by command")
    for col in ("kind", "status", "reason", "count"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for (kind, status, reason), n in sorted(by.items()):
        table.add_row(kind, status, reason, str(n))
    console.print(table)
    rate = commands / elapsed_s if elapsed_s else 0.0
    console.print(
        f"produced in {produced_s:.1f}s; all answered in {elapsed_s:.1f}s ({rate:,.0f} commands/s end to end); "
        f"dead letters {dlq}; duplicated outcomes {duplicated}; missing {commands - len(outcomes)}"
    )


def _events(console: Console, events: dict[str, list[dict[str, Any]]]) -> None:
    """What the ledger will post: events by type, and whether each payment's events
    came once each, in version order."""
    by = Counter(e["type"] for es in events.values() for e in es)
    table = Table(title="payment events")
    table.add_column("type")
    table.add_column("count", justify="right")
    for kind, n in sorted(by.items()):
        table.add_row(kind, str(n))
    console.print(table)
    broken = sum(
        1
        for es in events.values()
        if [e["version"] for e in es] != list(range(es[0]["version"], es[0]["version"] + len(es)))
    )
    console.print(f"payments with events: {len(events)}; with a gap or a duplicate: {broken}")
