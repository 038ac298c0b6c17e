"""`paystream worker`: one pipeline worker process."""

from __future__ import annotations

import typer

from connectors.kafka import admin
from streams.settings import client_config, get_settings


def worker(loglevel: str = typer.Option("info", help="debug|info|warning|error")) -> None:
    """Run a pipeline worker (exactly-once, RocksDB tables) until stopped."""
    from streams import metrics
    from streams.logs import setup_logging
    from streams.topics import declared_topics
    from streams.worker.changelogs import require_migrated
    from streams.worker.topology import build_worker, reset_local_state

    setup_logging(loglevel)
    settings = get_settings()
    admin.wait_for_broker(client_config(settings), timeout_s=60)
    admin.ensure_topics(client_config(settings), declared_topics(settings))
    require_migrated(settings)  # never on empty tables while the per-table changelogs hold the state
    reset_local_state(settings)
    metrics.serve(settings.metrics_port)
    build_worker(settings).run()
