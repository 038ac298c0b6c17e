"""The vault as a worker holds it: the card-vault topic followed into memory
(connectors/vault/topic.py), and every reveal audited.

A reveal happens inside the payments stage's provider call (streams/domain/payments.py
`needs_pan`); `AuditedReveals` keeps one VaultReveal record per reveal, which the batch
handler sends in the transaction of that call's events: an audit record commits exactly
when the events of the charge do. A transaction that aborts takes both away, and the
redelivered command reveals (and is audited) again under the same reveal id.
"""

from __future__ import annotations

import logging
from typing import Any

from connectors.vault.keys import FileKeyStore
from connectors.vault.topic import TopicVault
from connectors.vault.vault import VaultError
from schemas.codec import Codec
from schemas.ids import derive_reveal_id
from schemas.times import from_ms
from streams import metrics, topics
from streams.settings import Settings, client_config

log = logging.getLogger("paystream.vault")

REVEAL_CODEC = Codec("VaultReveal")
VAULT_POLL_S = 1.0  # how often a worker reads what other workers sealed
# Reveals one command may make before its audit is sent: a create reveals once, so
# more means a bug, and the worker stops revealing rather than hold PANs unaudited.
PENDING_REVEALS_MAX = 16


def topic_vault(settings: Settings) -> TopicVault:
    """The worker's vault: the card-vault topic of these settings, under their key store."""
    keys = FileKeyStore(settings.keys_dir)
    keys.init()
    return TopicVault(client_config(settings), topics.topic_names(settings).card_vault, settings.partitions, keys,
                      max_cards=settings.vault_cache_max_cards, read_through_s=settings.vault_read_through_s)


class AuditedReveals:
    """The saga's CardVault (streams.domain.payments.CardVault): the PAN from the
    vault, checked to be the merchant's card, and an audit record for the caller to send."""

    def __init__(self, vault: TopicVault, worker: str) -> None:
        self.vault, self.worker = vault, worker
        self._pending: list[dict[str, Any]] = []

    def reveal(self, token: str, merchant_id: str, payment_id: str, purpose: str, at_ms: int) -> str:
        if len(self._pending) >= PENDING_REVEALS_MAX:
            raise VaultError(token, f"more than {PENDING_REVEALS_MAX} reveals not yet audited")
        revealed = self.vault.reveal(token)
        if revealed.merchant_id != merchant_id:
            # A token is the merchant's own (HMAC of merchant and PAN): another merchant naming it gets nothing.
            log.warning("vault: payment %s of %s named another merchant's card", payment_id, merchant_id)
            raise VaultError(token, "the card is another merchant's")
        self._pending.append({
            "reveal_id": derive_reveal_id(payment_id, purpose), "token": token, "merchant_id": merchant_id,
            "payment_id": payment_id, "purpose": purpose, "master_key_id": revealed.key_id, "worker": self.worker,
            "event_time": from_ms(at_ms),
        })
        metrics.VAULT_REVEALS.labels(purpose=purpose).inc()
        log.info("vault: revealed the card of %s (%s)", payment_id, purpose)  # the token is on vault-reveals; never the PAN
        return revealed.pan

    def take(self) -> list[dict[str, Any]]:
        """The audit records of the reveals since the last take, in order."""
        pending, self._pending = self._pending, []
        return pending
