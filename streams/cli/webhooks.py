"""`paystream webhooks`: register merchants' endpoints (in `<data_dir>/webhooks.json`;
one JSON record per merchant for a compacted topic with `record`), hand out the
merchant's signing secret, and `run` the delivery process (streams/jobs/webhooks.py).
Payloads, signatures and delivery: docs/providers.md."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from connectors.vault.keys import FileKeyStore, KeyStoreError
from connectors.webhooks import registry
from connectors.webhooks.signing import stripe_secret
from streams.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Merchant webhook endpoints and signing secrets.")
err = Console(stderr=True, soft_wrap=True)


def _path() -> Path:
    from streams.jobs.webhooks import registry_path

    return registry_path(get_settings())


def _load() -> registry.Registry:
    try:
        return registry.load(_path())
    except registry.RegistryError as e:
        err.print(f"[red]webhooks:[/red] {e}")
        raise typer.Exit(1) from None


@app.command("add")
def add(merchant: str, url: str) -> None:
    """Register URL for MERCHANT's payment notifications (idempotent)."""
    try:
        reg, endpoint = registry.add(_load(), merchant, url)
    except registry.RegistryError as e:
        err.print(f"[red]webhooks add:[/red] {e}")
        raise typer.Exit(2) from None
    registry.save(reg, _path())
    typer.echo(json.dumps({"endpoint_id": endpoint.endpoint_id, "merchant_id": merchant, "url": url}))


@app.command("remove")
def remove(merchant: str, endpoint_id: str) -> None:
    """Stop notifying ENDPOINT_ID of MERCHANT."""
    try:
        reg = registry.remove(_load(), merchant, endpoint_id)
    except registry.RegistryError as e:
        err.print(f"[red]webhooks remove:[/red] {e}")
        raise typer.Exit(2) from None
    registry.save(reg, _path())
    err.print(f"webhooks: removed {endpoint_id}")


@app.command("list")
def list_endpoints(merchant: str = typer.Option(None, help="Only this merchant")) -> None:
    """Registered endpoints, one JSON object per line."""
    reg = _load()
    for m in sorted(reg.endpoints):
        if merchant is None or m == merchant:
            for e in reg.of(m):
                typer.echo(json.dumps({"endpoint_id": e.endpoint_id, "merchant_id": m, "url": e.url}))


@app.command("secret")
def secret(merchant: str, reveal: bool = typer.Option(False, "--reveal", help="Print the secret itself")) -> None:
    """MERCHANT's signing secret (hex) and its key id, for the merchant to verify
    `Paystream-Signature` (and as `whsec_...`, `Stripe-Signature` with Stripe's SDKs).
    Without --reveal only the key id is shown."""
    try:
        mac = FileKeyStore(get_settings().keys_dir).webhook_secret(merchant)
    except KeyStoreError as e:
        err.print(f"[red]webhooks secret:[/red] {e}")
        raise typer.Exit(1) from None
    revealed = {"secret": mac.digest.hex(), "stripe_secret": stripe_secret(mac.digest)} if reveal else {}
    typer.echo(json.dumps({"merchant_id": merchant, "key_id": mac.key_id} | revealed))


@app.command("run")
def run(
    max_pending: int = typer.Option(1_000, min=1, max=100_000, help="Open notifications before reading pauses"),
    http_timeout: float = typer.Option(10.0, min=0.1, max=60.0, help="Seconds one HTTP attempt may take"),
) -> None:
    """Deliver every payment event to its merchant's endpoints until SIGINT/SIGTERM;
    every attempt is recorded on webhook-deliveries (group <app id>-webhooks)."""
    import asyncio
    import signal

    from connectors.kafka.clients import MissingTopic
    from streams import metrics
    from streams.jobs.webhooks import WebhookRunner
    from streams.logs import setup_logging

    setup_logging("info", fmt="text")
    settings = get_settings()
    metrics.serve(settings.metrics_port)  # deploy/ probes the runner's /metrics, as the sink's

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stats = await WebhookRunner(settings, max_pending=max_pending, http_timeout_s=http_timeout).run(stop)
        err.print(f"webhooks: {stats}")

    try:
        asyncio.run(main())
    except (MissingTopic, ValueError) as e:
        err.print(f"[red]webhooks run:[/red] {e}")
        raise typer.Exit(1) from None
