"""`paystream registry`: the embedded Schema Registry (Apicurio Registry's
Confluent-compatible API), started and stopped like the embedded broker."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console

from connectors.schema_registry import launcher
from streams.client.schema_registry import registry_config
from streams.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True, help="The embedded Schema Registry (Apicurio, Confluent-compatible API).")
err = Console(stderr=True)


def _external(settings: Settings) -> str | None:
    """The configured URL when it names a registry that is not ours to run."""
    url = settings.schema_registry_url
    return url if url is not None and url.rstrip("/") != settings.schema_registry_embedded_url else None


@app.command("up")
def up() -> None:
    """Resolve the registry (first run), start it, wait until its API answers."""
    settings = get_settings()
    if external := _external(settings):
        err.print(f"PAYSTREAM_SCHEMA_REGISTRY_URL={external} is external: nothing to start")
        return
    started = time.monotonic()
    try:
        st = launcher.up(registry_config(settings))
    except launcher.RegistryServerError as e:
        err.print(f"[red]registry up failed:[/red] {e}")
        raise typer.Exit(1) from None
    if st.already_running:
        err.print(f"registry: already up (pid {st.pid}) at {st.url}")
    else:
        err.print(f"registry: up (pid {st.pid}) at {st.url} in {time.monotonic() - started:.1f}s; log {st.log_file}")
    if settings.schema_registry_url is None:
        err.print(f"processes use it once PAYSTREAM_SCHEMA_REGISTRY_URL={st.url} is set")


@app.command("down")
def down() -> None:
    """Stop the embedded registry (SIGTERM, bounded wait, then SIGKILL)."""
    settings = get_settings()
    if _external(settings):
        err.print("external registry: nothing to stop")
        return
    err.print("registry: stopped" if launcher.down(registry_config(settings)) else "registry: was not running")


@app.command("status")
def status() -> None:
    """Report whether the registry runs and answers; exit 1 if it does not answer."""
    settings = get_settings()
    if external := _external(settings):
        answering = launcher.registry_answers(external)
        print(json.dumps({"url": external, "external": True, "answering": answering}))
    else:
        st = launcher.status(registry_config(settings))
        answering = st.answering
        print(
            json.dumps(
                {"url": st.url, "running": st.running, "answering": answering, "pid": st.pid, "log": str(st.log_file)}
            )
        )
    if not answering:
        raise typer.Exit(1)
