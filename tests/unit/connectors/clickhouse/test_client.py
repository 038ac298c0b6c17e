"""Connecting by URL: chDB and server URLs, clear errors, the default from the data dir."""

from __future__ import annotations

import pytest

from connectors.clickhouse.client import ClickHouseError, check_url, connect, redact
from streams.settings import Settings


@pytest.mark.parametrize(
    "url, scheme",
    [
        ("chdb:///var/lib/ps/clickhouse", "chdb"),
        ("http://localhost:8123", "http"),
        ("https://u:p@ch.example:8443/?secure=true", "https"),
    ],
)
def test_accepted_urls(url: str, scheme: str) -> None:
    assert check_url(url) == scheme


@pytest.mark.parametrize("url", ["", "mysql://x", "chdb://relative/dir", "chdb:///", "chdb:relative", "http:///nohost"])
def test_refused_urls_say_why(url: str) -> None:
    with pytest.raises(ClickHouseError) as e:
        check_url(url)
    assert e.value.reason == "invalid_url"


def test_redact_hides_the_password_only() -> None:
    assert redact("https://ana:s3cret@ch:8443/db") == "https://ana:***@ch:8443/db"
    assert redact("chdb:///x") == "chdb:///x"


def test_connect_creates_and_uses_the_database(ch_url: str, ch_database: str) -> None:
    c = connect(ch_url, ch_database)
    try:
        assert c.query("SELECT currentDatabase()").result_rows == [(ch_database,)]
        c.command("CREATE TABLE t (a Int64) ENGINE = MergeTree ORDER BY a")
        c.insert("t", [[1]])
        other = connect(ch_url, ch_database, create=False)  # a second client shares the engine
        assert other.query("SELECT sum(a) FROM t").result_rows == [(1,)]
        other.close()
    finally:
        c.command(f"DROP DATABASE {ch_database}")
        c.close()


def test_missing_database_without_create(ch_url: str) -> None:
    with pytest.raises(ClickHouseError) as e:
        connect(ch_url, "never_made", create=False)
    assert e.value.reason == "no_database"


def test_bad_database_name(ch_url: str) -> None:
    with pytest.raises(ClickHouseError) as e:
        connect(ch_url, "x; DROP TABLE y")
    assert e.value.reason == "invalid_database"


def test_unreachable_server_is_a_clear_error() -> None:
    # Port 9 (discard) on localhost: nothing listens, the connection is refused at once.
    with pytest.raises(ClickHouseError) as e:
        connect("http://127.0.0.1:9")
    assert e.value.reason == "unavailable"


def test_default_url_is_chdb_under_the_data_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PAYSTREAM_CLICKHOUSE_URL", raising=False)
    s = Settings(data_dir=tmp_path)
    assert s.clickhouse_url == f"chdb://{tmp_path.resolve()}/clickhouse"
    assert check_url(s.clickhouse_url) == "chdb"
    monkeypatch.setenv("PAYSTREAM_CLICKHOUSE_URL", "http://ch:8123")
    assert Settings().clickhouse_url == "http://ch:8123"
