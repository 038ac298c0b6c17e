"""`paystream subscriptions ...` and `paystream clock tick`: what they publish (the
broker calls replaced), the card sealed onto card-vault and never published in clear, bad
input refused with exit 2 before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.codec import Codec
from schemas.ids import derive_subscription_id
from schemas.times import to_ms
from streams.cli import clock as cli_clock
from streams.cli import common as cli_common
from streams.cli import subscriptions as cli_subscriptions
from streams.cli.main import app
from streams.client import publish as publish_module
from streams.domain.subscriptions import Subscription
from streams.settings import get_settings

CODEC = Codec("SubscriptionCommand")
TOKEN = {"token": "tok_" + "C" * 32, "bin": "555555", "last4": "4444", "brand": "mastercard", "exp_month": 1, "exp_year": 2031}


@pytest.fixture
def sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    monkeypatch.setenv("PAYSTREAM_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("PAYSTREAM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    out: list = []
    monkeypatch.setattr(cli_subscriptions, "publish", lambda _s, cmds: out.extend(CODEC.encode(c, check=True) for c in cmds))
    monkeypatch.setattr(cli_clock, "publish_tick", lambda _s, at: out.append(("tick", at)))
    monkeypatch.setattr(publish_module, "publish_sealed_cards", lambda _s, sealed: out.extend(("sealed", t, b) for t, b in sealed.items()))
    yield out
    get_settings.cache_clear()


def run(*args: str):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_create_tokenizes_the_card_and_publishes_only_the_token(sent: list) -> None:
    code, out, err = run("subscriptions", "create", "m_acme", "--key", "plan-1", "--amount-minor", "1999", "--currency", "EUR",
                         "--trial-days", "14", "--exp", "12/2030", "--card-number", "4242424242424242",
                         "--at", "2026-12-01T00:00:00Z")
    assert code == 0, err
    assert out.strip() == derive_subscription_id("m_acme", "plan-1")
    (_, token, sealed), raw = sent  # the sealed card onto card-vault first, then the command
    assert b"4242424242424242" not in raw + sealed
    cmd = CODEC.decode(raw)
    assert cmd["card_token"]["token"] == token and cmd["card_token"]["last4"] == "4242"
    assert (cmd["plan"]["amount_minor"], cmd["trial_days"], cmd["anchor_at"]) == (1999, 14, None)


def test_create_with_a_token_and_bad_input(sent: list) -> None:
    base = ("subscriptions", "create", "m_acme", "--key", "k", "--currency", "USD", "--card-token", json.dumps(TOKEN))
    assert run(*base, "--amount-minor", "500", "--interval", "week", "--every", "2")[0] == 0
    assert CODEC.decode(sent[0])["plan"]["interval"] == "week"
    code, _, err = run(*base, "--amount-minor", "0")
    assert code == 2 and "invalid_amount" in err
    code, _, err = run(*base, "--amount-minor", "5", "--interval", "fortnight")
    assert code == 2 and "invalid_interval" in err
    code, _, err = run("subscriptions", "create", "m_acme", "--key", "k", "--currency", "USD", "--amount-minor", "5",
                       "--card-token", "{}")
    assert code == 2 and "card-token" in err
    assert len(sent) == 1


def test_cancel_change_plan_list_and_tick(sent: list, monkeypatch: pytest.MonkeyPatch) -> None:
    at = "2027-01-16T00:00:00+00:00"
    sub = Subscription("sub_x", "m_acme", TOKEN, 1000, "USD", "month", 1, to_ms(cli_common.time_of(at, "t")), 0, 0)
    monkeypatch.setattr(cli_subscriptions, "read_subscriptions", lambda _s: [sub])
    assert run("subscriptions", "cancel", "sub_x", "--merchant", "m_acme", "--at-period-end", "--at", at)[0] == 0
    assert run("subscriptions", "change-plan", "sub_x", "--amount-minor", "2000", "--at", at)[0] == 0
    assert run("subscriptions", "change-plan", "sub_nope", "--amount-minor", "2000")[0] == 2
    cancel, change = (CODEC.decode(r) for r in sent)
    assert (cancel["kind"], cancel["at_period_end"]) == ("cancel", True)
    assert change["plan"] == {"amount_minor": 2000, "currency": "USD", "interval": "month", "interval_count": 1}
    code, out, _ = run("subscriptions", "list")
    assert code == 0 and "sub_x" in out and "4444" in out and TOKEN["token"] not in out
    assert run("clock", "tick", "--at", "2027-02-01T00:00:00Z")[0] == 0
    assert sent[-1][0] == "tick" and sent[-1][1].isoformat() == "2027-02-01T00:00:00+00:00"
    assert run("clock", "tick", "--at", "soon")[0] == 2
