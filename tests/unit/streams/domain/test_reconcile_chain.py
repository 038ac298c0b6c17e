"""Reconciliation against the chain's record: the ledger's crypto custody per asset
equals the chain's deposits less our sends (streams/domain/reconcile.py `reconcile_custody`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from connectors.providers.chain import SimChain
from schemas.times import to_ms
from streams.domain.ledger import entry_to_record, post
from streams.domain.reconcile import (
    NO_CHECKPOINT,
    SEND_EVENTS,
    chain_custody,
    custody_since,
    day_end_ms,
    ledger_custody,
    reconcile_custody,
    watch_end_ms,
)
from streams.jobs.sink import count_discrepancies
from tests.unit.deploy.alert_support import sample
from tests.unit.streams.conftest import Commands
from tests.unit.streams.domain.test_crypto import POLICY, create, run, usdc

# Every payer behaviour and reorgs (some dropped), so custody moves every way.
CHAIN = SimChain(
    usdc(
        split_per_mille=200,
        under_per_mille=200,
        over_per_mille=200,
        late_per_mille=150,
        never_per_mille=50,
        reorg_per_mille=400,
        drop_per_mille=300,
        payer_delay_blocks=4,
        block_interval_ms=5_000,
    ),
    seed=5,
)  # blocks between the looks (every 12 s)


def traffic(cmds: Commands) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Eight crypto payments (some refunded by the merchant), their events and their journal entries."""
    events: list[dict[str, Any]] = []
    for i in range(8):
        _, evs = run(
            CHAIN,
            cmds,
            create(cmds, amount=1_000 + 997 * i, key=f"order-{i}"),
            polls=400,
            refund_at_poll=40 if i % 2 == 0 else None,
        )
        events += evs
    entries = [entry_to_record(x) for x in (post(e, shard=i % 3) for i, e in enumerate(events)) if x is not None]
    return events, entries


def test_custody_matches_the_chain_at_every_cutoff(cmds: Commands) -> None:
    events, entries = traffic(cmds)
    types = {e["type"] for e in events}
    assert {"crypto_received", "crypto_refunded", "crypto_expired", "crypto_reorged", "refunded"} <= types, types
    first, last = min(to_ms(e["occurred_at"]) for e in events), max(to_ms(e["occurred_at"]) for e in events)
    # cut-offs between the pipeline's looks too: deposits mined since the last look are not a discrepancy
    for cutoff in [*range(first - 1, last + 1, 7_001), last, day_end_ms(events[-1]["occurred_at"].date())]:
        chain, ledger = chain_custody(events, {"USDC": CHAIN}, POLICY, cutoff), ledger_custody(entries, cutoff)
        assert chain == ledger, cutoff
    assert chain["USDC"] > 0
    result = reconcile_custody(events[-1]["occurred_at"].date(), chain, ledger, {"USDC": CHAIN.name})
    assert [(i.status, i.provider, i.currency) for i in result.items] == [("matched", "sim_usdc", "USDC")]
    assert result.discrepancies == 0


def test_a_receipt_missing_from_the_ledger_is_a_custody_mismatch_and_counted(cmds: Commands) -> None:
    events, entries = traffic(cmds)
    day = events[-1]["occurred_at"].date()
    cutoff = day_end_ms(day)
    dropped = next(i for i, x in enumerate(entries) if x["event_type"] == "crypto_received")
    amount = next(line["debit_minor"] for line in entries[dropped]["lines"] if line["debit_minor"])
    ledger = ledger_custody(entries[:dropped] + entries[dropped + 1 :], cutoff)
    result = reconcile_custody(
        day, chain_custody(events, {"USDC": CHAIN}, POLICY, cutoff), ledger, {"USDC": "sim_usdc"}
    )
    (item,) = result.items
    assert item.status == "custody_mismatch" and item.report_amount_minor - item.ledger_amount_minor == amount
    assert result.counts["custody_mismatch"] == result.discrepancies == 1
    before = sample("paystream_settlement_discrepancies_total", kind="custody_mismatch")
    count_discrepancies(result)
    assert sample("paystream_settlement_discrepancies_total", kind="custody_mismatch") == before + 1


def test_coins_at_an_address_the_ledger_never_booked_are_flagged(cmds: Commands) -> None:
    events, entries = traffic(cmds)
    cutoff = day_end_ms(events[-1]["occurred_at"].date())
    chain = chain_custody(events, {"USDC": CHAIN}, POLICY, cutoff)
    ledger = ledger_custody([x for x in entries if not x["event_type"].startswith("crypto_")], cutoff)
    (item,) = reconcile_custody(events[-1]["occurred_at"].date(), chain, ledger, {}).items
    assert item.status == "custody_mismatch" and item.provider == "USDC"


def test_custody_from_a_checkpoint_reads_only_the_quotes_still_watched_and_what_came_since(cmds: Commands) -> None:
    events, entries = traffic(cmds)
    first, last = min(to_ms(e["occurred_at"]) for e in events), max(to_ms(e["occurred_at"]) for e in events)
    chains = {"USDC": CHAIN}

    def needed(since_ms: int) -> list[dict[str, Any]]:
        # what the job's query returns: quotes whose watch may outlast the checkpoint, sends after it
        return [
            e
            for e in events
            if e.get("crypto")
            and (
                (
                    e["type"] == "crypto_quoted"
                    and watch_end_ms(to_ms(e["occurred_at"]), to_ms(e["crypto"]["expires_at"]), POLICY) > since_ms
                )
                or (e["type"] in SEND_EVENTS and to_ms(e["occurred_at"]) > since_ms)
            )
        ]

    span = last + POLICY.watch_ms + POLICY.lock_ms + 60_000
    cuts = [first - 1, *range(first, span, 611_111), span]
    for i, keep in enumerate(cuts):
        _, cp = custody_since(NO_CHECKPOINT, events, chains, POLICY, keep)
        cp = replace(cp, ledger=ledger_custody(entries, keep))
        for cutoff in cuts[i:]:
            full = chain_custody(events, chains, POLICY, cutoff)
            since, _ = custody_since(cp, needed(keep), chains, POLICY, cutoff)
            assert since == full, (keep, cutoff)
            assert ledger_custody(entries, cutoff, since=cp) == ledger_custody(entries, cutoff), (keep, cutoff)
    # a checkpoint past every watch: nothing is left to read, and custody is the checkpoint's
    _, done = custody_since(NO_CHECKPOINT, events, chains, POLICY, span)
    assert needed(span) == [] and custody_since(done, [], chains, POLICY, span + 86_400_000)[0] == done.chain_settled
    assert done.chain_settled["USDC"] > 0
    # and a later checkpoint is the same whichever checkpoint it was built from
    mid = cuts[len(cuts) // 2]
    _, via_mid = custody_since(
        custody_since(NO_CHECKPOINT, events, chains, POLICY, mid)[1], needed(mid), chains, POLICY, span
    )
    assert via_mid.chain_settled == done.chain_settled
