"""`paystream kafka up|down|status`: the embedded Kafka broker (one node, or a 3-5 node cluster)."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console

from connectors.kafka import admin, launcher
from streams.client.broker import broker_config, cluster_config
from streams.settings import client_config, get_settings

err = Console(stderr=True, soft_wrap=True)


app = typer.Typer(no_args_is_help=True, help="The embedded Kafka broker (KRaft, one node).")


@app.command("up")
def kafka_up(
    brokers: int = typer.Option(
        None, min=1, max=5, help="1 node, or a 3-5 node cluster (RF 3, min ISR 2); default PAYSTREAM_KAFKA_BROKERS"
    ),
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
        err.print(
            f"kafka: {brokers} nodes up at {','.join(n.bootstrap for n in nodes)} in {time.monotonic() - started:.1f}s;"
            f" set PAYSTREAM_KAFKA_BROKERS={brokers} for workers (RF 3)"
        )
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


@app.command("down")
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


@app.command("status")
def kafka_status() -> None:
    """Report whether the broker runs and answers; exit 1 if it does not answer."""
    settings = get_settings()
    if settings.kafka_embedded:
        st = launcher.status(broker_config(settings))
        print(
            json.dumps(
                {
                    "bootstrap": st.bootstrap,
                    "running": st.running,
                    "answering": st.answering,
                    "pid": st.pid,
                    "log": str(st.log_file),
                }
            )
        )
        answering = st.answering
    else:
        answering = admin.broker_answers(client_config(settings))
        print(json.dumps({"bootstrap": settings.kafka_bootstrap, "external": True, "answering": answering}))
    if not answering:
        raise typer.Exit(1)
