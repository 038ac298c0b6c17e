"""The upgrade from per-table changelogs to the one the tables share, on a real broker:
a worker refuses to start on empty tables while an old changelog holds the state;
`paystream topics migrate-changelogs` is refused while a worker runs, copies the live
keys (tombstones dropped) when none does, twice harmlessly; and the books read the
balances back, as a worker restores them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from connectors.kafka.clients import command_producer
from streams.client.books import live_balances
from streams.client.processes import WorkerProcess, wait_until
from streams.domain.ledger import balance_key, encode_balance
from streams.settings import Settings
from streams.topics import per_table_changelog_topic
from streams.worker.changelogs import MIGRATE_COMMAND, unmigrated
from tests.integration.support import make_settings, start_worker

CLI_TIMEOUT_S = 180
READY_S = 120


def old_style(settings: Settings) -> None:
    """The state of an earlier version: balances, a dedup mark and a deleted key, each in
    its table's own changelog with plain keys."""
    old = {t: per_table_changelog_topic(settings.app_id, t) for t in ("ledger-balances", "payments-dedup")}
    client = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    futures = client.create_topics(
        [NewTopic(t, settings.partitions, 1, config={"cleanup.policy": "compact"}) for t in old.values()]
    )
    for future in futures.values():
        future.result(timeout=30)
    seller, platform = balance_key("merchant:m_s:pending", "USD"), balance_key("merchant:m_p:pending", "EUR")
    records = [
        (old["ledger-balances"], 1, seller, encode_balance(-900)),
        (old["ledger-balances"], 1, seller, encode_balance(-1_000)),  # the latest wins
        (old["ledger-balances"], 3, seller, encode_balance(400)),  # the same account in another shard
        (old["ledger-balances"], 2, platform, encode_balance(-50)),
        (old["ledger-balances"], 2, platform, None),  # a tombstone: not carried over
        (old["payments-dedup"], 0, b"cmd_1", b"digest-1"),
    ]
    producer = command_producer(settings.kafka_bootstrap)
    for topic, partition, key, value in records:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def migrate_cli(settings: Settings, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli.main", *MIGRATE_COMMAND.split()[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def ready(worker: WorkerProcess) -> bool:
    return "Worker ready" in worker.log_file.read_text(errors="replace")


def test_old_changelogs_are_migrated_and_an_unmigrated_worker_refuses_to_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "migrate")
    old_style(settings)

    # 1. A worker on the new version with the state still in the old topics exits, naming the command.
    refused = start_worker(settings, "refused.log")
    assert wait_until(lambda: not refused.alive(), READY_S), refused.log_tail()
    assert refused.proc is not None and refused.proc.returncode == 1
    assert MIGRATE_COMMAND in refused.log_file.read_text(errors="replace")
    assert unmigrated(settings) == {
        per_table_changelog_topic(settings.app_id, "ledger-balances"): 5,
        per_table_changelog_topic(settings.app_id, "payments-dedup"): 1,
    }

    # 2. Migrated: the live keys of each table, the tombstoned one dropped.
    env = refused.env()
    first = migrate_cli(settings, env)
    assert first.returncode == 0, first.stderr
    assert re.search(r"ledger-balances: 2 keys", first.stderr) and re.search(r"payments-dedup: 1 keys", first.stderr)
    assert unmigrated(settings) == {}
    expected = {("merchant:m_s:pending", "USD"): -600}  # -1,000 in shard 1, +400 in shard 3
    assert live_balances(settings) == expected

    # 3. A worker now restores the migrated tables (every record routed: 3 keys) and starts.
    worker = start_worker(settings, "worker.log")
    try:
        assert wait_until(lambda: ready(worker) or not worker.alive(), READY_S), worker.log_tail()
        assert worker.alive(), worker.log_tail()
        restored = re.findall(r"restored (\d+) changelog records", worker.log_file.read_text(errors="replace"))
        assert sum(map(int, restored)) == 3, worker.log_tail()
        assert "skipping" not in worker.log_file.read_text(errors="replace")
        # 4. Refused while the worker group has a member.
        busy = migrate_cli(settings, env)
        assert busy.returncode == 1 and "stop every worker" in busy.stderr, busy.stderr
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # 5. Run again with the workers stopped: the same values again, harmless.
    again = migrate_cli(settings, env)
    assert again.returncode == 0, again.stderr
    assert live_balances(settings) == expected
