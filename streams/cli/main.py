"""`paystream`: one CLI for every job. One sub-command group per concern."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from connectors.kafka import admin, launcher
from streams.cli import api as cli_api, clickhouse as cli_clickhouse, fraud as cli_fraud, fx as cli_fx, keys as cli_keys, ledger as cli_ledger, merchants as cli_merchants, payouts as cli_payouts, providers as cli_providers, readmodels as cli_readmodels, registry as cli_registry, reliability as cli_reliability, sanctions as cli_sanctions, subscriptions as cli_subscriptions, webhooks as cli_webhooks
from streams.settings import Settings, client_config, get_settings

class _Group(TyperGroup):
    """Keeps the sub-command's own arguments for `configure`: click has consumed them
    by the time the group callback runs, and `<command> --help` needs no registry."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        ctx.meta["paystream.command_args"] = rest
        return name, cmd, rest


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False, help=__doc__)
kafka_app = typer.Typer(no_args_is_help=True, help="The embedded Kafka broker (KRaft, one node).")
topics_app = typer.Typer(no_args_is_help=True, help="Topic administration.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(cli_keys.app, name="keys")
app.add_typer(cli_fraud.app, name="fraud")
app.add_typer(cli_clickhouse.app, name="clickhouse")
app.command("sql")(cli_clickhouse.sql)
app.add_typer(cli_webhooks.app, name="webhooks")
app.add_typer(cli_readmodels.app, name="readmodels")
app.add_typer(cli_reliability.app, name="reliability")
app.command("sink")(cli_readmodels.sink)
app.command("settle")(cli_readmodels.settle)
app.command("reconcile")(cli_readmodels.reconcile)
app.command("balance")(cli_ledger.balance)
app.command("audit")(cli_ledger.audit_cmd)
app.command("replay")(cli_ledger.replay)
app.command("api")(cli_api.serve)
app.add_typer(cli_api.app, name="api-keys")
app.add_typer(cli_merchants.app, name="merchants")
app.add_typer(cli_fx.app, name="fx")
app.add_typer(cli_providers.app, name="providers")
app.add_typer(cli_subscriptions.app, name="subscriptions")
app.add_typer(cli_subscriptions.clock_app, name="clock")
app.add_typer(cli_payouts.app, name="payouts")
app.add_typer(cli_registry.app, name="registry")
app.add_typer(cli_sanctions.app, name="sanctions")
from streams.cli import cases as cli_cases; app.add_typer(cli_cases.app, name="cases")  # noqa: E402,E702

err = Console(stderr=True)

# Commands that encode and decode no record: they run without the Schema Registry
# (`registry up` starts it). Every other command is a process that may write or read
# a topic, and switches its codecs at start (a new command does by default).
NO_CODEC_COMMANDS = frozenset({"kafka", "registry", "topics", "keys", "clickhouse", "sql", "api-keys"})


@app.callback()
def configure(ctx: typer.Context) -> None:
    """paystream: one CLI for every job. One sub-command group per concern."""
    if ctx.resilient_parsing or ctx.invoked_subcommand in NO_CODEC_COMMANDS or "--help" in ctx.meta.get("paystream.command_args", ()):
        return
    from schemas.codec import RegistryError
    from streams.client.schema_registry import configure_codecs

    settings = get_settings()
    if settings.schema_registry_url is None:
        return
    try:
        configure_codecs(settings)
    except RegistryError as e:
        err.print(f"[red]Schema Registry:[/red] {e}")
        raise typer.Exit(1) from None


def broker_config(settings: Settings) -> launcher.BrokerConfig:
    port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
    return launcher.BrokerConfig(
        home=settings.kafka_dir,
        port=port,
        controller_port=settings.kafka_controller_port,
        start_timeout_s=settings.kafka_start_timeout_s,
    )


def ensure_broker(settings: Settings) -> None:
    """Start the embedded broker if it is the one configured; else check the external one answers."""
    if settings.kafka_embedded:
        launcher.up(broker_config(settings))
    else:
        admin.wait_for_broker(client_config(settings), timeout_s=30)


def cluster_config(settings: Settings, brokers: int) -> launcher.ClusterConfig:
    port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
    return launcher.ClusterConfig(settings.kafka_dir, brokers, port, settings.kafka_start_timeout_s)


@kafka_app.command("up")
def kafka_up(
    brokers: int = typer.Option(None, min=1, max=5, help="1 node, or a 3-5 node cluster (RF 3, min ISR 2); default PAYSTREAM_KAFKA_BROKERS"),
) -> None:
    """Resolve the broker's jars (first run), format storage (first run), start, wait until it answers."""
    settings = get_settings()
    if not settings.kafka_embedded:
        err.print(f"PAYSTREAM_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} is external: nothing to start")
        return
    started = time.monotonic()
    brokers = brokers or settings.kafka_brokers
    if brokers > 1:
        try:
            nodes = launcher.up_cluster(cluster_config(settings, brokers))
        except (launcher.BrokerError, ValueError) as e:
            err.print(f"[red]kafka up --brokers {brokers} failed:[/red] {e}")
            raise typer.Exit(1) from None
        err.print(f"kafka: {brokers} nodes up at {','.join(n.bootstrap for n in nodes)} in {time.monotonic() - started:.1f}s;"
                  f" set PAYSTREAM_KAFKA_BROKERS={brokers} for workers (RF 3)")
        return
    try:
        st = launcher.up(broker_config(settings))
    except launcher.BrokerError as e:
        err.print(f"[red]kafka up failed:[/red] {e}")
        raise typer.Exit(1) from None
    if st.already_running:
        err.print(f"kafka: already up (pid {st.pid}) at {st.bootstrap}")
    else:
        err.print(f"kafka: up (pid {st.pid}) at {st.bootstrap} in {time.monotonic() - started:.1f}s; log {st.log_file}")


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the embedded broker gracefully (SIGTERM, bounded wait, then SIGKILL)."""
    settings = get_settings()
    if not settings.kafka_embedded:
        err.print("external cluster: nothing to stop")
        return
    stopped = launcher.down(broker_config(settings))
    cluster = launcher.existing_cluster(settings.kafka_dir, broker_config(settings).port)
    nodes = launcher.down_cluster(cluster) if cluster else []
    if not stopped and not nodes:
        err.print("kafka: was not running")
    else:
        err.print("kafka: stopped" + (f" cluster nodes {sorted(nodes)}" if nodes else ""))


@kafka_app.command("status")
def kafka_status() -> None:
    """Report whether the broker runs and answers; exit 1 if it does not answer."""
    settings = get_settings()
    if settings.kafka_embedded:
        st = launcher.status(broker_config(settings))
        print(json.dumps({"bootstrap": st.bootstrap, "running": st.running, "answering": st.answering, "pid": st.pid, "log": str(st.log_file)}))
        answering = st.answering
    else:
        answering = admin.broker_answers(client_config(settings))
        print(json.dumps({"bootstrap": settings.kafka_bootstrap, "external": True, "answering": answering}))
    if not answering:
        raise typer.Exit(1)


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create every declared topic that is missing and set existing topics' configs to
    their specs where nothing is lost (never partitions, never cleanup.policy, never a
    shorter retention). Run as the admin: workers only create."""
    from streams.topics import declared_topics

    settings = get_settings()
    specs = declared_topics(settings)
    try:
        created = admin.ensure_topics(client_config(settings), specs)
        altered = admin.align_topic_configs(client_config(settings), specs)
    except admin.TopicError as e:
        err.print(f"[red]topics ensure:[/red] {e}")
        raise typer.Exit(1) from None
    err.print(f"topics: created {len(created)}: {', '.join(created) or '-'}")
    err.print(f"topics: configs set {len(altered)}: {'; '.join(altered) or '-'}")


@app.command()
def worker(loglevel: str = typer.Option("info", help="debug|info|warning|error")) -> None:
    """Run a pipeline worker (exactly-once, RocksDB tables) until stopped."""
    from streams import metrics
    from streams.logs import setup_logging
    from streams.topics import declared_topics
    from streams.worker.topology import build_worker, reset_local_state

    setup_logging(loglevel)
    settings = get_settings()
    admin.wait_for_broker(client_config(settings), timeout_s=60)
    admin.ensure_topics(client_config(settings), declared_topics(settings))
    reset_local_state(settings)
    metrics.serve(settings.metrics_port)
    build_worker(settings).run()


@app.command()
def produce(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Commands as JSON lines"),
    tokenize: bool = typer.Option(False, "--tokenize", help="Store cards in the vault and publish tokens: no PAN enters Kafka"),
) -> None:
    """Publish commands from a JSON-lines file. Every line is checked against the
    Avro schema first; if any line is bad nothing is published. Cards are sealed to
    the card-intake key (or, with --tokenize, tokenized): no PAN enters Kafka."""
    from connectors.vault.keys import KeyStoreError
    from connectors.vault.vault import VaultError
    from streams.client.publish import CommandFileError, load_command_file, publish_commands, tokenize_in_vault

    settings = get_settings()
    try:
        records = load_command_file(file)
        if tokenize:
            records = tokenize_in_vault(settings, records)
        sent = publish_commands(settings, records)
    except (VaultError, KeyStoreError) as e:
        err.print(f"[red]produce:[/red] {e}; nothing published")
        raise typer.Exit(1) from None
    except CommandFileError as e:
        for line in e.errors:
            err.print(f"[red]{file}:{line}[/red]")
        err.print(f"produce: {len(e.errors)} bad line(s); nothing published")
        raise typer.Exit(2) from None
    err.print(f"produce: published {sent} command(s)")


@app.command()
def outcomes(
    count: int = typer.Option(10, min=1, help="Stop after this many outcomes"),
    timeout: float = typer.Option(30.0, min=0.1, help="Stop after this many seconds"),
    from_beginning: bool = typer.Option(True, help="Start at the earliest offset"),
) -> None:
    """Print committed outcomes (read_committed) as JSON lines."""
    from connectors.kafka.clients import committed_reader, poll_until
    from schemas.codec import Codec, DecodeError
    from schemas.jsonio import record_to_json
    from streams.topics import topic_names

    settings = get_settings()
    codec = Codec("PaymentOutcome")
    consumer = committed_reader(client_config(settings), [topic_names(settings).outcomes], from_beginning=from_beginning)
    seen = 0
    try:
        for msg in poll_until(consumer, time.monotonic() + timeout):
            try:
                print(record_to_json(codec.decode(msg.value())), flush=True)
            except DecodeError as e:
                err.print(f"skipping undecodable outcome at {msg.partition()}@{msg.offset()}: {e.reason}")
                continue
            seen += 1
            if seen >= count:
                break
    finally:
        consumer.close()
    if seen < count:
        err.print(f"outcomes: {seen} of {count} before the {timeout:g}s timeout")
        raise typer.Exit(1)


@app.command()
def demo(
    payments: int = typer.Option(10_000, min=1, max=1_000_000, help="How many payments to create"),
    timeout: float = typer.Option(900.0, min=1, help="Give up waiting for outcomes after this many seconds"),
    seed: int = typer.Option(7, help="Seed of the generated data"),
    chaos_providers: bool = typer.Option(False, "--chaos-providers",
                                         help="Take the primary acquirer down, then degrade it; summarise failover and check for double charges"),
) -> None:
    """Start the broker and a worker, push realistic traffic through, summarise."""
    from streams.demo.run import run_demo
    from streams.logs import setup_logging

    setup_logging("warning", fmt="text")
    settings = get_settings()
    ensure_broker(settings)
    ok = run_demo(settings, payments=payments, timeout_s=timeout, seed=seed, chaos_providers=chaos_providers)
    if not ok:
        raise typer.Exit(1)


@app.command()
def chaos(
    commands: int = typer.Option(5_000, min=10, max=10_000_000, help="Commands to stream (demo traffic, bad input mixed in)"),
    kills: int = typer.Option(2, min=0, max=1_000, help="kill -9 a random worker this many times (restarted after 1 s)"),
    broker_restarts: int = typer.Option(0, min=0, max=100, help="Restart the embedded broker this many times"),
    workers: int = typer.Option(1, min=1, max=8, help="Worker processes"),
    seed: int = typer.Option(7, help="Seed of the traffic and of the fault points"),
    json_file: Path | None = typer.Option(None, "--json", help="Write the figures here as JSON"),
) -> None:
    """Break the pipeline on purpose (kill -9 workers, restart the broker) and prove from the
    topics that nothing was lost or doubled and the books balance. Exit 1 if anything is off."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streams.harness.chaos import run_chaos, to_json
    from streams.logs import setup_logging

    setup_logging("warning", fmt="text")
    settings = get_settings()
    ensure_broker(settings)
    with Progress(TextColumn("[bold]chaos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("answered", total=None)
        figures = run_chaos(settings, commands=commands, kills=kills, broker_restarts=broker_restarts, workers=workers,
                            seed=seed, on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    doc = to_json(figures)
    text = json.dumps(doc, indent=2)
    if json_file is not None:
        json_file.write_text(text + "\n")
    print(text)
    if not figures.ok:
        raise typer.Exit(1)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Small sizes (a few minutes); the full run takes longer"),
    json_file: Path | None = typer.Option(None, "--json", help="Write the results here as JSON"),
    plot_file: Path | None = typer.Option(None, "--plot", help="Draw throughput bars and latency curves to this PNG"),
    repeats: int = typer.Option(1, min=1, max=9, help="Ceiling runs; the median is reported"),
    rates: str = typer.Option("", help="Offered rates for the latency part, commands/s, comma-separated (default 1000,2000,4000; quick 1000)"),
    profile: Path | None = typer.Option(None, "--profile", help="py-spy the worker during the e2e run: FILE.svg a flame graph, else collapsed stacks"),
    seed: int = typer.Option(7, help="Seed of the traffic"),
    peers: str = typer.Option("ceiling,ours,quixstreams,faust", help="The stateful hop's peers to measure (streams/harness/bench_peers.py)"),
) -> None:
    """Measure the pipeline against the broker's own ceiling (streams/harness/bench.py): JSON out."""
    import json

    from streams.harness.bench import MAX_RATE_PER_S, plot, run_bench
    from streams.harness.bench_peers import PEERS
    from streams.logs import setup_logging

    try:
        rates_per_s = tuple(int(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise typer.BadParameter(f"{rates!r}: integers separated by commas", param_hint="--rates") from None
    if any(not 0 < r <= MAX_RATE_PER_S for r in rates_per_s):
        raise typer.BadParameter(f"each rate must be in 1..{MAX_RATE_PER_S}", param_hint="--rates")
    setup_logging("warning", fmt="text")
    settings = get_settings()
    ensure_broker(settings)
    peer_names = tuple(p.strip() for p in peers.split(",") if p.strip())
    if not set(peer_names) <= set(PEERS):
        raise typer.BadParameter(f"peers are among {', '.join(PEERS)}", param_hint="--peers")
    result = run_bench(settings, quick=quick, seed=seed, repeats=repeats, rates_per_s=rates_per_s, profile=profile,
                       peer_names=peer_names)
    text = json.dumps(result, indent=2)
    if json_file is not None:
        json_file.write_text(text + "\n")
    if plot_file is not None:
        plot(result, plot_file)
    print(text)


scheduler_app = typer.Typer(no_args_is_help=True, help="The event-time clock and the daily jobs (streams/jobs/scheduler.py).")
app.add_typer(scheduler_app, name="scheduler")


@scheduler_app.command("run")
def scheduler_run(loglevel: str = typer.Option("info", help="debug|info|warning|error")) -> None:
    """Tick every partition of the clock topic and run the daily jobs (settle, payouts,
    providers report, reconcile) on schedule, until SIGTERM/SIGINT."""
    import signal
    import threading

    from streams import metrics
    from streams.logs import setup_logging
    from streams.jobs.scheduler import Scheduler
    from streams.topics import declared_topics

    setup_logging(loglevel)
    settings = get_settings()
    admin.wait_for_broker(client_config(settings), timeout_s=60)
    admin.ensure_topics(client_config(settings), declared_topics(settings))
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    metrics.serve(settings.metrics_port)
    Scheduler(settings).serve(stopping)


def main() -> None:  # `python -m streams.cli.main`
    app()


if __name__ == "__main__":
    sys.exit(main())
