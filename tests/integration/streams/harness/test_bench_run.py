"""`paystream bench --quick` end to end: every part reports, every command answered,
the books closed, every HTTP request answered, the plot drawn. Speed is reported, never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams.harness.bench import QUICK_RATES_PER_S, plot, run_bench
from tests.integration.support import make_settings

pytestmark = pytest.mark.integration


def test_quick_bench_reports_every_part(bootstrap: str, tmp_path: Path) -> None:
    # The peers in our own venv; Faust's and quixstreams' install venvs of their own (measured by `paystream bench`).
    result = run_bench(make_settings(tmp_path, "bench"), quick=True, peer_names=("ceiling", "ours"))
    json.loads(json.dumps(result))  # JSON as it is written
    assert result["ceiling"]["consumed"] == result["ceiling"]["messages"]
    assert result["ceiling_commands_per_s"] > 0 and result["e2e_commands_per_s"] > 0
    assert result["end_to_end"]["answered"] and result["end_to_end"]["books_closed"]
    assert set(result["latency_ms"]) == {str(r) for r in QUICK_RATES_PER_S}
    for peer in ("ceiling", "ours"):
        assert result["peers"][peer]["seen"] == result["peers"][peer]["records"] > 0
        assert result["peers"][peer]["records_per_s"] > 0
    for offered, figures in result["latency"].items():
        assert figures["answered"] == figures["commands"] > 0, offered
        assert figures["outcome_timestamp"] in ("CreateTime", "LogAppendTime")
        assert figures["started_drained"], offered  # the throughput run's backlog was gone first
        q = result["latency_ms"][offered]
        assert 0 < q["p50"] <= q["p95"] <= q["p99"] <= q["max"]
    assert result["sink"]["records"] > 0 and result["sink_rows_per_s"] > 0
    for stage in ("ingest", "payments", "ledger"):  # risk: these settings turn fraud scoring off; keys: in ingest
        assert result["stages"][stage]["records"] > 0 and result["stages"][stage]["cpu_us_per_record"] > 0, stage
    two = result["scaling"]["two_workers"]
    assert two["workers"] == 2 and two["answered"] and two["books_closed"]
    assert result["scaling"]["two_vs_one"] > 0
    assert result["replay"]["events"] > 0 and result["replay"]["entries"] > 0
    recovery = result["recovery"]  # the worker killed after the run restored every partition's tables
    assert recovery["partitions"] > 0 and recovery["changelog_records"] > 0 and recovery["restore_s"] >= 0
    assert result["end_to_end"]["worker_peak_rss_mb"] > 0
    assert result["scoring"]["online_scorer_tx_per_s"] > 0
    assert 0 < result["end_to_end_vs_ceiling"]
    http = result["http"]
    assert http["runs"] and all(run["sent"] > 0 for run in http["runs"])
    replayed = http["replay"]["statuses"]  # the stored answer (an approval or a decline), every time
    assert len(replayed) == 1 and set(replayed) <= {"200", "402"}, http["replay"]
    for run in http["runs"]:  # every request answered by the pipeline (402 a decline, 202 past the outcome
        # timeout); none refused by the gateway (429, 5xx) or lost (0)
        assert set(run["statuses"]) <= {"200", "202", "402"} and "200" in run["statuses"], run
        assert run["p99_ms"] is not None and run["achieved_per_s"] > 0
    assert result["machine"]["versions"]["confluent_kafka"]
    # The run's topics are deleted at the end (each partition holds broker file descriptors).
    left = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics
    runs = (result["end_to_end"]["namespace"], two["namespace"])
    assert not [t for t in left if any(r in t for r in runs)]  # changelogs too ("paystream-<namespace>-...")
    png = tmp_path / "bench.png"
    plot(result, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
