"""`paystream providers report --date D`: the simulated rails' daily settlement reports,
from their journals (connectors/providers/journal.py), as the CSVs `paystream
reconcile --date D` reads (streams/domain/reconcile.py: write_report / read_report)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from connectors.providers.journal import JournalError
from connectors.providers.rails import RailConfigError, build_rails
from streams.domain.reconcile import ReportError, export_reports
from streams.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="The simulated providers: their books and settlement reports.")
err = Console(stderr=True, soft_wrap=True)


@app.command("report")
def report(
    date_: datetime = typer.Option(..., "--date", formats=["%Y-%m-%d"], help="The settlement day, YYYY-MM-DD"),
    out: Path | None = typer.Option(
        None,
        "--out",
        file_okay=False,
        help="Directory for the CSVs; default <data dir>/settlement-reports/[<namespace>/]<date>",
    ),
    inject_discrepancy: bool = typer.Option(
        False, "--inject-discrepancy", help="Write one row 1 minor unit off, to see reconcile flag it"
    ),
) -> None:
    """Write each rail's settlement report of a day from the providers' journals
    (PAYSTREAM_PROVIDERS_DIR) in the format `paystream reconcile` reads."""
    day, settings = date_.date(), get_settings()
    journals = settings.providers_dir
    assert journals is not None  # Settings defaults it
    if not journals.is_dir() or not any(journals.glob("*.jsonl")):
        err.print(f"[red]providers report:[/red] no provider journals in {journals} (PAYSTREAM_PROVIDERS_DIR)")
        raise typer.Exit(2)
    out_dir = out or settings.reports_dir / day.isoformat()
    try:
        rails = build_rails(seed=settings.provider_seed, journal_dir=journals)
        export = export_reports(rails, day, out_dir, inject_discrepancy=inject_discrepancy)
    except (RailConfigError, JournalError, ReportError) as e:
        err.print(f"[red]providers report:[/red] {e}")
        raise typer.Exit(2) from None
    table = Table("rail", "report rows", "journal records", "skipped lines")
    for name in export.files:
        j = rails[name].journal
        skipped = (j.torn + j.bad) if j is not None else 0
        table.add_row(name, str(export.rows[name]), str(len(rails[name].records)), str(skipped))
    Console().print(table)
    if export.altered is not None:
        a = export.altered
        err.print(f"injected: {a.provider} {a.provider_ref} ({a.kind}) written as {a.amount_minor}, 1 minor unit off")
    elif inject_discrepancy:
        err.print("[yellow]nothing injected: no rail settles anything on this day[/yellow]")
    err.print(f"providers report {day}: {sum(export.rows.values())} row(s) in {out_dir}")


@app.command("evaluate-routing")
def evaluate_routing(
    payments: int = typer.Option(10_000, "--payments", min=100, max=200_000, help="Card creates per scenario"),
    seed: int = typer.Option(7, "--seed", min=0, help="Traffic and rails seed: the same seed, the same numbers"),
    partitions: int = typer.Option(
        8, "--partitions", min=1, max=256, help="Payment partitions (routing state per partition)"
    ),
    json_file: Path | None = typer.Option(None, "--json", dir_okay=False, help="Write the results here as JSON"),
) -> None:
    """Replay the rails' simulated card traffic through today's rule router and the
    learning router (streams/harness/routing_eval.py; no broker): approval rate and cost."""
    import json

    from streams.harness.routing_eval import evaluate

    result = evaluate(payments, seed, partitions)
    table = Table(
        "scenario",
        "router",
        "approval rate",
        "fee bps of approved",
        "value bps per payment",
        "soft retries",
        "learned choices",
    )
    for scenario, variants in result["scenarios"].items():
        for name, r in variants.items():
            if name != "learning_vs_rule":
                table.add_row(
                    scenario,
                    name,
                    f"{r['approval_rate']:.4f}",
                    str(r["fee_bps_of_approved"]),
                    str(r["value_bps_per_payment"]),
                    str(r["soft_retries"]),
                    str(r["learned_choices"]),
                )
    Console().print(table)
    if json_file is not None:
        json_file.write_text(json.dumps(result, indent=2) + "\n")
        err.print(f"evaluate-routing: written to {json_file}")
