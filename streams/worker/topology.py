"""The declared topology on the runtime: which stage reads which topic, over which
tables, and what each handler does with a batch of one partition (decode or
dead-letter, the pure stage logic, send, observe). The commit order is the
runtime's (streams/runtime/__init__.py).

Local RocksDB holds only committed state (pending writes reach it after the commit)
and is discarded at every start anyway: the committed changelogs are the truth, and
the runtime restores a partition's tables from them before its first record.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

from connectors.kafka.clients import TopicFollower
from connectors.providers.chain import build_chains
from connectors.providers.rails import build_rails, load_schedules
from connectors.providers.router import Router, build_router
from connectors.providers.routing_log import RoutingLog
from connectors.providers.simulated import SimulatedProvider
from connectors.vault.intake import CardOpener
from connectors.vault.keys import ACS_SIGNING, WALLET_SIGNING, ActiveSigner, FileKeyStore
from models.blocklist import BlockEntry, BlocklistError
from models.scoring import Scorer
from models.train import SHIPPED_ARTIFACT
from schemas.cards import mask_pans
from schemas.codec import Codec, DecodeError
from schemas.partitioning import partition_for
from streams import metrics, topics
from streams.domain.ledger import entry_to_record
from streams.domain.methods import method_currencies
from streams.domain.monitoring import MonitoringError, Thresholds
from streams.domain.payments import Policy, Saga
from streams.domain.reconcile import STATUSES
from streams.domain.sanctions import SanctionsList
from streams.runtime.engine import Engine, EngineConfig, Periodic, Stage
from streams.runtime.messages import Message, Record, dead_lettered_before, dlq_mark_key, exit_for_restart
from streams.runtime.state import Table, Task
from streams.settings import Settings, client_config
from streams.stages import idempotency as key_stage
from streams.stages import ledger as ledger_stage
from streams.stages import monitoring as monitoring_stage
from streams.stages import risk as risk_stage
from streams.stages import subscriptions as subscriptions_stage
from streams.stages.ingest import DeadLetter, Forward, Limits, Source, command_key, dead_letter, ingest
from streams.stages.payments import (
    DEDUP,
    EVENTS,
    LABELS,
    OUTCOMES,
    PAYMENTS,
    SELF,
    TIMERS,
    Tables,
    handle,
    sign_last_event,
    tick_command,
)
from streams.worker import probes
from streams.worker.cards import REVEAL_CODEC, VAULT_POLL_S, AuditedReveals, topic_vault
from streams.worker.feeds import SANCTIONS_POLL_S, SanctionsReader

log = logging.getLogger("paystream.worker")

VALIDATED_CODEC = Codec("ValidatedCommand")
OUTCOME_CODEC = Codec("PaymentOutcome")
EVENT_CODEC = Codec("PaymentEvent")
ENTRY_CODEC = Codec("LedgerEntry")
LABEL_CODEC = Codec("FraudLabel")
REVIEW_CODEC = Codec("FraudReview")
MERCHANT_CODEC = Codec("MerchantRecord")
BLOCK_CODEC = Codec("FraudBlockEntry")
DLQ_CODEC = Codec("DeadLetter")
SUBSCRIPTION_CODEC = Codec("SubscriptionCommand")
COMMAND_CODEC = Codec("PaymentCommand")
ACTIVITY_CODEC = Codec("MonitoringActivity")
CASE_CODEC = Codec("MonitoringCase")
# How often each worker reads new blocklist records (every worker reads them all).
BLOCKLIST_POLL_S = 1.0
BLOCKLIST_BATCH_MAX = 1_000

# The tables, all on one compacted changelog (streams.topics.TABLES names them all).
KEYS, RISK, MERCHANTS, SUBSCRIPTIONS, DLQ_MARKS = "keys", "risk", "merchants", "subscriptions", "dlq-marks"
MONITORING = "monitoring"
PAYMENTS_T, DEDUP_T, TIMERS_T = "payments", "payments-dedup", "payments-timers"
BALANCES_T, APPLIED_T = "ledger-balances", "ledger-applied"
PAYMENT_TABLES = {PAYMENTS: PAYMENTS_T, DEDUP: DEDUP_T, TIMERS: TIMERS_T}
LEDGER_TABLES = {ledger_stage.BALANCES: BALANCES_T, ledger_stage.APPLIED: APPLIED_T}


def source_of(m: Message) -> Source:
    return Source(m.topic, m.partition, m.offset, m.timestamp_ms, m.key, m.ref)


def reset_local_state(settings: Settings) -> None:
    """Drop this worker's RocksDB copies; they are rebuilt from the changelogs."""
    if settings.state_dir.exists():
        shutil.rmtree(settings.state_dir)
    settings.state_dir.mkdir(parents=True)


