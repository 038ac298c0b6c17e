"""Which broker a process talks to: the embedded one (started if it is the one
configured) or an external one (checked to answer)."""

from __future__ import annotations

from connectors.kafka import admin, launcher
from streams.settings import Settings, client_config


def broker_config(settings: Settings) -> launcher.BrokerConfig:
    port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
    return launcher.BrokerConfig(
        home=settings.kafka_dir,
        port=port,
        controller_port=settings.kafka_controller_port,
        start_timeout_s=settings.kafka_start_timeout_s,
    )


def ensure_broker(settings: Settings) -> None:
    """Start the embedded broker (or cluster: PAYSTREAM_KAFKA_BROKERS > 1) if it is the
    one configured; else check the external one answers."""
    if settings.kafka_embedded and settings.kafka_brokers > 1:
        launcher.up_cluster(cluster_config(settings, settings.kafka_brokers))
    elif settings.kafka_embedded:
        launcher.up(broker_config(settings))
    else:
        admin.wait_for_broker(client_config(settings), timeout_s=30)


def cluster_config(settings: Settings, brokers: int) -> launcher.ClusterConfig:
    port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
    return launcher.ClusterConfig(settings.kafka_dir, brokers, port, settings.kafka_start_timeout_s)
