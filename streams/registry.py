"""The Schema Registry switch: `PAYSTREAM_SCHEMA_REGISTRY_URL` set means every codec
of the process writes the Confluent wire format (schemas/codec.py)."""

from __future__ import annotations

from typing import Any

from schemas.codec import RegistryClient, RegistryError, RegistryWire, use_registry
from streams.settings import Settings


def registry_client(settings: Settings) -> Any:
    """confluent-kafka's client for the configured registry (needs the
    `confluent-kafka[schemaregistry]` extra)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf: dict[str, str] = {"url": str(settings.schema_registry_url)}
    if settings.schema_registry_auth_file is not None:
        try:
            user_info = settings.schema_registry_auth_file.read_text().strip()
        except OSError as exc:
            raise RegistryError(f"cannot read PAYSTREAM_SCHEMA_REGISTRY_AUTH_FILE: {exc.strerror}") from None
        if ":" not in user_info:
            raise RegistryError("PAYSTREAM_SCHEMA_REGISTRY_AUTH_FILE must hold user:password on one line")
        conf["basic.auth.user.info"] = user_info
    return SchemaRegistryClient(conf)


def configure_codecs(settings: Settings, client: RegistryClient | None = None) -> RegistryWire | None:
    """Call once at process start, before the first encode: registers our schemas
    (raising RegistryError if one is incompatible) or keeps single-object encoding."""
    if settings.schema_registry_url is None:
        return use_registry(None)
    return use_registry(client if client is not None else registry_client(settings))
