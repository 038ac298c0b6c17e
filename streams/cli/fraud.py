"""`paystream fraud ...`: simulate, train, replay (the fraud model's offline jobs)."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    no_args_is_help=True, help="Fraud: simulator, training, replay evaluation, blocklist, labels, review."
)
err = Console(stderr=True)


@app.command()
def simulate(
    days: int = typer.Option(30, min=1, max=3660, help="Days of traffic"),
    out: Path = typer.Option(..., dir_okay=False, help="CSV to write"),
    seed: int = typer.Option(0, help="Same seed, same file"),
    cards: int = typer.Option(5_000, min=1, max=10_000_000, help="Number of cards"),
    merchants: int = typer.Option(10_000, min=1, max=10_000_000, help="Number of merchants"),
    methods: bool = typer.Option(
        False,
        "--methods",
        help="The other methods' traffic instead (wallet, bank debit, BNPL, crypto; --cards payers per method)",
    ),
) -> None:
    """Write simulated card transactions with labelled fraud scenarios
    (tx_id,timestamp,card_id,merchant_id,amount_minor,currency,fraud), or with
    --methods the other methods' (the same columns plus method,device)."""
    if methods:
        from models.simulate_methods import MethodSimConfig, simulate_methods
        from models.simulate_methods import write_csv as write_methods

        cfg = MethodSimConfig(days=days, n_instruments=cards, n_merchants=merchants, seed=seed)
        df = simulate_methods(cfg)
        write_methods(df, out)
    else:
        from models.simulate import SimConfig, write_csv
        from models.simulate import simulate as run

        df = run(SimConfig(days=days, n_cards=cards, n_merchants=merchants, seed=seed))
        write_csv(df, out)
    err.print(f"simulate: {len(df):,} transactions, {int(df.fraud.sum()):,} fraud ({df.fraud.mean():.2%}) -> {out}")
    print(json.dumps({"rows": len(df), "fraud": int(df.fraud.sum()), "out": str(out)}))


