"""The Schema Registry switch: `PAYSTREAM_SCHEMA_REGISTRY_URL` set means every codec
of the process writes the Confluent wire format (schemas/codec.py)."""

from __future__ import annotations

import time
from typing import Any

from connectors.schema_registry.launcher import RegistryConfig
from schemas.codec import RegistryClient, RegistryError, RegistryWire, use_registry
from streams.settings import Settings

# One HTTP request to the registry; the client's own default waits without bound.
REQUEST_TIMEOUT_S = 10
# The client retries a refused connection or a 5xx this often, backing off up to
# RETRY_MAX_WAIT_MS (its defaults: 3 and 20 s); the start-up wait probes with none.
RETRIES = 2
RETRY_MAX_WAIT_MS = 2_000
POLL_INTERVAL_S = 0.5


def registry_config(settings: Settings) -> RegistryConfig:
    """The embedded registry of these settings (`paystream registry up`)."""
    return RegistryConfig(
        home=settings.schema_registry_dir,
        port=settings.schema_registry_embedded_port,
        start_timeout_s=settings.schema_registry_start_timeout_s,
    )


def registry_client(settings: Settings, retries: int = RETRIES) -> Any:
    """confluent-kafka's client for the configured registry (needs the
    `confluent-kafka[schemaregistry]` extra)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf: dict[str, Any] = {
        "url": str(settings.schema_registry_url),
        "timeout": REQUEST_TIMEOUT_S,
        "max.retries": retries,
        "retries.max.wait.ms": RETRY_MAX_WAIT_MS,
    }
    if settings.schema_registry_auth_file is not None:
        try:
            user_info = settings.schema_registry_auth_file.read_text().strip()
        except OSError as exc:
            raise RegistryError(f"cannot read PAYSTREAM_SCHEMA_REGISTRY_AUTH_FILE: {exc.strerror}") from None
        if ":" not in user_info:
            raise RegistryError("PAYSTREAM_SCHEMA_REGISTRY_AUTH_FILE must hold user:password on one line")
        conf["basic.auth.user.info"] = user_info
    return SchemaRegistryClient(conf)


def wait_for_registry(settings: Settings) -> None:
    """Return once the registry answers a subjects listing. A refusal (401, 403) is
    final at once; a registry not up yet (connection refused, 5xx) is retried until
    the deadline, so a process may start before its registry does."""
    probe, url, timeout_s = (
        registry_client(settings, retries=0),
        settings.schema_registry_url,
        settings.schema_registry_wait_s,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            probe.get_subjects()
            return
        except Exception as exc:
            status = getattr(exc, "http_status_code", None)
            if isinstance(status, int) and 400 <= status < 500:
                raise RegistryError(f"the Schema Registry at {url} refused us: {exc}") from exc
            if time.monotonic() >= deadline:
                raise RegistryError(f"no Schema Registry answered at {url} within {timeout_s:g}s: {exc}") from exc
        time.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))


def configure_codecs(settings: Settings, client: RegistryClient | None = None) -> RegistryWire | None:
    """Call once at process start, before the first encode: registers our schemas
    (raising RegistryError if one is incompatible or the registry does not answer
    within PAYSTREAM_SCHEMA_REGISTRY_WAIT_S) or keeps single-object encoding.
    The CLI calls it for every command that may encode or decode (streams/cli/main.py)."""
    if settings.schema_registry_url is None:
        return use_registry(None)
    if client is None:
        wait_for_registry(settings)
        client = registry_client(settings)
    return use_registry(client)
