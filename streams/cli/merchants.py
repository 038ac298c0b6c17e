"""`paystream merchants add|verify|reject|list|apply|kyc|kyc-review|kyc-reverify`: the
merchant registry on the compacted `merchants` topic (keyed by merchant_id,
MerchantRecord Avro). A change is a new record read-modified-written from the topic's
current state; the keys stage folds the topic (streams/domain/merchants.py). verify and
reject move a merchant's KYC case through the workflow's transitions and its desk
(streams/client/kyc.py), as kyc-review does. The lead declares the topic
(compacted, the pipeline's partition count) in streams/topics.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from schemas.codec import Codec
from streams.client.merchants import read_registry
from streams.domain import merchants
from streams.settings import client_config, get_settings
from streams.topics import topic_names

app = typer.Typer(no_args_is_help=True, help="The merchant registry: KYC status, currencies, methods, fee plan.")
err = Console(stderr=True, soft_wrap=True)
CODEC = Codec("MerchantRecord")


def topic() -> str:
    return topic_names(get_settings()).merchants


def _now() -> datetime:
    # A registry change happens now: the operator's command is the event.
    return datetime.now(UTC)


def _write(record: dict) -> None:
    from connectors.kafka.clients import command_producer

    producer = command_producer(client_config(get_settings()))
    producer.produce(topic(), key=record["merchant_id"].encode(), value=CODEC.encode(record, check=True))
    if producer.flush(30) != 0:
        err.print("[red]merchants:[/red] the broker did not acknowledge the record in 30 s")
        raise typer.Exit(1)


@app.command("add")
def add(
    merchant: str,
    currency: list[str] = typer.Option([], "--currency", help="Allowed currency (repeat); none: any."),
    method: list[str] = typer.Option(["card"], "--method", help="Allowed payment method (repeat)."),
    fee_plan: str = typer.Option("standard", help="Fee plan id."),
    settlement_currency: str = typer.Option("USD", help="The currency the merchant is paid in."),
    verified: bool = typer.Option(False, "--verified", help="Register as KYC-verified (test mode, demo)."),
) -> None:
    """Register MERCHANT (KYC pending unless --verified); re-adding replaces its record."""
    try:
        record = merchants.merchant_record(
            merchant,
            kyc_status="verified" if verified else "pending",
            currencies=currency,
            methods=method,
            fee_plan_id=fee_plan,
            settlement_currency=settlement_currency,
            updated_at=_now(),
        )
    except merchants.MerchantError as e:
        err.print(f"[red]merchants add:[/red] {e}")
        raise typer.Exit(2) from None
    _write(record)
    typer.echo(f"{merchant}: {record['kyc_status']}")


def _set_status(merchant: str, status: str, reviewer: str | None) -> None:
    from streams.client import kyc as kyc_ops

    desk = kyc_ops.KycDesk(get_settings())
    try:
        records = kyc_ops.operator_status(desk.registry(), merchant, status, reviewer, _now())
    except ValueError as e:  # MerchantError, KycError
        _kyc_fail("verify" if status == "verified" else "reject", e)
    for record in records:  # the merchant first: a platform is disconnected only from a rejected account
        desk.write(record)
    typer.echo(f"{merchant}: {status}" + ("" if records else " (already)"))


@app.command("connect")
def connect(platform: str, account: str) -> None:
    """Connect ACCOUNT to the marketplace PLATFORM: PLATFORM's creates may split payments to it.
    Both must be verified; rejecting ACCOUNT later disconnects it."""
    registry = read_registry(get_settings())
    missing = [m for m in (platform, account) if m not in registry]
    if missing:
        err.print(f"[red]merchants connect:[/red] no merchant {missing[0]!r}; add it first")
        raise typer.Exit(2)
    try:
        new_platform, new_account = merchants.connect(registry[platform], registry[account], _now())
    except merchants.MerchantError as e:
        err.print(f"[red]merchants connect:[/red] {e}")
        raise typer.Exit(2) from None
    _write(new_account)
    _write(new_platform)
    typer.echo(f"{account}: connected to {platform}")


REVIEWER = typer.Option(None, help="Who decides (audit trail): required when the merchant has a KYC case.")


@app.command("verify")
def verify(merchant: str, reviewer: str = REVIEWER) -> None:
    """Verify MERCHANT: its creates are accepted. A KYC case in manual review is approved, as `kyc-review` does."""
    _set_status(merchant, "verified", reviewer)


@app.command("reject")
def reject(merchant: str, reviewer: str = REVIEWER) -> None:
    """Reject MERCHANT: its creates are refused `merchant_not_verified`. A KYC case in review is rejected, a
    verified one withdrawn (the case says who and when); a connected account leaves its platform."""
    _set_status(merchant, "rejected", reviewer)


@app.command("list")
def list_() -> None:
    """Every registered merchant, as the topic holds it."""
    table = Table("merchant", "kyc", "currencies", "methods", "fee plan", "settles in", "updated")
    for m in sorted(read_registry(get_settings()).values(), key=lambda r: r["merchant_id"]):
        table.add_row(
            m["merchant_id"],
            m["kyc_status"],
            ",".join(m["currencies"]) or "any",
            ",".join(m["methods"]) or "any",
            m["fee_plan_id"],
            m["settlement_currency"],
            m["updated_at"].isoformat(),
        )
    Console().print(table)


def _kyc_fail(command: str, e: Exception) -> None:
    reason = getattr(e, "reason", "invalid")
    err.print(f"[red]merchants {command}:[/red] {reason}: {getattr(e, 'detail', e)}")
    raise typer.Exit(2)


@app.command("apply")
def apply_(
    merchant: str,
    legal_name: str = typer.Option(..., help="The company's registered name."),
    country: str = typer.Option(..., help="ISO 3166-1 alpha-2 of its registration."),
    registration_number: str = typer.Option(
        ..., help="Business registry number (simulated provider: FAIL... fails, MANUAL... goes to a reviewer)."
    ),
    owner: list[str] = typer.Option(..., "--owner", help="A beneficial owner's name (repeat)."),
    document: list[str] = typer.Option([], "--document", help="KIND=REF, a document store reference (repeat)."),
) -> None:
    """MERCHANT applies for KYC: the provider's checks run, the record is written with the outcome."""
    from streams.client.kyc import KycDesk, view
    from streams.domain import kyc

    try:
        docs = dict(d.split("=", 1) for d in document)
        application = kyc.application(legal_name, country, registration_number, owner, docs)
        record = KycDesk(get_settings()).apply(merchant, application, _now())
    except ValueError as e:  # KycError, MerchantError, a KIND=REF without '='
        _kyc_fail("apply", e)
    print(json.dumps(view(record), default=str))


