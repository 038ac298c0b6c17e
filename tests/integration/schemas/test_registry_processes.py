"""Every process switches its codecs at start when PAYSTREAM_SCHEMA_REGISTRY_URL is
set (streams/cli/main.py, `configure`): a CLI publisher and a worker, run as child
processes the way a user runs them, write the Confluent wire format under the
registry's ids, and a payment goes through the pipeline that way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient

from connectors.kafka.clients import read_to_end
from connectors.vault.keys import FileKeyStore
from schemas.codec import CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC, load_schema, subject_name, use_registry
from streams.client.observe import Observer
from streams.client.schema_registry import configure_codecs
from streams.settings import client_config
from streams.topics import topic_names
from tests.integration.support import T0, WAIT_S, make_settings, start_worker

CLI_TIMEOUT_S = 120


def _registry_id(url: str, schema_name: str) -> int:
    client = SchemaRegistryClient({"url": url, "timeout": 10})
    return int(client.get_latest_version(subject_name(load_schema(schema_name))).schema_id)


def _header(registry_id: int) -> bytes:
    return CONFLUENT_MAGIC + registry_id.to_bytes(CONFLUENT_HEADER_LEN - 1, "big")


def test_a_cli_publisher_and_a_worker_write_the_wire_format(
    bootstrap: str, schema_registry_url: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, "registry").model_copy(update={"schema_registry_url": schema_registry_url})
    FileKeyStore(settings.keys_dir).init()  # before two processes would race to make them
    worker = start_worker(settings)
    try:
        command = {
            "command_id": "cmd-registry-1", "kind": "create", "merchant_id": "m_registry", "idempotency_key": "order-1",
            "amount_minor": 1999, "currency": "USD", "capture_method": "manual",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
            "occurred_at": T0.isoformat().replace("+00:00", "Z"),
        }  # fmt: skip
        path = tmp_path / "cmds.jsonl"
        path.write_text(json.dumps(command) + "\n")
        # This process reads what the others wrote: it switches too, as every process does.
        configure_codecs(settings)
        with Observer(settings) as observer:
            produce = subprocess.run([sys.executable, "-m", "streams.cli.main", "produce", str(path)], env=worker.env(),
                                     capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)  # fmt: skip
            assert produce.returncode == 0, produce.stderr
            assert observer.wait_for({"cmd-registry-1"}, 0, WAIT_S, lambda _d, _q: worker.supervise()), (
                worker.log_tail()
            )
            (outcome,) = observer.outcomes["cmd-registry-1"]
        assert outcome["status"] == "succeeded"

        names = topic_names(settings)
        values = {
            t: [m.value() for m in read_to_end(client_config(settings), [t], settings.partitions)]
            for t in (names.commands, names.outcomes)
        }
        (published,) = values[names.commands]
        (answered,) = values[names.outcomes]
        assert published[:CONFLUENT_HEADER_LEN] == _header(_registry_id(schema_registry_url, "PaymentCommand"))
        assert answered[:CONFLUENT_HEADER_LEN] == _header(_registry_id(schema_registry_url, "PaymentOutcome"))
    finally:
        use_registry(None)
        code = worker.stop()
        assert code == 0, f"worker exited with {code}:\n{worker.log_tail()}"
