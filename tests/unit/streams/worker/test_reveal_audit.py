"""The worker's side of a reveal: the card checked to be the merchant's, one VaultReveal
audit record per reveal (never the PAN), handed over once for the call's transaction."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from connectors.vault.keys import FileKeyStore
from connectors.vault.scan import PanScanner
from connectors.vault.tokenizer import StoreTokenizer
from connectors.vault.vault import Revealed, SealedCards, VaultError, open_record, seal
from schemas.ids import derive_reveal_id
from streams.domain.payments import REVEAL_MIT
from streams.worker.cards import PENDING_REVEALS_MAX, REVEAL_CODEC, AuditedReveals

PAN = "4242424242424242"
AT_MS = 1_764_064_800_000


class MapVault:
    """TopicVault's reveal over a SealedCards map (the fold of the topic), no broker."""

    def __init__(self, keys: FileKeyStore) -> None:
        self.keys, self.cards = keys, SealedCards(10)

    def reveal(self, token: str) -> Revealed:
        blob = self.cards.get(token)
        if blob is None:
            raise VaultError(token, "no such token on the card-vault topic")
        return open_record(self.keys, token, blob)


@pytest.fixture
def vault(tmp_path: Path) -> MapVault:
    keys = FileKeyStore(tmp_path / "keys")
    keys.init()
    return MapVault(keys)


def sealed(vault: MapVault, merchant: str) -> str:
    card, blob = seal(vault.keys, StoreTokenizer(vault.keys), merchant, PAN)
    vault.cards.fold(card.token, blob)
    return card.token


def test_each_reveal_is_audited_once_without_the_pan(vault: MapVault) -> None:
    token = sealed(vault, "m_acme")
    reveals = AuditedReveals(vault, "w7")  # type: ignore[arg-type]
    assert reveals.reveal(token, "m_acme", "pay_1", REVEAL_MIT, AT_MS) == PAN
    (audit,) = reveals.take()
    assert audit == {"reveal_id": derive_reveal_id("pay_1", REVEAL_MIT), "token": token, "merchant_id": "m_acme",
                     "payment_id": "pay_1", "purpose": REVEAL_MIT, "master_key_id": "vault-master-v1", "worker": "w7",
                     "event_time": datetime.fromtimestamp(AT_MS / 1000, tz=timezone.utc)}
    assert PanScanner([PAN]).scan(REVEAL_CODEC.encode(audit, check=True)) == []
    assert reveals.take() == []  # handed over once


def test_another_merchants_card_and_an_unknown_token_reveal_nothing(vault: MapVault) -> None:
    token = sealed(vault, "m_acme")
    reveals = AuditedReveals(vault, "w7")  # type: ignore[arg-type]
    with pytest.raises(VaultError, match="another merchant's"):
        reveals.reveal(token, "m_evil", "pay_2", REVEAL_MIT, AT_MS)
    with pytest.raises(VaultError, match="no such token"):
        reveals.reveal("tok_" + "a" * 32, "m_acme", "pay_3", REVEAL_MIT, AT_MS)
    assert reveals.take() == []


def test_reveals_stop_when_their_audit_is_not_taken(vault: MapVault) -> None:
    token = sealed(vault, "m_acme")
    reveals = AuditedReveals(vault, "w7")  # type: ignore[arg-type]
    for n in range(PENDING_REVEALS_MAX):
        reveals.reveal(token, "m_acme", f"pay_{n}", REVEAL_MIT, AT_MS)
    with pytest.raises(VaultError, match="not yet audited"):
        reveals.reveal(token, "m_acme", "pay_x", REVEAL_MIT, AT_MS)
    assert len(reveals.take()) == PENDING_REVEALS_MAX
