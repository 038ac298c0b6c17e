"""`paystream cases list|decide`: transaction monitoring's case queue (docs/compliance.md).
`list` folds the cases on `monitoring-cases` with the decisions on `monitoring-decisions`;
`decide` records one decision (who, what, why; when: this command's time) on the audit
trail. Each case and decision is one JSON object per line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.console import Console

from streams.domain.monitoring import DECISIONS, RULES, STATUSES
from streams.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Transaction monitoring's case queue: list cases, decide one.")
err = Console(stderr=True, soft_wrap=True)


@app.command("list")
def list_(
    status: str = typer.Option(None, help=f"Only cases now {' | '.join(STATUSES)}."),
    rule: str = typer.Option(None, help=f"Only this rule's cases: {' | '.join(RULES)}."),
) -> None:
    """Every case with its status and decisions, oldest opened first."""
    from streams.client.cases import CaseQueue, select, view

    if status is not None and status not in STATUSES or rule is not None and rule not in RULES:
        err.print(f"[red]cases list:[/red] --status is one of {', '.join(STATUSES)}; --rule one of {', '.join(RULES)}")
        raise typer.Exit(2)
    cases = select(CaseQueue(get_settings()).cases(), status, rule)
    for case in cases:
        typer.echo(json.dumps(view(case), ensure_ascii=False))
    err.print(f"{len(cases)} case(s)")


@app.command("decide")
def decide(
    case_id: str,
    decision: str = typer.Option(..., help=f"{' | '.join(DECISIONS)} (dismiss and report close the case)."),
    operator: str = typer.Option(..., help="Who decides: recorded on the audit trail."),
    reason: str = typer.Option(..., help="Why: recorded on the audit trail."),
) -> None:
    """Decide CASE_ID; the decision is recorded with this command's time."""
    from streams.client.cases import CaseQueue, view
    from streams.domain.monitoring import MonitoringError

    try:  # the operator's command is the event: its time is the decision's
        record = CaseQueue(get_settings()).decide(case_id, decision, operator, reason, datetime.now(UTC))
    except MonitoringError as e:
        err.print(f"[red]cases decide:[/red] {e.reason}: {e.detail}")
        raise typer.Exit(2) from None
    typer.echo(json.dumps(view(record), ensure_ascii=False))
