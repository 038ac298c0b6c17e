"""`paystream api` (the merchant HTTP API, docs/api.md) and `paystream api-keys`
(merchants' secret keys: stored hashed in `<data_dir>/api_keys.json`, shown once)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from streams.api import auth
from streams.settings import Settings, client_config, get_settings

if TYPE_CHECKING:
    from streams.api.dashboard import Dashboard
    from streams.api.readmodel import ClickHousePayments

app = typer.Typer(no_args_is_help=True, help="Merchants' secret API keys (sk_...), stored hashed.")
err = Console(stderr=True, soft_wrap=True)


def keys_path() -> Path:
    return get_settings().data_dir / "api_keys.json"


def _load() -> dict[str, auth.KeyRecord]:
    try:
        return auth.load(keys_path())
    except auth.KeyFileError as e:
        err.print(f"[red]api-keys:[/red] {e}")
        raise typer.Exit(1) from None


@app.command("add")
def add(merchant: str) -> None:
    """Create a secret key for MERCHANT and print it: the only time it is shown."""
    keys = _load()
    try:
        secret, record = auth.new_key(merchant, datetime.now(UTC).isoformat(timespec="seconds"))
        auth.save(keys | {record.key_id: record}, keys_path())
    except auth.KeyFileError as e:
        err.print(f"[red]api-keys add:[/red] {e}")
        raise typer.Exit(2) from None
    err.print("api-keys: store this key now; it cannot be shown again")
    typer.echo(json.dumps({"key_id": record.key_id, "merchant_id": merchant, "secret_key": secret}))


@app.command("list")
def list_keys(merchant: str = typer.Option(None, help="Only this merchant")) -> None:
    """Keys (never their secrets), one JSON object per line."""
    for k in _load().values():
        if merchant is None or k.merchant_id == merchant:
            typer.echo(
                json.dumps(
                    {"key_id": k.key_id, "merchant_id": k.merchant_id, "created_at": k.created_at, "revoked": k.revoked}
                )
            )


@app.command("revoke")
def revoke(key_id: str) -> None:
    """Revoke KEY_ID; a running API refuses it from its next request."""
    keys = _load()
    if key_id not in keys:
        err.print(f"[red]api-keys revoke:[/red] no key {key_id}")
        raise typer.Exit(2)
    keys[key_id] = auth.KeyRecord(**{**keys[key_id].__dict__, "revoked": True})
    auth.save(keys, keys_path())
    err.print(f"api-keys: revoked {key_id}")


def serve(
    host: str = typer.Option(None, help="Default PAYSTREAM_API_HOST (127.0.0.1)"),
    port: int = typer.Option(None, min=1024, max=65535, help="Default PAYSTREAM_API_PORT (8080)"),
) -> None:
    """Serve the merchant API (writes go to payment-commands, answers come from
    payment-outcomes) and the dashboard on /dashboard."""
    import uvicorn

    from connectors.clickhouse.client import ClickHouseError, connect
    from connectors.kafka.clients import MissingTopic, committed_reader, require_topics
    from connectors.vault.keys import (
        ACS_SIGNING,
        ActiveSigner,
        FileKeyStore,
        KeyStoreError,
    )
    from streams.api import cases_routes, kyc_routes
    from streams.api.acs import Acs
    from streams.api.app import ApiConfig, create_app
    from streams.api.bus import KafkaBus
    from streams.api.readmodel import ClickHousePayments
    from streams.client.cases import CaseQueue
    from streams.client.kyc import KycDesk
    from streams.client.publish import intake_sealer
    from streams.topics import topic_names

    settings = get_settings()
    names = topic_names(settings)
    probe = committed_reader(client_config(settings), [])
    try:
        require_topics(probe, [names.commands, names.outcomes, names.api_objects])
    except MissingTopic as e:
        err.print(f"[red]api:[/red] {e}")
        raise typer.Exit(2) from None
    finally:
        probe.close()
    config = ApiConfig.from_settings(settings)
    try:
        reader = ClickHousePayments(connect(settings.clickhouse_url, settings.clickhouse_database, create=False))
    except ClickHouseError as e:  # GET then answers from the outcomes this process saw
        err.print(
            f"[yellow]api: no read model ({e}); GET /v1/payments/{{id}} knows only this process's payments[/yellow]"
        )
        reader = None
    try:
        sealer = intake_sealer(settings)
    except KeyStoreError as e:
        err.print(f"[red]api:[/red] {e}")
        raise typer.Exit(1) from None
    try:  # the simulated issuer's ACS signs with its own key kind (docs/security.md)
        acs = Acs(ActiveSigner.of(FileKeyStore(settings.keys_dir), ACS_SIGNING))
    except KeyStoreError as e:
        err.print(
            f"[yellow]api: no simulated issuer ({e}); 3-D Secure results come from the merchant's own 3DS "
            "server[/yellow]"
        )
        acs = None
    keys = auth.ApiKeys(keys_path())
    dashboard = _dashboard(settings, keys, reader)
    from connectors.vault.keys import FileKeyStore
    from connectors.webhooks.signing import stripe_secret
    from streams.api.objects import KafkaObjects
    from streams.api.stripe_events import Webhooks
    from streams.jobs.webhooks import registry_path

    # The store is read at each create: keys the worker made after this start are found.
    webhooks = Webhooks(
        registry_path(settings),
        lambda merchant: stripe_secret(FileKeyStore(settings.keys_dir).webhook_secret(merchant).digest),
    )

    bus = KafkaBus(settings, config.idempotency_records_max)
    objects = KafkaObjects(settings)
    try:
        desk = KycDesk(settings)
        api = create_app(
            bus,
            keys,
            sealer=sealer,
            config=config,
            reader=reader,
            dashboard=dashboard,
            acs=acs,
            objects=objects,
            webhooks=webhooks,
            registry=desk,
        )
        # The application's time is when it reaches the API (its event time).
        kyc_routes.install(api, desk, lambda: datetime.now(UTC))
        # The case queue for ops: the dashboard's ops session or the ops token; a decision's time is the request's.
        role_of = (
            dashboard.role_of
            if dashboard is not None
            else cases_routes.bearer_role(ops_token(settings.dashboard_token_file))
        )
        cases_routes.install(api, CaseQueue(settings), role_of, lambda: datetime.now(UTC))
        uvicorn.run(api, host=host or settings.api_host, port=port or settings.api_port, log_level="info")
    finally:
        objects.close()
        bus.close()


OPS_TOKEN_MIN_CHARS = 32


def ops_token(path: Path | None) -> bytes | None:
    """The ops token from its file (stripped), None when unset; a clear exit when unusable."""
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as e:
        err.print(f"[red]api:[/red] dashboard token file {path}: {e.strerror}")
        raise typer.Exit(2) from None
    if len(token) < OPS_TOKEN_MIN_CHARS:
        err.print(
            f"[red]api:[/red] the dashboard token in {path} must be at least {OPS_TOKEN_MIN_CHARS} characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
        raise typer.Exit(2)
    return token.encode()


def _dashboard(settings: Settings, keys: auth.ApiKeys, reader: ClickHousePayments | None) -> Dashboard | None:
    from streams.api.console_sources import KafkaSources
    from streams.api.dashboard import Dashboard
    from streams.api.ops import KafkaOps
    from streams.client.cases import CaseQueue
    from streams.topics import client_ids, topic_names

    if reader is None:
        err.print("[yellow]api: no read model: the dashboard is off[/yellow]")
        return None
    urls = [u for u in settings.dashboard_metrics_urls.split(",") if u]
    if not urls and settings.metrics_port is not None:
        urls = [f"http://127.0.0.1:{settings.metrics_port}/metrics"]
    # The worker's group and the sink's (streams/topics.py ClientIds).
    ids = client_ids(settings)
    groups = [ids.worker_group, ids.sink_group]
    ops = KafkaOps(client_config(settings), groups, topic_names(settings).dlq, urls)
    # Signatures, reviews and webhook attempts: read from the topics on use (console_sources.py).
    return Dashboard(
        reader.rows,
        keys,
        ops_token(settings.dashboard_token_file),
        ops,
        sources=KafkaSources(settings),
        cases=CaseQueue(settings),  # the case queue `paystream cases` works: the same decisions
    )