def build_saga(settings: Settings) -> Saga:
    if settings.providers == "test":
        return Saga.single(SimulatedProvider())
    schedules = load_schedules(settings.provider_schedule_file) if settings.provider_schedule_file else None
    rails = build_rails(seed=settings.provider_seed, schedules=schedules, journal_dir=settings.providers_dir)
    # Crypto payments are paid on simulated chains (chains.toml), seeded like the rails.
    chains = build_chains(settings.provider_seed)
    router = build_router({name: rail.config for name, rail in rails.items()}, learn=settings.routing_learn)
    return Saga(providers=dict(rails), route=router, chains=chains)


def observe_latency(stage: str, m: Message) -> None:
    # Operational time: the wall clock against the broker timestamp (no decision reads it).
    metrics.held(metrics.STAGE_LATENCY, stage).observe(max(0.0, time.time() - m.timestamp_ms / 1000))


def decoded(codec: Codec, value: bytes | None) -> dict | None:
    try:
        return codec.decode(value)
    except DecodeError:
        return None


def build_worker(settings: Settings) -> Engine:
    n = settings.partitions
    names = topics.topic_names(settings)
    try:  # a bad threshold stops the worker now, not at the first activity
        thresholds = Thresholds(**settings.monitoring_thresholds)
    except (TypeError, MonitoringError) as e:
        raise ValueError(f"PAYSTREAM_MONITORING_THRESHOLDS: {e}") from None

    keystore = FileKeyStore(settings.keys_dir)
    keystore.init()
    # Every payment event is sealed onto its partition's chain with the active key.
    signer = ActiveSigner.of(keystore)
    # Ingest seals each new card's PAN onto the card-vault topic in the transaction that
    # forwards its token; every worker follows that topic, to reveal any card.
    vault = topic_vault(settings)
    # ... after opening the cards producers sealed to the card-intake key.
    opener = CardOpener(keystore)
    # The payments stage reveals a card only for the provider call that needs it, audited.
    reveals = AuditedReveals(vault, settings.worker_name)
    # A confirm's 3DS authentication value shifts liability only if an issuer's ACS key
    # signed it; a wallet's signed cryptogram must be its provider's (public keys only).
    saga = replace(build_saga(settings), acs_keys=keystore.public_keys(ACS_SIGNING), cards=reveals)
    # Ingest refuses a currency no rail of the method takes (the test provider takes any).
    currencies = (
        method_currencies({name: rail.config for name, rail in saga.providers.items()}, saga.route.config.methods)
        if isinstance(saga.route, Router)
        else None
    )
    limits = Limits(
        settings.max_amount_minor,
        settings.idempotency_key_max_len,
        n,
        settings.ingest_accept_raw_card,
        currencies,
        keystore.public_keys(WALLET_SIGNING),
    )
    policy = Policy(
        auth_window=timedelta(hours=settings.auth_window_h),
        max_follow_ups=settings.payment_max_follow_ups,
        dispute_fee_minor=settings.dispute_fee_minor,
        three_ds_unavailable=settings.three_ds_unavailable,
    )
    # The fraud model is verified here, at start: a tampered artifact stops the worker now, not mid-stream.
    scorer = Scorer.load(SHIPPED_ARTIFACT)
    blocklist_reader = BlocklistReader(settings, scorer)
    sanctions_reader = SanctionsReader(settings)  # the keys stage screens payers against it
    retention = timedelta(hours=settings.idempotency_retention_h)
    route_retention = timedelta(days=settings.follow_up_route_days) if settings.fraud_scoring else None
    routing_log = RoutingLog(settings.routing_log_dir, settings.worker_name) if settings.routing_log_dir else None
    sweep_max = settings.timer_sweep_max
    codecs = {
        OUTCOMES: (names.outcomes, OUTCOME_CODEC),
        EVENTS: (names.events, EVENT_CODEC),
        SELF: (names.validated, VALIDATED_CODEC),
        LABELS: (names.labels, LABEL_CODEC),
    }

    def record_for(stream: str, key: bytes | None, record: dict) -> Record:
        topic_name, codec = codecs[stream]
        if stream == LABELS:  # labels travel by card token, to the card's risk partition
            token = record["card_token"].encode()
            return Record(topic_name, token, codec.encode(record), partition_for(token, n))
        return Record(topic_name, key, codec.encode(record))

    # Breakers live per provider and partition; the gauge shows each provider's worst,
    # closed from the start (the test provider has no breakers).
    breakers = probes.BreakerBoard(tuple(saga.providers) if isinstance(saga.route, Router) else ())
    breakers.export()

    def dlq_record(m: Message, letter: DeadLetter) -> Record:
        """A dead letter of `m`'s, counted, for its transaction."""
        metrics.DEAD_LETTERS.labels(stage=letter.record["stage"], reason=letter.record["reason"]).inc()
        return Record(names.dlq, m.key, DLQ_CODEC.encode(letter.record))

    def to_dlq(task: Task, m: Message, letter: DeadLetter) -> None:
        """One dead letter per bad message, redelivered or not (`dead_lettered_before`).
        A message handed on inside the worker (no offset) is never redelivered: the
        record it was handed with is skipped on the way in, so it needs no mark."""
        if m.offset >= 0:
            marks = task.table(DLQ_MARKS)
            key = dlq_mark_key(letter.record["stage"], m)
            if dead_lettered_before(marks.get(key), m.offset):
                metrics.DUPLICATES_SKIPPED.labels(stage="dlq").inc()
                return
            marks.put(key, str(m.offset).encode())
        task.send(dlq_record(m, letter), m.origin_ms)

    def refuse(task: Task, m: Message, stage: str, reason: str, detail: str) -> None:
        to_dlq(task, m, dead_letter(stage, reason, detail, m.value, source_of(m)))

    def parked(task: Task, m: Message, stage: str, decide: Callable[[], Any]) -> Any:
        """The stage's pure decision for `m`, or None once a bug in it (an exception) has
        parked the record as an `internal_error` dead letter, loudly: a bug never stops
        the partition. The decision writes nothing before it returns, so nothing is half done."""
        try:
            return decide()
        except Exception as e:
            detail = mask_pans(f"{type(e).__name__}: {e}")[0]
            log.exception("%s stage failed on %s[%d]@%d: %s", stage, m.topic, m.partition, m.offset, detail)
            refuse(task, m, stage, "internal_error", detail)
            return None

    def decode_or_dlq(task: Task, m: Message, stage: str, codec: Codec = VALIDATED_CODEC) -> dict | None:
        """The decoded record, or None once the undecodable message is dead-lettered."""
        try:
            return codec.decode(m.value)
        except DecodeError as e:
            refuse(task, m, stage, e.reason, e.detail)
            return None

    def to_payments(cmd: dict, raw: bytes | None = None) -> Record:
        """A validated command on its way to the payments stage: by payment_id, to that key's
        partition. `raw`: its encoding already at hand (a record passed on unchanged)."""
        out = Forward(cmd)
        value = VALIDATED_CODEC.encode(out.command) if raw is None else raw
        return Record(names.validated, out.key, value, partition_for(out.key, n))

    def ingest_batch(batch: list[Message], task: Task) -> None:
        """Commands come keyed by merchant (streams/stages/ingest.py's `command_key`), so
        a command's partition of payment-commands is its merchant's: the keys stage runs
        here, in the same transaction, with no hop between them (docs/decisions.md, Hop budget)."""
        vault.ensure_loaded()  # what is held already is not sealed again
        sealer = vault.sealer()
        results = [(m, ingest(m.value, source_of(m), sealer, limits, opener)) for m in batch]
        # The batch's new cards, in the transaction that forwards their tokens: no token
        # travels without its sealed card committed.
        for token, blob in sealer.sealed.items():
            key = token.encode()
            task.send(Record(names.card_vault, key, blob, partition_for(key, n)), batch[0].origin_ms)
        table, merchants = task.table(KEYS), task.table(MERCHANTS)
        sanctions = sanctions_reader.ensure_loaded()
        for m, result in results:
            if isinstance(result, DeadLetter):
                to_dlq(task, m, result)
                continue
            observe_latency("ingest", m)
            keyed(task, m, result.command, table, merchants, sanctions)

    def keyed(task: Task, m: Message, cmd: dict, table: Table, merchants: Table, sanctions: SanctionsList) -> None:
        """The keys stage over one ingested command: idempotency claim, merchant admission
        and features, then on to its risk partition or straight to payments."""
        registered = merchants.get(cmd["merchant_id"].encode())
        effects = parked(
            task,
            m,
            "keys",
            lambda: key_stage.handle(
                cmd,
                m.partition,
                m.timestamp_ms,
                table.get,
                retention,
                sweep_max,
                route_retention,
                merchant=MERCHANT_CODEC.decode(registered) if registered is not None else None,
                require_registration=settings.merchants_require_registration,
                sanctions=sanctions,
                pending_caps=settings.kyc_pending_daily_cap_minor,
            ),
        )
        if effects is None:
            return
        for k, v in effects.writes:
            table.put(k, v)
        if (
            effects.route is not None
        ):  # a create, scored in its instrument's risk partition first, or its follow-up behind it
            record = Record(
                names.risk, effects.route, VALIDATED_CODEC.encode(effects.command), partition_for(effects.route, n)
            )
        else:
            record = to_payments(effects.command)
        task.send(record, m.origin_ms)
        if effects.review is not None:  # a sanctions hit, held: into the review queue
            task.send(
                Record(names.review, effects.command["payment_id"].encode(), REVIEW_CODEC.encode(effects.review)),
                m.origin_ms,
            )
        observe_latency("keys", m)
        for timer in effects.fired:
            metrics.child(metrics.TIMERS_FIRED, f"keys-{timer.kind}").inc()
        if effects.merchant_state_unreadable:
            log.warning("keys: the merchant state of command %s was unreadable and started afresh", cmd["command_id"])

    def applied_labels(
        batch: list[Message], task: Task, stage: str, table_name: str, fold: Callable[..., Any]
    ) -> Iterator[tuple[Message, dict, Any]]:
        """Each label of the batch folded into `table_name` once (a redelivered one is
        counted and skipped), with its writes applied: (message, label, effects)."""
        table = task.table(table_name)
        for m in batch:
            label = decode_or_dlq(task, m, stage, LABEL_CODEC)
            if label is None:
                continue
            effects = parked(
                task, m, stage, lambda: fold(label, m.partition, m.timestamp_ms, table.get, retention, sweep_max)
            )
            if effects is None:
                continue
            if effects.skipped:
                metrics.child(metrics.DUPLICATES_SKIPPED, stage).inc()
                continue
            for k, v in effects.writes:
                table.put(k, v)
            yield m, label, effects

    def merchant_labels_batch(batch: list[Message], task: Task) -> None:
        """Labels by merchant, into the keys table (co-partitioned with payment-commands)."""
        for _, _, effects in applied_labels(batch, task, "merchant-labels", KEYS, key_stage.handle_label):
            for timer in effects.fired:
                metrics.child(metrics.TIMERS_FIRED, f"keys-{timer.kind}").inc()

    def payments_batch(batch: list[Message], task: Task) -> None:
        tables = {name: task.table(t) for name, t in PAYMENT_TABLES.items()}
        views = Tables(tables[PAYMENTS].get, tables[DEDUP].get, tables[TIMERS].get)
        # The batch's records, sent once its block of events is signed (streams/domain/chain.py).
        block: list[tuple[str, dict]] = []
        sources: list[Message] = []
        # The batch's outcomes, events and fired timers, counted once per label set at its end.
        counted: Counter[tuple[Any, ...]] = Counter()
        for m in batch:
            cmd = decode_or_dlq(task, m, "payments")
            if cmd is None:
                continue
            effects = parked(
                task,
                m,
                "payments",
                lambda: handle(
                    cmd, m.value, m.partition, m.timestamp_ms, views, saga, policy, retention, sweep_max, signer=signer
                ),
            )
            # Every PAN revealed for this command is audited in its transaction, parked or not.
            for audit in reveals.take():
                token = audit["token"].encode()
                task.send(
                    Record(names.vault_reveals, token, REVEAL_CODEC.encode(audit), partition_for(token, n)), m.origin_ms
                )
            if effects is None:
                continue
            if effects.skipped:
                metrics.child(metrics.DUPLICATES_SKIPPED, "payments").inc()
                continue
            if effects.reused_command_id:
                metrics.COMMAND_ID_REUSED.inc()
                refuse(task, m, "payments", "command_id_reused", "this command_id was answered for a different message")
                continue
            for t, k, v in effects.writes:
                tables[t].put(k, v)
            # Each captured, refunded or device-attempt event re-keyed by subject for the monitoring
            # stage, in this transaction: forwarded exactly when the event is written.
            events = [r for stream, r in effects.records if stream == EVENTS]
            for key, activity in monitoring_stage.activities(cmd, events):
                task.send(
                    Record(names.monitoring_activity, key, ACTIVITY_CODEC.encode(activity), partition_for(key, n)),
                    m.origin_ms,
                )
            block.extend(effects.records)
            sources.extend([m] * len(effects.records))
            observe_latency("payments", m)
            for stream, record in effects.records:
                if stream == OUTCOMES:
                    counted[metrics.OUTCOMES, record["kind"], record["status"]] += 1
                    # From payment-commands to this outcome: the p99 SLO's measure.
                    metrics.held(metrics.STAGE_LATENCY, "pipeline").observe(max(0.0, time.time() - m.origin_ms / 1000))
                elif stream == EVENTS:
                    counted[metrics.PAYMENT_EVENTS, record["type"]] += 1
            for timer in effects.fired:
                counted[metrics.TIMERS_FIRED, timer.kind] += 1
            if effects.routed is not None:
                if routing_log is not None:
                    routing_log.routed(m.partition, cmd["payment_id"], effects.routed)
                for change in effects.routed.transitions:
                    breakers.export([(m.partition, change)])
                    log.warning(
                        "breaker %s: %s -> %s (%s)", change.provider, change.from_state, change.to_state, change.reason
                    )
        for (metric, *labels), count in counted.items():
            metrics.child(metric, *labels).inc(count)
        sign_last_event(block, signer)
        for (stream, r), m in zip(block, sources):
            task.send(record_for(stream, m.key, r), m.origin_ms)
            if stream == EVENTS:
                entry = posted(task, r, m)
                if entry is not None:
                    task.send(entry, m.origin_ms)

    def posted(task: Task, record: dict, source: Message) -> Record | None:
        """An event's journal entry, to its merchant's ledger shard, in the event's own
        transaction (no separate posting hop: the entry is a pure function of the
        event); None when it moves no money. A refusal is a bug of ours: the event
        still goes out and the refusal is dead-lettered with it (`paystream audit`
        names the event without its entry)."""
        posting = ledger_stage.post_event(record, n)
        if posting.refused is not None:
            return dlq_record(
                source,
                dead_letter(
                    "post",
                    posting.refused.reason,
                    posting.refused.detail,
                    EVENT_CODEC.encode(record),
                    source_of(source),
                ),
            )
        if posting.entry is None:
            return None
        entry = posting.entry
        return Record(names.ledger, entry.merchant_id.encode(), ENTRY_CODEC.encode(entry_to_record(entry)), entry.shard)

    def ledger_batch(batch: list[Message], task: Task) -> None:
        tables = {name: task.table(t) for name, t in LEDGER_TABLES.items()}
        for m in batch:
            record = decode_or_dlq(task, m, "ledger", ENTRY_CODEC)
            if record is None:
                continue
            result = parked(
                task,
                m,
                "ledger",
                lambda: ledger_stage.apply_entry(
                    record,
                    m.partition,
                    m.timestamp_ms,
                    tables[ledger_stage.BALANCES].get,
                    tables[ledger_stage.APPLIED].get,
                    retention,
                    sweep_max,
                ),
            )
            if result is None:
                continue
            if result.refused is not None or result.wrong_shard:
                reason, detail = (
                    ("wrong_shard", f"shard {record.get('shard')} read from partition {m.partition}")
                    if result.wrong_shard
                    else (result.refused.reason, result.refused.detail)
                )
                refuse(task, m, "ledger", reason, detail)
                continue
            if result.skipped:
                metrics.child(metrics.DUPLICATES_SKIPPED, "ledger").inc()
                continue
            for t, k, v in result.writes:
                tables[t].put(k, v)
            observe_latency("ledger", m)
            metrics.LEDGER_ENTRIES.inc()

    def monitoring_batch(batch: list[Message], task: Task) -> None:
        """Each subject's activity into its window state; the cases it opens to monitoring-cases (by case id)."""
        table = task.table(MONITORING)
        subjects = monitoring_stage.Subjects()  # the states changed, written once at the end
        for m in batch:
            record = decode_or_dlq(task, m, "monitoring", ACTIVITY_CODEC)
            if record is None:
                continue
            effects = parked(
                task,
                m,
                "monitoring",
                lambda: monitoring_stage.handle(
                    record, m.partition, m.timestamp_ms, table.get, thresholds, subjects, sweep_max
                ),
            )
            if effects is None:
                continue
            if effects.refused is not None:
                refuse(task, m, "monitoring", effects.refused.reason, effects.refused.detail)
                continue
            if effects.skipped:
                metrics.child(metrics.DUPLICATES_SKIPPED, "monitoring").inc()
                continue
            for k, v in effects.writes:
                table.put(k, v)
            for case in effects.cases:
                task.send(
                    Record(
                        names.monitoring_cases,
                        case.case_id.encode(),
                        CASE_CODEC.encode(monitoring_stage.case_record(case)),
                    ),
                    m.origin_ms,
                )
                metrics.child(metrics.MONITORING_CASES, case.rule).inc()
                log.info(
                    "monitoring case %s: %s on %s %s", case.case_id, case.rule, case.subject_kind, case.merchant_id
                )
            for timer in effects.fired:
                metrics.child(metrics.TIMERS_FIRED, f"monitoring-{timer.kind}").inc()
            observe_latency("monitoring", m)
        for k, v in subjects.writes():
            table.put(k, v)

    def risk_batch(batch: list[Message], task: Task) -> None:
        table = task.table(RISK)
        blocklist_reader.ensure_loaded()
        cmds = [(m, decoded(VALIDATED_CODEC, m.value)) for m in batch]
        # The batch's creates scored in one model call, each reading the ones before it; a
        # bug in one fails the batch, which is then decided one by one so only that one is parked.
        try:
            batched = risk_stage.handle_batch(
                [(cmd, m.partition, m.timestamp_ms) for m, cmd in cmds if cmd is not None],
                table.get,
                scorer,
                retention,
                sweep_max,
            )
        except Exception:
            log.exception("risk stage failed on a batch of %d; deciding its records one by one", len(batch))
            batched = None
        handled = iter(batched or ())
        for m, cmd in cmds:
            if cmd is None:  # undecodable: dead-lettered with the codec's reason
                decode_or_dlq(task, m, "risk")
                continue
            effects = (
                next(handled)
                if batched is not None
                else parked(
                    task,
                    m,
                    "risk",
                    lambda: risk_stage.handle(
                        cmd, m.partition, m.timestamp_ms, table.get, scorer, retention, sweep_max
                    ),
                )
            )
            if effects is None:
                continue
            if effects.skipped:
                metrics.child(metrics.DUPLICATES_SKIPPED, "risk").inc()
                continue
            assert effects.command is not None
            for k, v in effects.writes:
                table.put(k, v)
            # A follow-up as it came, a create with its decision spliced into its bytes.
            forward = to_payments(effects.command, risk_stage.forward_bytes(VALIDATED_CODEC, m.value, cmd, effects))
            task.send(forward, m.origin_ms)
            if effects.review is not None:
                task.send(Record(names.review, forward.key, REVIEW_CODEC.encode(effects.review)), m.origin_ms)
            observe_latency("risk", m)
            probes.count_fraud_decision(effects)
            if effects.state_unreadable:
                log.warning("risk: a stored state of command %s was unreadable and started afresh", cmd["command_id"])

    def labels_batch(batch: list[Message], task: Task) -> None:
        for m, label, _ in applied_labels(batch, task, "labels", RISK, risk_stage.handle_label):
            # A copy to the label's merchant partition, for the keys stage's exact merchant state:
            # in this label's transaction, so it is forwarded exactly when it is applied here.
            key = key_stage.label_routing_key(label)
            if key is not None:
                task.send(Record(names.merchant_labels, key, m.value, partition_for(key, n)), m.origin_ms)

    def merchants_batch(batch: list[Message], task: Task) -> None:
        table = task.table(MERCHANTS)
        for m in batch:
            if m.value is not None:
                try:
                    MERCHANT_CODEC.decode(m.value)
                except DecodeError as e:
                    refuse(task, m, "merchants", e.reason, e.detail)
                    continue
            if not m.key:
                refuse(task, m, "merchants", "missing_key", "a registry record needs its merchant id as key")
                continue
            table.put(m.key, m.value)

    def clock_batch(batch: list[Message], task: Task) -> None:
        """Each tick on to the same partition of subscription-commands and of the payments
        stage's input, into those logs' order (a replay of either sees it where it was)."""
        for m in batch:
            tick = decode_or_dlq(task, m, "clock", SUBSCRIPTION_CODEC)
            if tick is None:
                continue
            if tick["kind"] != "tick":
                refuse(task, m, "clock", "not_a_tick", f"{tick['kind']} on the clock topic")
                continue
            task.send(Record(names.subscription_commands, m.key, m.value), m.origin_ms)
            task.send(Record(names.validated, m.key, VALIDATED_CODEC.encode(tick_command(tick))), m.origin_ms)

    def subscription_outcomes_batch(batch: list[Message], task: Task) -> None:
        """A charge's outcome on to its subscription's partition; every other outcome is skipped."""
        for m in batch:
            if m.value is None or subscriptions_stage.CHARGE_KEY_BYTES not in m.value:
                continue
            outcome = decode_or_dlq(task, m, "subscription-outcomes", OUTCOME_CODEC)
            cmd = subscriptions_stage.outcome_forward(outcome) if outcome is not None else None
            if cmd is None:
                continue
            key = cmd["subscription_id"].encode()
            task.send(
                Record(names.subscription_commands, key, SUBSCRIPTION_CODEC.encode(cmd), partition_for(key, n)),
                m.origin_ms,
            )

    def subscriptions_batch(batch: list[Message], task: Task) -> None:
        """Subscriptions of this partition: commands, ticks and outcomes in log order;
        the charges due go to payment-commands in the same transaction."""
        table = task.table(SUBSCRIPTIONS)
        for m in batch:
            cmd = decode_or_dlq(task, m, "subscriptions", SUBSCRIPTION_CODEC)
            if cmd is None:
                continue
            p = m.partition
            prefix = subscriptions_stage.partition_prefix(p)
            effects = parked(
                task,
                m,
                "subscriptions",
                lambda: subscriptions_stage.handle(cmd, p, n, table.get, lambda: table.items(prefix)),
            )
            if effects is None:
                continue
            if effects.refused is not None:
                refuse(task, m, "subscriptions", effects.refused.reason, effects.refused.detail)
                continue
            for k, v in effects.writes:
                table.put(k, v)
            for c in effects.charges:
                key = command_key(c)
                task.send(Record(names.commands, key, COMMAND_CODEC.encode(c), partition_for(key, n)), m.origin_ms)

    # The topology, declared: (stage, source topic, tables, handler, outputs). Every stage
    # may dead-letter (the dlq topic, deduplicated by the dlq-marks table). The stages
    # that feed the tables ingest's keys stage and risk read (the merchant registry, the
    # label counts) come first: a batch runs its stages in this order, and after an
    # assignment the others wait until these are read to their ends (the engine's rules),
    # so a merchant registered before its first create is known to it.
    feeding = {"merchants", "labels", "merchant-labels"}
    # A create's path: what ingest sends to risk, and ingest or risk to payments, is
    # handled in the sender's transaction when this worker owns the partition, so the
    # outcome waits for one commit instead of three (docs/decisions.md, Hop budget).
    handed = {"risk", "payments"}
    stages = [
        Stage(
            name,
            source,
            handler,
            (*tables, DLQ_MARKS),
            (*outputs, names.dlq),
            feeds=name in feeding,
            takes_handoff=name in handed,
        )
        for name, source, tables, handler, outputs in (
            ("merchants", names.merchants, (MERCHANTS,), merchants_batch, ()),
            ("labels", names.labels, (RISK,), labels_batch, (names.merchant_labels,)),
            ("merchant-labels", names.merchant_labels, (KEYS,), merchant_labels_batch, ()),
            (
                "ingest",
                names.commands,
                (KEYS, MERCHANTS),
                ingest_batch,
                (names.card_vault, names.risk, names.validated, names.review),
            ),
            ("risk", names.risk, (RISK,), risk_batch, (names.validated, names.review)),
            (
                "payments",
                names.validated,
                tuple(PAYMENT_TABLES.values()),
                payments_batch,
                (
                    names.outcomes,
                    names.events,
                    names.validated,
                    names.labels,
                    names.ledger,
                    names.monitoring_activity,
                    names.vault_reveals,
                ),
            ),
            ("ledger", names.ledger, tuple(LEDGER_TABLES.values()), ledger_batch, ()),
            ("clock", names.clock, (), clock_batch, (names.subscription_commands, names.validated)),
            ("subscription-outcomes", names.outcomes, (), subscription_outcomes_batch, (names.subscription_commands,)),
            ("subscriptions", names.subscription_commands, (SUBSCRIPTIONS,), subscriptions_batch, (names.commands,)),
            ("monitoring", names.monitoring_activity, (MONITORING,), monitoring_batch, (names.monitoring_cases,)),
        )
    ]
    tables = dict.fromkeys(topics.TABLES, topics.tables_changelog_topic(settings.app_id))
    ids = topics.client_ids(settings)
    config = EngineConfig(
        client=client_config(settings),
        group_id=ids.worker_group,
        transactional_id=f"{ids.worker_transactions}{settings.worker_name}",
        state_dir=settings.state_dir,
        commit_interval_ms=settings.commit_interval_ms,
        commit_idle_ms=settings.commit_idle_ms,
        commit_records_max=settings.commit_records_max,
        batch_max=settings.batch_max,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        transaction_timeout_ms=settings.transaction_timeout_ms,
        transaction_retry_ms=settings.transaction_retry_ms,
        # Its records are read only once their transaction commits, and the commit sends
        # whatever still lingers at once (docs/performance.md).
        linger_ms=settings.worker_linger_ms,
        batch_bytes=settings.producer_max_batch_size_bytes,
        fetch_partition_bytes=settings.consumer_max_fetch_size_bytes,
        request_bytes=settings.producer_max_request_size_bytes,
    )
    engine: Engine

    # Reconciliation runs as its own job (`paystream reconcile`), which counts there; the
    # worker exposes every kind at 0 so the series exists for the alert and dashboards.
    for status in STATUSES:
        if status != "matched":
            metrics.SETTLEMENT_DISCREPANCIES.labels(kind=status)
    imbalance_currencies: set[str] = set()

    def ledger_gauge() -> None:
        """The imbalance of this worker's ledger partitions (committed balances)."""
        try:
            probes.set_ledger_gauge(
                (kv for task in engine.tasks.values() for kv in task.table(BALANCES_T).store.items()),
                imbalance_currencies,
            )
        except probes.TooManyBalances as e:
            log.warning("ledger imbalance not checked: %s", e)

    unusable_cards = [0]

    def vault_poll() -> None:
        vault.poll()
        metrics.VAULT_CARDS.set(len(vault.cards))
        if vault.unusable > unusable_cards[0]:
            metrics.DEAD_LETTERS.labels(stage="card-vault", reason="unusable_entry").inc(
                vault.unusable - unusable_cards[0]
            )
            unusable_cards[0] = vault.unusable

    periodic = [
        Periodic(BLOCKLIST_POLL_S, blocklist_reader.poll),
        Periodic(SANCTIONS_POLL_S, sanctions_reader.poll),
        Periodic(VAULT_POLL_S, vault_poll),
        Periodic(probes.PROBE_INTERVAL_S, ledger_gauge),
    ]
    engine = Engine(
        config, stages, tables, periodic, watchers=[LagWatch(settings, lambda: engine.owned(), lambda: engine.ready)]
    )
    return engine


