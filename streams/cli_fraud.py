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


def _feature_progress(total: int, label: str):
    """A rich progress bar for long feature passes; returns (context, advance)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err, transient=False)
    task = progress.add_task(label, total=total)
    return progress, lambda n: progress.advance(task, n)


@app.command()
def train(
    input: Path = typer.Option(..., exists=True, dir_okay=False, help="Labelled history CSV"),
    out: Path = typer.Option(..., file_okay=False, help="Artifact directory to write"),
    feedback_delay_days: int = typer.Option(7, min=0, max=365, help="Labels become known this long after the tx"),
    test_days: int = typer.Option(7, min=1, max=365, help="Held-out last days for the metrics"),
    algo: str = typer.Option("auto", help="hgb | rf | auto (train both, keep the better AP)"),
    seed: int = typer.Option(0),
) -> None:
    """Train a model from a labelled history with the shared feature code; write
    model.pkl + manifest.json (sha256, features, windows, metrics)."""
    import sys

    from models.history import DAY_MS, HistoryError, history_features, load_history
    from models.train import train_artifact

    try:
        df = load_history(input)
    except HistoryError as e:
        err.print(f"[red]train:[/red] {e}")
        raise typer.Exit(2) from None
    progress, advance = _feature_progress(len(df), "features")
    with progress:
        X = history_features(df, feedback_delay_days * DAY_MS, advance)
    try:
        manifest = train_artifact(df, X, out, feedback_delay_days=feedback_delay_days, test_days=test_days,
                                  algo=algo, seed=seed, command="paystream " + " ".join(sys.argv[1:]))
    except ValueError as e:
        err.print(f"[red]train:[/red] {e}")
        raise typer.Exit(2) from None
    err.print(f"train: {manifest['model_version']} -> {out}")
    print(json.dumps({k: manifest[k] for k in ("model_version", "algo", "sha256", "metrics")}))


@app.command()
def replay(
    input: Path = typer.Option(..., exists=True, dir_okay=False, help="tx_id,timestamp,card_id,merchant_id,amount_minor,currency,fraud"),
    out: Path = typer.Option(..., dir_okay=False, help="tx_id,score for every input row"),
    feedback_delay_days: int = typer.Option(7, min=0, max=365, help="A label is revealed this long after its tx"),
    retrain_every_days: int = typer.Option(7, min=1, max=365, help="Retrain on the labels revealed so far this often"),
    algo: str = typer.Option("hgb", help="hgb | rf"),
    hindsight: bool = typer.Option(False, help="Also score the last 7 days with an offline model trained with hindsight"),
    seed: int = typer.Option(0),
) -> None:
    """Replay a labelled history in event-time order through the stream's feature code
    with delayed labels and periodic retraining; print AUC, AP and card precision@100
    over the last 7 days."""
    from models.history import HistoryError, load_history
    from models.replay import ReplayConfig, replay as run, write_scores

    try:
        cfg = ReplayConfig(feedback_delay_days=feedback_delay_days, retrain_every_days=retrain_every_days,
                           algo=algo, seed=seed, hindsight=hindsight)
        df = load_history(input)
    except (HistoryError, ValueError) as e:
        err.print(f"[red]replay:[/red] {e}")
        raise typer.Exit(2) from None
    progress, advance = _feature_progress(len(df), "features")
    with progress:
        periods = progress.add_task("retrain+score", total=None)
        result = run(df, cfg, advance, lambda k, n: progress.update(periods, completed=k, total=n))
    write_scores(df, result.scores, out)
    s = result.summary()
    m = s["online"]
    err.print(f"replay: {s['rows']:,} rows, {s['retrains']} retrains, scores -> {out}")
    err.print(f"last 7 days ({m['rows']:,} tx, {m['fraud']:,} fraud): AUC {m['auc']:.4f}  "
              f"AP {m['ap']:.4f}  card P@100 {m['card_p_at_100']:.4f}")
    if s["hindsight"]:
        h = s["hindsight"]
        err.print(f"offline hindsight model:            AUC {h['auc']:.4f}  AP {h['ap']:.4f}  "
                  f"card P@100 {h['card_p_at_100']:.4f}")
    err.print(f"scoring throughput {s['scoring_tx_per_s']:,} tx/s (features {s['feature_tx_per_s']:,} tx/s)")
    print(json.dumps(s))
