"""Webhook endpoints per merchant, as a plain value, kept in a JSON file (or, one
record per merchant, on a compacted topic: `record(registry, merchant)`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from schemas.ids import derive_endpoint_id

MAX_ENDPOINTS_PER_MERCHANT = 16
MAX_MERCHANTS = 100_000
MAX_URL_CHARS = 2_048
MAX_FILE_BYTES = 64 * 1024 * 1024


class RegistryError(ValueError):
    """An endpoint or a registry file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    merchant_id: str
    url: str


@dataclass(frozen=True)
class Registry:
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def of(self, merchant_id: str) -> tuple[Endpoint, ...]:
        return self.endpoints.get(merchant_id, ())


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if len(url) > MAX_URL_CHARS or parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(f"not an http(s) URL with a host (at most {MAX_URL_CHARS} chars): {url[:100]!r}")
    if parts.username or parts.password:
        raise RegistryError("a webhook URL must not carry credentials")
    return url


def add(registry: Registry, merchant_id: str, url: str) -> tuple[Registry, Endpoint]:
    """Register `url` for the merchant; adding it again changes nothing."""
    if not merchant_id or len(merchant_id) > 64 or not merchant_id.isprintable():
        raise RegistryError("merchant_id must be 1-64 printable characters")
    endpoint = Endpoint(derive_endpoint_id(merchant_id, check_url(url)), merchant_id, url)
    current = registry.of(merchant_id)
    if endpoint in current:
        return registry, endpoint
    if len(current) >= MAX_ENDPOINTS_PER_MERCHANT:
        raise RegistryError(f"{merchant_id} has {MAX_ENDPOINTS_PER_MERCHANT} endpoints already; remove one first")
    if merchant_id not in registry.endpoints and len(registry.endpoints) >= MAX_MERCHANTS:
        raise RegistryError(f"at most {MAX_MERCHANTS} merchants")
    return Registry(MappingProxyType({**registry.endpoints, merchant_id: current + (endpoint,)})), endpoint


def remove(registry: Registry, merchant_id: str, endpoint_id: str) -> Registry:
    kept = tuple(e for e in registry.of(merchant_id) if e.endpoint_id != endpoint_id)
    if len(kept) == len(registry.of(merchant_id)):
        raise RegistryError(f"{merchant_id} has no endpoint {endpoint_id}")
    rest = {m: e for m, e in registry.endpoints.items() if m != merchant_id}
    return Registry(MappingProxyType(rest | ({merchant_id: kept} if kept else {})))


def record(registry: Registry, merchant_id: str) -> tuple[bytes, bytes | None]:
    """The compacted-topic record of one merchant: key, and its endpoints as JSON
    (None, a tombstone, once it has none)."""
    endpoints = registry.of(merchant_id)
    value = json.dumps([e.url for e in endpoints]).encode() if endpoints else None
    return merchant_id.encode(), value


def load(path: Path) -> Registry:
    """The registry in `path`; an empty one if the file does not exist."""
    if not path.exists():
        return Registry()
    if path.stat().st_size > MAX_FILE_BYTES:
        raise RegistryError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(path.read_text())
        registry = Registry()
        for merchant_id, urls in doc["endpoints"].items():
            for url in urls:
                registry, _ = add(registry, merchant_id, url)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise RegistryError(f"{path} is not a webhook registry: {type(e).__name__}: {str(e)[:200]}") from None
    return registry


def save(registry: Registry, path: Path) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"endpoints": {m: [e.url for e in es] for m, es in sorted(registry.endpoints.items())}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)
