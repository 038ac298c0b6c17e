"""Payment methods on a real run: a bank transfer submitted, settled and returned after
settlement (the merchant's balance debited back), another returned before it settled
(the submission unwound), and a wallet payment captured and refunded; the books audit
clean and nothing of the transfers is left in flight."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import ledger as cli_ledger
from streams.cli import main as cli
from streams.client.books import book_records, live_balances, public_keys
from streams.client.processes import wait_until
from streams.domain.audit import audit
from streams.domain.ledger import merchant_account
from streams.topics import topic_names
from tests.integration.support import T0, Pipeline, create, follow_up, make_settings, run, start_worker

pytestmark = pytest.mark.integration


def bank_notice(kind: str, merchant: str, payment_id: str, days: int, code: str | None = None) -> dict:
    return follow_up(kind, merchant, payment_id, f"{payment_id}-{kind}", at=T0 + timedelta(days=days)) | {
        "bank_notice": {"return_code": code} if code else None
    }


def test_bank_transfers_return_before_and_after_settlement_and_a_wallet_pays(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, "methods")
    monkeypatch.setattr(cli_ledger, "get_settings", lambda: settings)
    names = topic_names(settings)
    m = f"m_{uuid.uuid4().hex[:6]}"
    bank = {
        "card": None,
        "capture_method": "automatic",
        "method": "bank_transfer",
        "bank_account": {"scheme": "ach", "mandate_id": "MD-1", "account_last4": "6789"},
    }
    a, b = create(m, "a", amount=10_000, **bank), create(m, "b", amount=4_000, **bank)
    w = create(
        m,
        "w",
        amount=10_000,
        card=None,
        method="wallet",
        wallet={
            "provider": "apple_pay",
            "token": "wtok_0a1b2c3d4e5f6a7b",
            "cryptogram": "AgAAAAAABk4DWZ4C28yUQAAAAAA=",
        },
    )
    steps = [
        a,
        b,
        w,
        bank_notice("bank_settle", m, a["payment_id"], 2),
        bank_notice("bank_return", m, a["payment_id"], 4, "R01"),  # after settlement
        bank_notice("bank_return", m, b["payment_id"], 1, "R03"),  # before it
        follow_up("capture", m, w["payment_id"], "w-cap", 6_000),
        follow_up("refund", m, w["payment_id"], "w-ref", 1_000),
    ]
    worker = start_worker(settings)
    try:
        observer = run(Pipeline(settings, worker), steps)
        keys = public_keys(settings)

        def books_closed() -> bool:
            report = audit(book_records(settings), keys, events_topic=names.events, entries_topic=names.ledger)
            return report.ok and report.entries >= 8

        assert wait_until(books_closed, 60), worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    status = {c["command_id"]: observer.outcomes[c["command_id"]][0] for c in steps}
    assert all(o["status"] == "succeeded" for o in status.values()), [o["reason_code"] for o in status.values()]
    assert status[a["command_id"]]["payment_status"] == "submitted"
    assert status[steps[3]["command_id"]]["payment_status"] == "settled"
    assert status[steps[4]["command_id"]]["payment_status"] == "returned"
    assert status[steps[5]["command_id"]]["payment_status"] == "returned"
    assert status[w["command_id"]]["payment_status"] == "authorized" and status[w["command_id"]]["card_bin"] is None
    types = {pid: [e["type"] for e in evs] for pid, evs in observer.events.items()}
    assert types[a["payment_id"]] == ["bank_submitted", "bank_settled", "bank_reversed"]
    assert types[b["payment_id"]] == ["bank_submitted", "bank_returned"]
    assert types[w["payment_id"]] == ["authorized", "captured", "refunded"]
    assert {e["method"] for e in observer.events[w["payment_id"]]} == {"wallet"}

    assert json.loads(CliRunner().invoke(cli.app, ["audit", "--json"]).stdout)["ok"]
    live = live_balances(settings)
    fees = sum(e["fee_minor"] for evs in observer.events.values() for e in evs)
    assert fees > 0
    # Nothing in flight; both transfers gone back to the customers: the merchant is owed the
    # wallet's capture less its refund, less every fee (the transfers' submission fees too).
    assert (merchant_account(m, "incoming"), "USD") not in live
    assert live[(merchant_account(m, "pending"), "USD")] == -(6_000 - 1_000 - fees)
    assert live[(merchant_account(m, "holds"), "USD")] == -4_000  # the wallet's uncaptured rest
