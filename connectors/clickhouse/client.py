"""One ClickHouse client from a URL: chDB in-process or a ClickHouse server, one code path.

`chdb:///abs/dir` opens chDB (the embedded engine) on that directory through
clickhouse-connect's chdb backend; `http://host:8123` / `https://host:8443`
(user, password and query settings in the URL, as clickhouse-connect reads them)
talk to a server. Both return the same `clickhouse_connect` client, so the
migrations, the sink and `paystream sql` never ask which one they have.

chDB limits (chdb 4.4 / clickhouse-connect 1.12, seen on this machine):
- **One engine per process, one path.** Any number of clients may share the
  engine's path; opening another path while a client is open raises (close them
  all first, then the engine can move).
- **One process per directory.** A second process opening a directory that a
  running process holds fails ("Error initializing EmbeddedServer"): while the
  sink runs, `paystream sql` must go through the same process, or point both at
  a ClickHouse server. We turn that failure into a `ClickHouseError` that says so.
- No async client, no external data; timezone is the process's (we store UTC
  `DateTime64(3, 'UTC')` columns, which keep their zone).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as _DriverError

from schemas.errors import ReasonedError

SCHEMES = ("chdb", "http", "https")
_DATABASE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ClickHouseError(ReasonedError, RuntimeError):
    """The read-model store cannot be reached or refused a request. `reason` is a stable code."""


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def check_url(url: str) -> str:
    """The scheme of a usable URL; ClickHouseError("invalid_url") otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ClickHouseError("invalid_url", f"{redact(url)!r}: scheme must be one of {', '.join(SCHEMES)}")
    if parts.scheme == "chdb":
        # chdb://host/... would read "host" as a location relative to the cwd: demand an absolute dir.
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ClickHouseError("invalid_url", f"{url!r}: use chdb:///absolute/directory")
    elif not parts.hostname:
        raise ClickHouseError("invalid_url", f"{redact(url)!r}: no host")
    return parts.scheme


def connect(url: str, database: str = "paystream", *, create: bool = True) -> Client:
    """A client on `database` (created first when missing and `create`)."""
    if not _DATABASE_RE.match(database):
        raise ClickHouseError("invalid_database", f"{database!r}: lower-case letters, digits and _ only")
    scheme = check_url(url)
    try:
        client = clickhouse_connect.get_client(dsn=url)
    except _DriverError as e:
        hint = (
            " (is another process holding this chDB directory? one process per directory)" if scheme == "chdb" else ""
        )
        raise ClickHouseError("unavailable", f"{redact(url)}: {_first_line(e)}{hint}") from None
    try:
        exists = client.query(
            "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": database}
        ).result_rows[0][0]
        if not exists:
            if not create:
                raise ClickHouseError(
                    "no_database", f"database {database} does not exist (run paystream clickhouse migrate)"
                )
            client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.database = database
    except BaseException as e:
        client.close()
        if isinstance(e, _DriverError):
            raise ClickHouseError("unavailable", f"{redact(url)}: {_first_line(e)}") from None
        raise
    return client


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