def _feature_progress(total: int, label: str):
    """A rich progress bar for long feature passes; returns (context, advance)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
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
    methods: bool = typer.Option(
        False, "--methods", help="The other methods' model, from a `simulate --methods` history"
    ),
) -> None:
    """Train a model from a labelled history with the shared feature code; write
    model.pkl + manifest.json (sha256, features, windows, metrics)."""
    import sys

    from models.history import DAY_MS, HistoryError, history_features, load_history
    from models.train import train_artifact, train_methods_artifact

    try:
        df = load_history(input)
    except HistoryError as e:
        err.print(f"[red]train:[/red] {e}")
        raise typer.Exit(2) from None
    progress, advance = _feature_progress(len(df), "features")
    with progress:
        X = history_features(df, feedback_delay_days * DAY_MS, advance)
    command = "paystream " + " ".join(sys.argv[1:])
    try:
        if methods:
            manifest = train_methods_artifact(
                df, X, out, feedback_delay_days=feedback_delay_days, test_days=test_days, seed=seed, command=command
            )
        else:
            manifest = train_artifact(
                df,
                X,
                out,
                feedback_delay_days=feedback_delay_days,
                test_days=test_days,
                algo=algo,
                seed=seed,
                command=command,
            )
    except ValueError as e:
        err.print(f"[red]train:[/red] {e}")
        raise typer.Exit(2) from None
    err.print(f"train: {manifest['model_version']} -> {out}")
    print(json.dumps({k: manifest[k] for k in ("model_version", "algo", "sha256", "metrics")}))


@app.command()
def replay(
    input: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="tx_id,timestamp,card_id,merchant_id,amount_minor,currency,fraud"
    ),
    out: Path = typer.Option(..., dir_okay=False, help="tx_id,score for every input row"),
    feedback_delay_days: int = typer.Option(7, min=0, max=365, help="A label is revealed this long after its tx"),
    retrain_every_days: int = typer.Option(7, min=1, max=365, help="Retrain on the labels revealed so far this often"),
    algo: str = typer.Option("hgb", help="hgb | rf"),
    hindsight: bool = typer.Option(
        False, help="Also score the last 7 days with an offline model trained with hindsight"
    ),
    seed: int = typer.Option(0),
) -> None:
    """Replay a labelled history in event-time order through the stream's feature code
    with delayed labels and periodic retraining; print AUC, AP and card precision@100
    over the last 7 days."""
    from models.history import HistoryError, load_history
    from models.replay import ReplayConfig, write_scores
    from models.replay import replay as run

    try:
        cfg = ReplayConfig(
            feedback_delay_days=feedback_delay_days,
            retrain_every_days=retrain_every_days,
            algo=algo,
            seed=seed,
            hindsight=hindsight,
        )
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
    err.print(
        f"last 7 days ({m['rows']:,} tx, {m['fraud']:,} fraud): AUC {m['auc']:.4f}  "
        f"AP {m['ap']:.4f}  card P@100 {m['card_p_at_100']:.4f}"
    )
    if s["hindsight"]:
        h = s["hindsight"]
        err.print(
            f"offline hindsight model:            AUC {h['auc']:.4f}  AP {h['ap']:.4f}  "
            f"card P@100 {h['card_p_at_100']:.4f}"
        )
    err.print(f"scoring throughput {s['scoring_tx_per_s']:,} tx/s (features {s['feature_tx_per_s']:,} tx/s)")
    print(json.dumps(s))


# --- operator commands over the fraud topics (the lead runs them against the broker) ---

_KIND = typer.Argument(
    ..., help="card | bin | ip | device | email | wallet | bank_account | mandate | bnpl_customer | crypto_address"
)


def _now():
    # Operator commands are the one place a wall clock dates a record: it is the event.
    from datetime import datetime

    return datetime.now(UTC)


def _publish(topic: str, key: bytes, codec_name: str, record: dict) -> None:
    from connectors.kafka.clients import command_producer
    from schemas.codec import Codec
    from streams.settings import client_config, get_settings

    producer = command_producer(client_config(get_settings()))
    producer.produce(topic, key=key, value=Codec(codec_name).encode(record, check=True))
    if producer.flush(30) != 0:
        err.print(f"[red]not delivered to {topic} within 30 s[/red]")
        raise typer.Exit(1)


def _read(base: str, codec_name: str) -> list[dict]:
    """Every decodable record of a fraud topic, from offset 0 to its end now."""
    from connectors.kafka.clients import MissingTopic, read_to_end
    from schemas.codec import Codec, DecodeError
    from streams.client.fraud import fraud_topic
    from streams.settings import client_config, get_settings

    settings = get_settings()
    codec, out = Codec(codec_name), []
    try:
        for msg in read_to_end(client_config(settings), [fraud_topic(settings, base)], settings.partitions):
            try:
                out.append(codec.decode(msg.value()))
            except DecodeError:
                out.append(None)
    except MissingTopic as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    return out


def _block(kind: str, value: str, action: str, reason: str, actor: str | None, expires_days: int | None) -> None:
    from datetime import timedelta

    from models.blocklist import BlocklistError
    from streams.client.fraud import BLOCKLIST, block_record, fraud_topic
    from streams.settings import get_settings

    at = _now()
    try:
        key, record = block_record(
            kind,
            value,
            action,
            reason,
            at,
            actor=actor,
            expires_at=at + timedelta(days=expires_days) if expires_days else None,
        )
    except BlocklistError as e:
        err.print(f"[red]{action}:[/red] {e}")
        raise typer.Exit(2) from None
    _publish(fraud_topic(get_settings(), BLOCKLIST), key, "FraudBlockEntry", record)
    print(json.dumps({"key": key.decode(), "action": action}))


@app.command()
def block(
    kind: str = _KIND,
    value: str = typer.Argument(
        ...,
        help="token, BIN, IP, device id, email, wallet token, account "
        "number or IBAN (kept as its digest), MERCHANT:MANDATE_ID, "
        "PROVIDER:CUSTOMER, or crypto address",
    ),
    reason: str = typer.Option(..., help="Why (audit trail; no card numbers)"),
    actor: str = typer.Option(None, help="Operator id"),
    expires_days: int = typer.Option(None, min=1, max=3650, help="Stop applying after this many days"),
) -> None:
    """Block a value on every risk worker (compacted fraud-blocklist topic)."""
    _block(kind, value, "block", reason, actor, expires_days)


@app.command()
def unblock(
    kind: str = _KIND,
    value: str = typer.Argument(...),
    reason: str = typer.Option(..., help="Why"),
    actor: str = typer.Option(None),
) -> None:
    """Lift a block (a newer entry under the same key)."""
    _block(kind, value, "unblock", reason, actor, None)


@app.command("list")
def list_blocks(kind: str = typer.Option(None, help="Only this kind")) -> None:
    """The blocks in force, folded from the fraud-blocklist topic (the shipped sanctioned
    crypto addresses every worker starts with are not on the topic: models/blocklists/)."""
    from streams.client.fraud import BLOCKLIST, fold_blocklist

    blocklist, bad = fold_blocklist(_read(BLOCKLIST, "FraudBlockEntry"))
    for e in blocklist.entries(kind):
        print(
            json.dumps(
                {
                    "kind": e.kind,
                    "value": e.value,
                    "reason": e.reason,
                    "actor": e.actor,
                    "since": e.occurred_at.isoformat(),
                    "expires_at": e.expires_at.isoformat() if e.expires_at else None,
                }
            )
        )
    if bad:
        err.print(f"[yellow]{bad} record(s) could not be applied[/yellow]")


@app.command()
def label(
    payment_id: str = typer.Argument(...),
    card_token: str = typer.Option(..., help="The payment's card token"),
    merchant_id: str = typer.Option(...),
    tx_at: str = typer.Option(..., help="When the payment happened (ISO 8601 UTC)"),
    genuine: bool = typer.Option(False, help="Confirmed genuine instead of fraud"),
    source: str = typer.Option("fraud_report", help="chargeback | fraud_report | review | matured"),
) -> None:
    """Publish a FraudLabel (confirmed fraud by default) to fraud-labels."""
    from datetime import datetime

    from streams.client.fraud import LABELS, fraud_topic, label_record
    from streams.settings import get_settings

    try:
        tx_occurred_at = datetime.fromisoformat(tx_at)
        if tx_occurred_at.tzinfo is None:
            tx_occurred_at = tx_occurred_at.replace(tzinfo=UTC)
        key, record = label_record(
            payment_id,
            card_token,
            merchant_id,
            fraud=not genuine,
            source=source,
            tx_occurred_at=tx_occurred_at,
            at=_now(),
        )
    except ValueError as e:
        err.print(f"[red]label:[/red] {e}")
        raise typer.Exit(2) from None
    _publish(fraud_topic(get_settings(), LABELS), key, "FraudLabel", record)
    print(json.dumps({"label_id": record["label_id"], "fraud": record["fraud"]}))


@app.command()
def review(
    resolve: str = typer.Option(None, help="A payment_id (or review_id) to resolve"),
    decision: str = typer.Argument(None, help="approve | decline (with --resolve)"),
    operator: str = typer.Option("ops", help="Who resolves"),
) -> None:
    """List the payments waiting in review, or resolve one: --resolve ID approve|decline
    publishes a review_resolve command; the payment continues or is declined."""
    from streams.client.fraud import REVIEW, open_reviews, resolve_command
    from streams.settings import get_settings
    from streams.topics import topic_names

    reviews = [r for r in _read(REVIEW, "FraudReview") if r is not None]
    if resolve is None:
        for r in open_reviews(reviews):
            print(
                json.dumps(
                    {
                        k: r[k]
                        for k in (
                            "payment_id",
                            "review_id",
                            "merchant_id",
                            "amount_minor",
                            "currency",
                            "score_ppm",
                            "reasons",
                        )
                    }
                    | {"at": r["occurred_at"].isoformat()}
                    | ({"sanctions": r["sanctions"]} if r.get("sanctions") else {}),
                    ensure_ascii=False,
                )
            )
        return
    match = [r for r in reviews if resolve in (r["payment_id"], r["review_id"])]
    if not match:
        err.print(f"[red]review:[/red] no review for {resolve}")
        raise typer.Exit(2)
    try:
        key, command = resolve_command(match[-1], decision or "", _now(), operator)
    except ValueError as e:
        err.print(f"[red]review:[/red] {e}")
        raise typer.Exit(2) from None
    _publish(topic_names(get_settings()).validated, key, "ValidatedCommand", command)
    print(json.dumps({"payment_id": command["payment_id"], "decision": decision, "command_id": command["command_id"]}))