@app.command("kyc-review")
def kyc_review(
    merchant: str,
    decision: str = typer.Argument(..., help="approve | reject"),
    reviewer: str = typer.Option(..., help="Who decides (audit trail)."),
    clear: list[str] = typer.Option(
        [], "--clear", help="A sanctions entry uid ruled out as a false positive (repeat)."
    ),
) -> None:
    """Decide MERCHANT's KYC case in manual review (the checks, and any sanctions match, are in `merchants kyc`)."""
    from streams.client import kyc as kyc_ops

    desk = kyc_ops.KycDesk(get_settings())
    record = desk.registry().get(merchant)
    if record is None:
        err.print(f"[red]merchants kyc-review:[/red] no merchant {merchant!r}")
        raise typer.Exit(2)
    try:
        record = kyc_ops.review(record, decision, reviewer, _now(), clear)
    except ValueError as e:
        _kyc_fail("kyc-review", e)
    desk.write(record)
    print(json.dumps(kyc_ops.view(record), default=str))


@app.command("kyc")
def kyc_show(merchant: str) -> None:
    """MERCHANT's KYC case: state, each check's outcome and detail (a sanctions match shows the listed party)."""
    from streams.client.kyc import view

    record = read_registry(get_settings()).get(merchant)
    if record is None:
        err.print(f"[red]merchants kyc:[/red] no merchant {merchant!r}")
        raise typer.Exit(2)
    print(json.dumps(view(record), default=str))


@app.command("kyc-reverify")
def kyc_reverify(
    as_of: str = typer.Option(..., help="Event time (ISO 8601, UTC): verifications expired by then are checked again."),
) -> None:
    """Check again every verified merchant whose verification expired by AS_OF (the scheduler's daily job does this)."""
    from streams.client import kyc as kyc_ops

    at = datetime.fromisoformat(as_of)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    for record in kyc_ops.reverify_run(kyc_ops.KycDesk(get_settings()), at):
        print(json.dumps(kyc_ops.view(record), default=str))
