"""Shared unit fixtures: a real chDB (in-process ClickHouse) for the read models.

chDB hosts one engine path per process, so every test shares one session
directory and gets its own database, dropped afterwards; clients are closed after
each test so nothing else in the process is pinned to this path.
"""

from __future__ import annotations

import itertools

import pytest

_db_numbers = itertools.count()


@pytest.fixture(scope="session")
def ch_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb').resolve()}"


@pytest.fixture
def ch_database() -> str:
    return f"t{next(_db_numbers)}"


@pytest.fixture
def ch(ch_url: str, ch_database: str):
    """A client on a fresh, migrated database."""
    from connectors.clickhouse.client import connect
    from connectors.clickhouse.migrate import migrate

    client = connect(ch_url, ch_database)
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {ch_database}")
    client.close()
