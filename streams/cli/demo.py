"""`paystream demo`: realistic traffic through a real broker and worker, summarised."""

from __future__ import annotations

import typer

from streams.client.broker import ensure_broker
from streams.settings import get_settings


def demo(
    payments: int = typer.Option(10_000, min=1, max=1_000_000, help="How many payments to create"),
    timeout: float = typer.Option(900.0, min=1, help="Give up waiting for outcomes after this many seconds"),
    seed: int = typer.Option(7, help="Seed of the generated data"),
    chaos_providers: bool = typer.Option(
        False,
        "--chaos-providers",
        help="Take the primary acquirer down, then degrade it; summarise failover and check for double charges",
    ),
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
