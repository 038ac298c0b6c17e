"""The demo's wallet payments carry cryptograms the wallet provider signed for each
create: ingest verifies every one (so the payment's liability shifts), a retry of the
same request carries the same cryptogram, and the summary line counts the shifts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from connectors.vault.keys import WALLET_SIGNING, ActiveSigner, FileKeyStore
from connectors.vault.tokenizer import Tokenizer
from schemas.codec import Codec
from schemas.partitioning import partition_for
from streams.demo.methods import sign_wallets, wallet_liability, wallet_summary
from streams.demo.run import generate, with_fraud_showcase
from streams.stages.ingest import Forward, Limits, Source, command_key, ingest

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_every_demo_wallet_create_carries_a_cryptogram_ingest_verifies(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys")
    store.init()
    limits = Limits(10**15, 255, 8, wallet_keys=store.public_keys(WALLET_SIGNING))
    traffic = generate(300, 7, "run1", START)
    with_fraud_showcase(traffic)
    wallets = [c for c in traffic.items if isinstance(c, dict) and c.get("method") == "wallet"]
    assert len(wallets) > 10  # the day's ~10 % and the showcase's six
    assert sign_wallets(traffic.items, ActiveSigner.of(store, WALLET_SIGNING)) == len(wallets)
    by_request: dict[tuple[str, int], str] = {}
    for c in wallets:
        key = command_key(c)
        source = Source("payment-commands", partition_for(key, limits.partitions), 0, 0, key)
        result = ingest(Codec("PaymentCommand").encode(c, check=True), source, Tokenizer(b"k" * 32, "t1"), limits)
        assert isinstance(result, Forward) and result.command["rejection_reason"] is None, result.command
        assert result.command["wallet"]["cryptogram_verified"] is True
        # a retry of the same request: the same cryptogram
        assert (
            by_request.setdefault((c["payment_id"], c["amount_minor"]), c["wallet"]["cryptogram"])
            == (c["wallet"]["cryptogram"])
        )


def test_the_summary_counts_wallet_payments_whose_liability_shifted() -> None:
    events = {
        "p1": [{"method": "wallet", "liability_shift": True}, {"method": "wallet", "liability_shift": True}],
        "p2": [{"method": "wallet", "liability_shift": None}],
        "p3": [{"method": None, "liability_shift": True}],  # a card's 3DS shift is not counted here
    }
    assert wallet_liability(events) == (2, 1)
    assert wallet_summary(events).startswith("wallet liability shift: 1 of 2 wallet payments")
