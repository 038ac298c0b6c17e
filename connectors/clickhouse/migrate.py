"""Versioned schema migrations: `migrations/NNNN_name.sql`, applied in order, once.

Applied versions are recorded in `schema_migrations` with the file's SHA-256. A
migration is recorded only after all its statements ran; its statements are
idempotent (IF NOT EXISTS), so a run interrupted half-way is simply run again.
An applied file that changed since is refused: write a new migration instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
MAX_MIGRATIONS = 9999

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    sha256     String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The statements, split at `;` ending a line; full-line `--` comments dropped."""
        body = "\n".join(x for x in self.sql.splitlines() if not x.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def available() -> list[Migration]:
    """Every migration shipped, by version; MigrationError on a misnamed file or a repeated version."""
    out: dict[int, Migration] = {}
    for f in resources.files("connectors.clickhouse").joinpath("migrations").iterdir():
        if not f.name.endswith(".sql"):
            continue
        m = _FILE_RE.match(f.name)
        if m is None:
            raise MigrationError(f"{f.name}: migrations are named NNNN_snake_case.sql")
        version = int(m.group(1))
        if version in out or version == 0:
            raise MigrationError(f"{f.name}: version {version} is 0 or taken")
        out[version] = Migration(version, m.group(2), f.read_text())
    assert len(out) <= MAX_MIGRATIONS
    return [out[v] for v in sorted(out)]


def applied(client: Client) -> dict[int, str]:
    """version -> sha256 of what this database has applied."""
    client.command(_LEDGER_DDL)
    rows = client.query("SELECT version, sha256 FROM schema_migrations FINAL").result_rows
    return {int(v): s for v, s in rows}


def migrate(client: Client, migrations: list[Migration] | None = None) -> list[int]:
    """Apply what is missing, in order; returns the versions applied now (empty: up to date)."""
    todo = available() if migrations is None else migrations
    done = applied(client)
    for m in todo:
        if m.version in done and done[m.version] != m.sha256:
            raise MigrationError(f"migration {m.version:04d}_{m.name} changed after it was applied; add a new one")
    unknown = sorted(set(done) - {m.version for m in todo})
    if unknown:
        raise MigrationError(f"the database has migrations this code does not know: {unknown} (newer code ran here)")
    now = []
    for m in todo:
        if m.version in done:
            continue
        for statement in m.statements():
            client.command(statement)
        client.insert("schema_migrations", [[m.version, m.name, m.sha256]], column_names=["version", "name", "sha256"])
        now.append(m.version)
    return now
