"""Transaction monitoring on the real broker: a real worker sees a structuring pattern
(three captures just under the reporting threshold on one card) and five cards from one
device, both published as payment commands; the cases reach monitoring-cases; an
operator decides one from the CLI and `cases list` shows it decided, with the trail; the
console's case page shows the other with its evidence and decides it onto the same trail."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from streams.api import auth
from streams.api.app import create_app
from streams.api.bus import InMemoryBus
from streams.api.dashboard import Dashboard
from streams.cli import cases as cli_cases
from streams.cli.main import app as cli
from streams.client.cases import CaseQueue
from streams.client.observe import Observer
from streams.client.processes import wait_until
from streams.client.publish import publish_commands
from tests.integration.support import T0, WAIT_S, create, make_settings, start_worker

pytestmark = pytest.mark.integration
OPS_TOKEN = "ops-" + "i" * 40


def luhn_card(prefix: str) -> str:
    """`prefix` (15 digits) with its Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return prefix + str((10 - total % 10) % 10)


def card(number: str) -> dict:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def test_structuring_and_many_cards_per_device_open_cases_and_a_decision_closes_one(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, "monitoring")
    m = f"m_{uuid.uuid4().hex[:6]}"
    structuring = [
        create(
            m,
            f"s{i}",
            9_500_00 + i,
            capture_method="automatic",
            occurred_at=T0 + timedelta(hours=i),
            card=card("4242424242424242"),
        )
        for i in range(3)
    ]
    device = [
        create(
            m,
            f"d{i}",
            12_00,
            occurred_at=T0 + timedelta(minutes=i),
            metadata={"device": "dev-it-1"},
            card=card(luhn_card(f"41111111111100{i}")),
        )
        for i in range(5)
    ]
    worker = start_worker(settings)
    try:
        with Observer(settings) as seen:
            publish_commands(settings, structuring + device)
            ids = {c["command_id"] for c in structuring + device}
            assert seen.wait_for(ids, 0, WAIT_S, lambda *_: worker.supervise()), worker.log_tail()
        queue = CaseQueue(settings)
        found: dict[str, dict] = {}

        def opened() -> bool:
            found.update({c["rule"]: c for c in queue.cases() if c["merchant_id"] == m})
            return {"structuring", "many_cards_per_device"} <= set(found)

        assert wait_until(opened, 60), (found.keys(), worker.log_tail())
        s = found["structuring"]
        assert s["subject_kind"] == "card" and s["currency"] == "USD" and s["status"] == "open"
        assert sorted(e["payment_id"] for e in s["evidence"]) == sorted(c["payment_id"] for c in structuring)
        assert s["opened_at"] == T0 + timedelta(hours=2) and s["measures"]["payments"] == 3
        d = found["many_cards_per_device"]
        assert (d["subject_kind"], d["subject_id"], d["measures"]["cards"]) == ("device", "dev-it-1", 5)
        assert set(found) == {"structuring", "many_cards_per_device"}  # nothing else crossed a threshold

        monkeypatch.setattr(cli_cases, "get_settings", lambda: settings)
        runner = CliRunner()
        r = runner.invoke(
            cli,
            [
                "cases",
                "decide",
                s["case_id"],
                "--decision",
                "report",
                "--operator",
                "it-ops",
                "--reason",
                "three captures under 10k in a day",
            ],
        )
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["decision"] == "report"
        again = runner.invoke(
            cli,
            [
                "cases",
                "decide",
                s["case_id"],
                "--decision",
                "dismiss",
                "--operator",
                "it-ops",
                "--reason",
                "changed my mind",
            ],
        )
        assert again.exit_code == 2 and "case_closed" in again.output

        listed = runner.invoke(cli, ["cases", "list"])
        assert listed.exit_code == 0, listed.output
        mine = {c["case_id"]: c for c in map(json.loads, listed.stdout.splitlines()) if c["merchant_id"] == m}
        assert mine[s["case_id"]]["status"] == "reported"
        (trail,) = mine[s["case_id"]]["decisions"]
        assert (trail["operator"], trail["decision"], trail["reason"]) == (
            "it-ops",
            "report",
            "three captures under 10k in a day",
        )
        assert mine[d["case_id"]]["status"] == "open"
        still_open = runner.invoke(cli, ["cases", "list", "--status", "open"])
        assert [json.loads(x)["case_id"] for x in still_open.stdout.splitlines()] == [d["case_id"]]

        # The console's case page over the same queue: the open case with its evidence, and
        # its decision recorded on the topic, as the CLI lists it.
        keys = auth.ApiKeys(tmp_path / "api-keys.json")
        dashboard = Dashboard(lambda *_: [], keys, OPS_TOKEN.encode(), cases=queue)
        page = TestClient(create_app(InMemoryBus(lambda _: None), keys, sealer=None, dashboard=dashboard))
        ops = {"Authorization": f"Bearer {OPS_TOKEN}"}
        html = page.get(f"/dashboard/monitoring?merchant={m}", headers=ops).text
        assert f'data-case="{d["case_id"]}"' in html and f'data-case="{s["case_id"]}"' not in html  # reported: closed
        assert html.count("data-evidence=") == len(d["evidence"]) == 5
        r = page.post(
            f"/dashboard/monitoring/{d['case_id']}",
            data={"decision": "dismiss", "operator": "console-ops", "reason": "a family's cards on one tablet"},
            headers=ops,
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        listed = runner.invoke(cli, ["cases", "list", "--status", "dismissed"])
        (dismissed,) = [c for c in map(json.loads, listed.stdout.splitlines()) if c["merchant_id"] == m]
        assert dismissed["case_id"] == d["case_id"] and dismissed["decisions"][0]["operator"] == "console-ops"
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
