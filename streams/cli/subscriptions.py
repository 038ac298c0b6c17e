"""`paystream subscriptions create|cancel|change-plan|list` and `paystream clock tick`.

Commands go to subscription-commands keyed by subscription id (murmur2, the
partition its ticks visit); a tick goes to every partition of clock. `list` reads
the subscriptions table from the tables' changelog (the stage's committed state). docs/subscriptions.md.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from schemas.money import format_minor
from streams.cli.common import time_of
from streams.client.subscriptions import (
    cancel_command,
    change_plan_command,
    create_command,
    publish,
    read_subscriptions,
)
from streams.domain import subscriptions
from streams.domain.subscriptions import INTERVALS, describe
from streams.settings import get_settings

app = typer.Typer(
    no_args_is_help=True, help="Recurring payments: create, cancel, change plan, list (docs/subscriptions.md)."
)
err = Console(stderr=True, soft_wrap=True)


def _send(commands: list[dict[str, Any]], what: str) -> None:
    try:
        publish(get_settings(), commands)
    except Exception as e:  # an encode refusal names the field; a broker problem says so
        err.print(f"[red]{what}:[/red] {e}")
        raise typer.Exit(1) from None


@app.command("create")
def create(
    merchant: str,
    key: str = typer.Option(..., help="The merchant's idempotency key: the subscription id derives from it."),
    amount_minor: int = typer.Option(..., help="Per period, in minor units."),
    currency: str = typer.Option(...),
    interval: str = typer.Option("month", help=f"One of {', '.join(INTERVALS)}."),
    every: int = typer.Option(1, help="Intervals per period."),
    trial_days: int = typer.Option(0),
    anchor: str | None = typer.Option(None, help="Billing anchor, ISO (default: --at)."),
    exp: str | None = typer.Option(None, help="Card expiry MM/YYYY (with a card number)."),
    card_token: str | None = typer.Option(
        None,
        help="A vault card token as JSON (token, bin, last4, brand, exp_month, exp_year), instead of a card number.",
    ),
    card_number: str | None = typer.Option(
        None,
        envvar="PAYSTREAM_CARD_NUMBER",
        help="Tokenized in the vault here (asked for if neither this nor"
        " --card-token is given); only the token is published.",
    ),
    at: str | None = typer.Option(None, help="Event time, ISO (default: now)."),
) -> None:
    """Subscribe a customer's card to a plan of MERCHANT's."""
    token = _parse_token(card_token) if card_token is not None else _tokenize(merchant, card_number, exp)
    when = time_of(at, "subscriptions create")
    cmd = create_command(
        merchant,
        key,
        token,
        amount_minor,
        currency,
        interval,
        every,
        trial_days,
        time_of(anchor, "subscriptions create") if anchor else None,
        when,
    )
    try:  # the stage's own checks, here first: a clear error now instead of a dead letter later
        subscriptions.create(cmd)
    except subscriptions.SubscriptionError as e:
        err.print(f"[red]subscriptions create:[/red] {e}")
        raise typer.Exit(2) from None
    _send([cmd], "subscriptions create")
    typer.echo(cmd["subscription_id"])


def _parse_token(raw: str) -> dict[str, Any]:
    try:
        token = json.loads(raw)
        return {f: token[f] for f in ("token", "bin", "last4", "brand", "exp_month", "exp_year")}
    except (ValueError, KeyError, TypeError) as e:
        err.print(f"[red]subscriptions create:[/red] --card-token: {type(e).__name__}: {e}")
        raise typer.Exit(2) from None


def _tokenize(merchant: str, card_number: str | None, exp: str | None) -> dict[str, Any]:
    """The card's vault token: the card sealed onto the card-vault topic (acknowledged)
    before the subscription that charges it is published."""
    from connectors.vault.vault import VaultError
    from streams.client.publish import CommandFileError, tokenize_in_vault

    try:
        month, year = (int(x) for x in (exp or "").split("/"))
    except ValueError:
        err.print("[red]subscriptions create:[/red] --exp MM/YYYY is needed with a card number")
        raise typer.Exit(2) from None
    number = card_number or typer.prompt("card number", hide_input=True)
    card = {"number": number, "exp_month": month, "exp_year": year}
    try:
        (tokenized,) = tokenize_in_vault(
            get_settings(), [{"kind": "create", "merchant_id": merchant, "command_id": "cli", "card": card}]
        )
    except CommandFileError as e:  # the vault refused the card; the message masks the number
        err.print(f"[red]subscriptions create:[/red] {'; '.join(e.errors)}")
        raise typer.Exit(2) from None
    except VaultError as e:
        err.print(f"[red]subscriptions create:[/red] {e}; or pass --card-token")
        raise typer.Exit(2) from None
    return tokenized["card_token"]


@app.command("cancel")
def cancel(
    subscription_id: str,
    merchant: str = typer.Option(...),
    at_period_end: bool = typer.Option(False, "--at-period-end", help="At the end of the paid period, not now."),
    at: str | None = typer.Option(None, help="Event time, ISO (default: now)."),
) -> None:
    """Cancel a subscription now, or at the end of its paid period."""
    _send(
        [cancel_command(merchant, subscription_id, at_period_end, time_of(at, "subscriptions cancel"))],
        "subscriptions cancel",
    )
    typer.echo(f"{subscription_id}: cancel sent")


@app.command("change-plan")
def change_plan(
    subscription_id: str,
    amount_minor: int = typer.Option(..., help="The new amount per period."),
    at: str | None = typer.Option(None, help="Event time, ISO (default: now)."),
) -> None:
    """Change the amount (prorated on the next invoice); currency and interval stay."""
    sub = next((s for s in read_subscriptions(get_settings()) if s.subscription_id == subscription_id), None)
    if sub is None:
        err.print(f"[red]subscriptions change-plan:[/red] no subscription {subscription_id!r} in the stage's state")
        raise typer.Exit(2)
    _send(
        [change_plan_command(sub, amount_minor, time_of(at, "subscriptions change-plan"))], "subscriptions change-plan"
    )
    typer.echo(f"{subscription_id}: change_plan sent")


@app.command("list")
def list_(merchant: str | None = typer.Option(None, help="Only this merchant's.")) -> None:
    """Every subscription as the stage last committed it (no card token: its last four)."""
    table = Table(
        "subscription", "merchant", "status", "plan", "every", "card", "paid", "next charge", "balance", "note"
    )
    for sub in read_subscriptions(get_settings()):
        if merchant is not None and sub.merchant_id != merchant:
            continue
        d = describe(sub)
        note = (
            d["cancel_reason"] or (f"attempt {d['attempt']}" if d["attempt"] else "") or ("held" if d["held"] else "")
        )
        table.add_row(
            d["subscription_id"],
            d["merchant_id"],
            d["status"],
            format_minor(d["amount_minor"], d["currency"]),
            d["every"],
            f"…{d['card_last4']}",
            str(d["paid_periods"]),
            d["next_charge_at"] or "-",
            format_minor(d["balance_minor"], d["currency"]),
            note,
        )
    Console().print(table)