class LagWatch(threading.Thread):
    """Consumer lag of the source partitions this worker owns (others' are theirs to
    report: the alert sums over workers), and the stall watch: a partition with lag
    whose committed offset has not moved for `worker_stall_s` while the worker is
    ready exits the worker for a restart. Off the loop: each reading is a few round trips."""

    def __init__(
        self, settings: Settings, owned: Callable[[], frozenset[tuple[str, int]]], ready: Callable[[], bool]
    ) -> None:
        super().__init__(name="lag-watch", daemon=True)
        self.owned, self.ready = owned, ready
        self.probe = probes.LagProbe(client_config(settings), topics.client_ids(settings).worker_group)
        self.stall_watch = probes.StallWatch(settings.worker_stall_s)
        self.reported: set[tuple[str, int]] = set()

    def run(self) -> None:
        while True:
            time.sleep(probes.PROBE_INTERVAL_S)  # a reading every interval, not a wait on a condition
            try:
                self.check()
            except Exception as e:  # a slow broker must not stop the watch: the gauge keeps its last value
                log.warning("consumer lag not read: %s", e)

    def check(self) -> None:
        owned = self.owned()
        ready = self.ready()
        lags = self.probe.lags(owned)
        for topic, partition in self.reported - set(lags):
            metrics.CONSUMER_LAG.remove(topic, str(partition))
        for (topic, partition), progress in lags.items():
            metrics.CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(progress.lag)
        self.reported = set(lags)
        stalled = []
        for tp in self.stall_watch.observe(time.monotonic(), lags, ready and owned == self.owned()):
            # A lag of aborted records and commit markers only is idle, not stalled.
            if self.probe.readable_after(tp, lags[tp].committed):
                stalled.append(tp)
            else:
                self.stall_watch.idle(tp, time.monotonic())
        if stalled:
            exit_for_restart(f"no progress for {self.stall_watch.stall_s}s on {stalled} while ready")


class BlocklistReader:
    """Every worker folds the whole `fraud-blocklist` topic (all partitions, no group)
    into its scorer's blocklist: all of it before the worker starts, then what is new
    every BLOCKLIST_POLL_S, so a block reaches all workers within seconds. An unusable
    record is counted, not applied."""

    def __init__(self, settings: Settings, scorer: Scorer) -> None:
        self.scorer = scorer
        self.follower = TopicFollower(
            client_config(settings), topics.topic_names(settings).blocklist, settings.partitions, BLOCKLIST_BATCH_MAX
        )

    def ensure_loaded(self) -> None:
        """Read the whole topic once (the risk stage calls this before its first score)."""
        self.follower.start(self._apply)

    def poll(self) -> int:
        return self.follower.poll(self._apply)

    def _apply(self, msg: Any) -> None:
        value = msg.value()
        if value is None:
            return
        try:  # in offset order, unblocks too: the latest entry per key wins
            self.scorer.blocklist.apply(BlockEntry.from_record(BLOCK_CODEC.decode(value)))
        except (DecodeError, BlocklistError):
            metrics.DEAD_LETTERS.labels(stage="blocklist", reason="unusable_entry").inc()
