"""The saga reveals a card only for the authorization that needs the PAN (a
merchant-initiated charge on a saved card), puts it into that call alone, and
declines `card_unavailable` when the vault cannot give it; providers check it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from connectors.providers.rails import build_rails
from connectors.providers.simulated import Call, ProviderResult, SimulatedProvider, number_mismatch
from connectors.vault.vault import VaultError
from streams.domain.payments import REVEAL_MIT, Payment, Policy, Saga, decide, needs_pan
from streams.domain.subscriptions import MIT_METADATA_KEY
from tests.unit.streams.conftest import MERCHANT, ScriptedProvider

PAN = "4242424242424242"
MIT = {MIT_METADATA_KEY: "sub_1"}


@dataclass
class FakeVault:
    """The saga's CardVault over a dict (token -> PAN); records what was revealed."""

    cards: dict[str, str]
    revealed: list[tuple[str, str, str, str, int]] = field(default_factory=list)

    def reveal(self, token: str, merchant_id: str, payment_id: str, purpose: str, at_ms: int) -> str:
        if token not in self.cards:
            raise VaultError(token, "no such token")
        self.revealed.append((token, merchant_id, payment_id, purpose, at_ms))
        return self.cards[token]


@dataclass
class SeeingProvider(ScriptedProvider):
    """A scripted provider that keeps the card number each authorize was given."""

    numbers: list[str | None] = field(default_factory=list)

    def authorize(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, currency: str, call: Call | None = None
    ) -> ProviderResult:
        self.numbers.append(call.card_number if call else None)
        return super().authorize(key, card_bin, card_last4, amount_minor, currency, call)


def saga(vault: FakeVault, provider: ScriptedProvider) -> Saga:
    return Saga({provider.name: provider}, lambda cmd: provider.name, cards=vault)


def test_only_a_merchant_initiated_charge_on_a_saved_card_needs_the_pan(cmds) -> None:
    assert needs_pan(cmds.create(metadata=MIT))
    assert not needs_pan(cmds.create())  # customer-initiated: BIN and last 4
    assert not needs_pan(cmds.create(metadata=MIT) | {"card": None})  # no card (another method)
    # PaymentCommand v8's mark (an API off-session charge, a subscription's); the metadata's for older charges
    assert needs_pan(cmds.create() | {"merchant_initiated": True})
    assert not needs_pan(cmds.create() | {"merchant_initiated": False})


def test_a_mit_charge_reveals_once_into_its_provider_call_only(cmds) -> None:
    token = cmds.card()["token"]
    vault, provider = FakeVault({token: PAN}), SeeingProvider()
    create = cmds.create(metadata=MIT)
    d = decide(None, create, saga(vault, provider), Policy())
    assert (d.outcome["status"], d.payment.status) == ("succeeded", "captured")
    assert vault.revealed == [
        (token, MERCHANT, create["payment_id"], REVEAL_MIT, int(create["occurred_at"].timestamp() * 1000))
    ]
    assert provider.numbers == [PAN]
    assert d.payment.merchant_initiated
    assert PAN not in repr(d) and PAN.encode() not in d.payment.to_json()

    plain = cmds.create("order-2")  # a customer-initiated create: nothing revealed
    decide(None, plain, saga(vault, provider), Policy())
    assert len(vault.revealed) == 1 and provider.numbers[-1] is None


def test_a_card_the_vault_cannot_give_is_declined_before_any_provider(cmds) -> None:
    vault, provider = FakeVault({}), SeeingProvider()
    d = decide(None, cmds.create(metadata=MIT), saga(vault, provider), Policy())
    assert (d.outcome["status"], d.outcome["reason_code"], d.payment.status) == (
        "rejected",
        "card_unavailable",
        "declined",
    )
    assert provider.numbers == []


def test_a_mit_charge_held_for_review_reveals_when_it_is_approved(cmds) -> None:
    token = cmds.card()["token"]
    vault, provider = FakeVault({token: PAN}), SeeingProvider()
    create = cmds.create(metadata=MIT) | {"fraud_action": "review", "fraud_reasons": ["amount_over_review_limit"]}
    held = decide(None, create, saga(vault, provider), Policy()).payment
    assert held.status == "requires_review" and vault.revealed == []
    # The stored payment keeps the flag; one stored before the field existed reads as not MIT.
    assert Payment.from_json(held.to_json()).merchant_initiated
    before = json.loads(held.to_json())
    del before["merchant_initiated"]
    assert not Payment.from_json(json.dumps(before).encode()).merchant_initiated
    resolve = cmds.follow_up("review_resolve", create["payment_id"], "r1") | {"fraud_action": "approve"}
    d = decide(held, resolve, saga(vault, provider), Policy())
    assert d.payment.status == "captured" and provider.numbers == [PAN] and len(vault.revealed) == 1


def test_the_simulated_acquirers_decline_a_number_that_is_not_the_payments_card() -> None:
    call = Call("pay_1", "USD", 0, card_number=PAN)
    assert PAN not in repr(call)
    assert number_mismatch(call, "424242", "4242") is None
    assert number_mismatch(Call("pay_1", "USD", 0), "555555", "4444") is None  # no number: by BIN and last 4
    wrong = Call("pay_1", "USD", 0, card_number="5555555555554444")
    assert SimulatedProvider().authorize("k", "424242", "4242", 100, "USD", wrong) == ProviderResult(
        "declined", "incorrect_number"
    )
    rail = next(iter(build_rails(seed=1).values()))
    assert rail.authorize("k2", "424242", "4242", 100, "USD", wrong).reason == "incorrect_number"
    assert SimulatedProvider().authorize("k3", "424242", "4242", 100, "USD", call).status == "approved"
    kept: list[Any] = [rail.records[k] for k in rail.records]
    assert all(PAN not in repr(r) for r in kept)  # the provider's own records never hold the number
