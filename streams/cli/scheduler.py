"""`paystream scheduler run`: the event-time clock and the daily jobs."""

from __future__ import annotations

import typer

from connectors.kafka import admin
from streams.settings import client_config, get_settings

app = typer.Typer(no_args_is_help=True, help="The event-time clock and the daily jobs (streams/jobs/scheduler.py).")


@app.command("run")
def scheduler_run(loglevel: str = typer.Option("info", help="debug|info|warning|error")) -> None:
    """Tick every partition of the clock topic and run the daily jobs (settle, payouts,
    providers report, reconcile) on schedule, until SIGTERM/SIGINT."""
    import signal
    import threading

    from streams import metrics
    from streams.jobs.scheduler import Scheduler
    from streams.logs import setup_logging
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
