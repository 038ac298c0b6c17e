"""`paystream fraud ...`: simulate, train, replay (the fraud model's offline jobs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, help="Fraud: simulator, training, replay evaluation.")
err = Console(stderr=True)


@app.command()
def simulate(
    days: int = typer.Option(30, min=1, max=3660, help="Days of traffic"),
    out: Path = typer.Option(..., dir_okay=False, help="CSV to write"),
    seed: int = typer.Option(0, help="Same seed, same file"),
    cards: int = typer.Option(5_000, min=1, max=10_000_000, help="Number of cards"),
    merchants: int = typer.Option(10_000, min=1, max=10_000_000, help="Number of merchants"),
) -> None:
    """Write simulated card transactions with labelled fraud scenarios
    (tx_id,timestamp,card_id,merchant_id,amount_minor,currency,fraud)."""
    from models.simulate import SimConfig, simulate as run, write_csv

    df = run(SimConfig(days=days, n_cards=cards, n_merchants=merchants, seed=seed))
    write_csv(df, out)
    err.print(f"simulate: {len(df):,} transactions, {int(df.fraud.sum()):,} fraud "
              f"({df.fraud.mean():.2%}) -> {out}")
    print(json.dumps({"rows": len(df), "fraud": int(df.fraud.sum()), "out": str(out)}))
