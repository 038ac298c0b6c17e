"""The Faust app: topics, tables and thin agents over the pure stage logic.

Commit order (one Kafka transaction per source partition, Faust EOS):
  1. the stage reads a command at offset o of partition p;
  2. it decides from its local state (pure logic);
  3. `Emitter.emit` writes local state, then sends the changelog records and the
     outputs to partition p of their topics as one group inside p's transaction
     (streams/eos.py says why Faust's own table writes are not used for this);
  4. at the commit interval Faust adds the offsets up to o and commits: state,
     outputs and progress land together, or the group lands before its offset and
     a redelivery is skipped by the command_id dedup.

Local RocksDB is not part of the transaction: Faust writes it at once, so after a
crash it can hold writes whose transaction aborted (a dedup entry for a command
that never got its outcome). The committed changelog is the truth; `reset_local_state`
discards the local copy before every start and Faust restores it read_committed.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import shutil
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import faust
from faust.streams import _current_event

from connectors.providers.rails import build_rails, load_schedules
from connectors.providers.router import Router, build_router
from connectors.providers.routing_log import RoutingLog
from connectors.providers.simulated import SimulatedProvider
from connectors.vault.intake import CardOpener
from connectors.vault.keys import ActiveSigner, FileKeyStore
from connectors.vault.vault import open_vault
from models.blocklist import BlockEntry, BlocklistError
from models.scoring import Scorer
from models.train import SHIPPED_ARTIFACT
from schemas.cards import mask_pans
from schemas.codec import Codec, DecodeError
from schemas.partitioning import partition_for
from streams import faust_fixes, ledger_stage, metrics, probes, risk_stage, topics
from streams import keys as key_stage
from streams import subscriptions_stage
from streams.eos import (Emitter, Record, StateWrite, dead_lettered_before, dlq_mark_key, exit_for_restart, origin_ms,
                         still_current)
from streams.ingest import DeadLetter, Forward, Limits, Source, dead_letter, ingest
from streams.ledger import entry_to_record
from streams.payments import Policy, Saga
from streams.methods import method_currencies
from streams.payments_stage import DEDUP, EVENTS, LABELS, OUTCOMES, PAYMENTS, SELF, TIMERS, Tables, handle
from streams.reconcile import STATUSES
from streams.settings import Settings, client_config

log = logging.getLogger("paystream.worker")

VALIDATED_CODEC = Codec("ValidatedCommand")
OUTCOME_CODEC = Codec("PaymentOutcome")
EVENT_CODEC = Codec("PaymentEvent")
ENTRY_CODEC = Codec("LedgerEntry")
LABEL_CODEC = Codec("FraudLabel")
REVIEW_CODEC = Codec("FraudReview")
MERCHANT_CODEC = Codec("MerchantRecord")
BLOCK_CODEC = Codec("FraudBlockEntry")
# How often each worker reads new blocklist records (every worker reads them all).
BLOCKLIST_POLL_S = 1.0
BLOCKLIST_BATCH_MAX = 1_000
DLQ_CODEC = Codec("DeadLetter")
SUBSCRIPTION_CODEC = Codec("SubscriptionCommand")
COMMAND_CODEC = Codec("PaymentCommand")


def faust_broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS for aiokafka as client_config gives it to librdkafka: the CA file (else the
    system's trust store), the client certificate and key for mutual TLS, host names checked."""
    ca = settings.kafka_ssl_ca_file
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca is not None else None)
    if settings.kafka_ssl_cert_file is not None and settings.kafka_ssl_key_file is not None:
        context.load_cert_chain(str(settings.kafka_ssl_cert_file), str(settings.kafka_ssl_key_file))
    return context


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's (aiokafka's) side of PAYSTREAM_KAFKA_SECURITY_PROTOCOL: None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    context = ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # the settings validator's promise
        # With a context Faust speaks SASL_SSL, without one SASL_PLAINTEXT.
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password.get_secret_value(),
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def source_of(event: faust.types.EventT) -> Source:
    m = event.message
    return Source(m.topic, m.partition, m.offset, int(m.timestamp * 1000), m.key)


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
    return Saga(providers=dict(rails), route=build_router({name: rail.config for name, rail in rails.items()}))


def build_app(settings: Settings) -> faust.App:
    faust_fixes.apply()
    n = settings.partitions
    app = faust.App(
        settings.app_id,
        broker=faust_broker_url(settings.bootstrap_servers),  # every node of an embedded cluster, as client_config
        broker_credentials=broker_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.state_dir),
        processing_guarantee="exactly_once",
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 5),
        topic_partitions=n,
        topic_replication_factor=settings.replication_factor,
        # Topics are created by `paystream topics ensure` from streams.topics, never implicitly.
        topic_allow_declare=False,
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_cleanup_interval=60.0,
        # Warm copies of each table partition on other workers (settings say why 0 on one box).
        table_standby_replicas=settings.table_standby_replicas,
        # Bounds (docs/reliability.md): buffers, polls and requests are finite.
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        broker_max_poll_records=settings.broker_max_poll_records,
        consumer_max_fetch_size=settings.consumer_max_fetch_size_bytes,
        producer_max_batch_size=settings.producer_max_batch_size_bytes,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_max_request_size=settings.producer_max_request_size_bytes,
    )

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=n)

    names = topics.topic_names(settings)
    commands, keyed, validated = topic(names.commands), topic(names.keyed), topic(names.validated)
    ledger_entries = topic(names.ledger)
    risk_in, labels_in, merchants_in = topic(names.risk), topic(names.labels), topic(names.merchants)
    merchant_labels_in = topic(names.merchant_labels)
    subscriptions_in, clock_in, outcomes_in = topic(names.subscription_commands), topic(names.clock), topic(names.outcomes)
    key_table = app.Table("keys", partitions=n, key_type=bytes, value_type=bytes)
    payments = app.Table("payments", partitions=n, key_type=bytes, value_type=bytes)
    applied = app.Table("payments-dedup", partitions=n, key_type=bytes, value_type=bytes)
    timer_table = app.Table("payments-timers", partitions=n, key_type=bytes, value_type=bytes)
    balances = app.Table("ledger-balances", partitions=n, key_type=bytes, value_type=bytes)
    entries_applied = app.Table("ledger-applied", partitions=n, key_type=bytes, value_type=bytes)
    ledger_tables = {ledger_stage.BALANCES: balances, ledger_stage.APPLIED: entries_applied}
    risk_table = app.Table("risk", partitions=n, key_type=bytes, value_type=bytes)
    # The merchant registry, co-partitioned with the keys stage (both keyed by merchant id).
    merchant_table = app.Table("merchants", partitions=n, key_type=bytes, value_type=bytes)
    subscription_table = app.Table("subscriptions", partitions=n, key_type=bytes, value_type=bytes)
    dlq_marks = app.Table("dlq-marks", partitions=n, key_type=bytes, value_type=bytes)
    tables = {PAYMENTS: payments, DEDUP: applied, TIMERS: timer_table}
    views = Tables(payments.data.get, applied.data.get, timer_table.data.get)

    keystore = FileKeyStore(settings.keys_dir)
    keystore.init()
    # Every payment event is sealed onto its partition's chain with the active key.
    signer = ActiveSigner.of(keystore)
    # Ingest keeps each new card's PAN encrypted in the vault and forwards its token.
    vault = open_vault(settings.data_dir, keystore)
    atexit.register(vault.close)
    # ... after opening the cards producers sealed to the card-intake key.
    opener = CardOpener(keystore)
    saga = build_saga(settings)
    # Ingest refuses a currency no rail of the method takes (the test provider takes any).
    currencies = (method_currencies({name: rail.config for name, rail in saga.providers.items()}, saga.route.config.methods)
                  if isinstance(saga.route, Router) else None)
    limits = Limits(settings.max_amount_minor, settings.idempotency_key_max_len, n, settings.ingest_accept_raw_card,
                    currencies)
    policy = Policy(auth_window=timedelta(hours=settings.auth_window_h), max_follow_ups=settings.payment_max_follow_ups,
                    dispute_fee_minor=settings.dispute_fee_minor, three_ds_unavailable=settings.three_ds_unavailable)
    # The fraud model is verified here, at start: a tampered artifact stops the worker now, not mid-stream.
    scorer = Scorer.load(SHIPPED_ARTIFACT)
    blocklist_reader = BlocklistReader(settings, scorer)
    retention = timedelta(hours=settings.idempotency_retention_h)
    route_retention = timedelta(days=settings.follow_up_route_days) if settings.fraud_scoring else None
    routing_log = RoutingLog(settings.routing_log_dir, settings.worker_name) if settings.routing_log_dir else None
    codecs = {OUTCOMES: (names.outcomes, OUTCOME_CODEC), EVENTS: (names.events, EVENT_CODEC),
              SELF: (names.validated, VALIDATED_CODEC), LABELS: (names.labels, LABEL_CODEC)}

    def record_for(stream: str, key: bytes | None, record: dict) -> Record:
        topic_name, codec = codecs[stream]
        if stream == LABELS:  # labels travel by card token, to the card's risk partition
            token = record["card_token"].encode()
            return Record(topic_name, token, codec.encode(record), partition_for(token, n))
        return Record(topic_name, key, codec.encode(record))

    emitter = Emitter(app)

    def observe_latency(stage: str, event: faust.types.EventT) -> None:
        # Operational time: the wall clock against the broker timestamp (no decision reads it).
        metrics.STAGE_LATENCY.labels(stage=stage).observe(max(0.0, time.time() - event.message.timestamp))

    # Breakers live per provider and partition; the gauge shows each provider's worst,
    # closed from the start (the test provider has no breakers).
    breakers = probes.BreakerBoard(tuple(saga.providers) if isinstance(saga.route, Router) else ())
    for provider, level in breakers.worst().items():
        metrics.BREAKER_STATE.labels(provider=provider).set(level)

    def dlq_record(event: faust.types.EventT, letter: DeadLetter) -> Record:
        """A dead letter of `event`'s, counted, for that event's transaction."""
        metrics.DEAD_LETTERS.labels(stage=letter.record["stage"], reason=letter.record["reason"]).inc()
        return Record(names.dlq, event.message.key, DLQ_CODEC.encode(letter.record))

    async def to_dlq(event: faust.types.EventT, result: DeadLetter) -> None:
        """One dead letter per bad message, redelivered or not (`eos.dead_lettered_before`)."""
        m = event.message
        key = dlq_mark_key(result.record["stage"], m)
        if dead_lettered_before(dlq_marks.data.get(key), m.offset):
            metrics.DUPLICATES_SKIPPED.labels(stage="dlq").inc()
            return
        await emitter.emit(event, [StateWrite(dlq_marks, key, str(m.offset).encode())], [dlq_record(event, result)])

    def to_payments(cmd: dict) -> Record:
        """A validated command on its way to the payments stage: by payment_id, to that key's partition."""
        out = Forward(cmd)
        return Record(names.validated, out.key, VALIDATED_CODEC.encode(out.command), partition_for(out.key, n))

    def decoded(codec: Codec, value: bytes | None) -> dict | None:
        try:
            return codec.decode(value)
        except DecodeError:
            return None

    async def decode_or_dlq(event: faust.types.EventT, stage: str, codec: Codec = VALIDATED_CODEC) -> dict | None:
        """The decoded record, or None once the undecodable message is dead-lettered."""
        try:
            return codec.decode(event.value)
        except DecodeError as e:
            await to_dlq(event, dead_letter(stage, e.reason, e.detail, event.value, source_of(event)))
            return None

    within_s = settings.agent_batch_within_ms / 1000

    def current(event: faust.types.EventT) -> bool:
        # An event of a batch that a rebalance overtook is dropped, never acked (the
        # 100,000-command chaos run lost 100 commands to acks of dropped events).
        return still_current(event, app.consumer_generation_id, app.flow_control.is_active())

    def batches(stream: faust.StreamT) -> AsyncIterator[list[faust.types.EventT]]:
        """The stream's events, up to agent_batch_max at a time. Faust acks a batch's
        events when the next batch is asked for, after their effects were emitted, as
        it acks one event after its body."""
        return stream.take_events(settings.agent_batch_max, within_s)

    def in_turn(batch: list[faust.types.EventT]) -> Iterator[faust.types.EventT]:
        """The batch's events still current, each made Faust's current event in turn:
        its RocksDB store reads from the current event's partition (a plain stream
        sets it per event, a batch does not; `Emitter.emit` sets it for writes). Only
        this task's context: stream.current_event belongs to the batch's filling task."""
        for event in batch:
            if current(event):
                _current_event.set(weakref.ref(event))
                yield event

    async def each_event(stream: faust.StreamT) -> AsyncIterator[faust.types.EventT]:
        async for batch in batches(stream):
            for event in in_turn(batch):
                yield event

    @app.agent(commands, name="ingest")
    async def ingest_agent(stream: faust.StreamT) -> None:
        async for batch in batches(stream):
            # The batch's new cards reach the disk in one fsync, before any token is sent.
            with vault.group_commit():
                results = [(event, ingest(event.value, source_of(event), vault, limits, opener))
                           for event in batch if current(event)]
            for event, result in results:
                if current(event):
                    await ingest_one(event, result)

    async def ingest_one(event: faust.types.EventT, result: Forward | DeadLetter) -> None:
        if isinstance(result, DeadLetter):
            await to_dlq(event, result)
            return
        key = key_stage.routing_key(result.command)
        record = Record(names.keyed, key, VALIDATED_CODEC.encode(result.command), partition_for(key, n))
        await emitter.emit(event, (), [record])
        observe_latency("ingest", event)

    @app.agent(keyed, name="keys")
    async def keys_agent(stream: faust.StreamT) -> None:
        async for event in each_event(stream):
            cmd = await decode_or_dlq(event, "keys")
            if cmd is None:
                continue
            m = event.message
            registered = merchant_table.data.get(cmd["merchant_id"].encode())
            effects = key_stage.handle(cmd, m.partition, int(m.timestamp * 1000), key_table.data.get, retention,
                                      settings.timer_sweep_max, route_retention,
                                      merchant=MERCHANT_CODEC.decode(registered) if registered is not None else None,
                                      require_registration=settings.merchants_require_registration)
            if effects.route is not None:  # a create, scored in its card's partition first, or its follow-up behind it
                record = Record(names.risk, effects.route, VALIDATED_CODEC.encode(effects.command), partition_for(effects.route, n))
            else:
                record = to_payments(effects.command)
            await emitter.emit(event, [StateWrite(key_table, k, v) for k, v in effects.writes], [record])
            observe_latency("keys", event)
            for timer in effects.fired:
                metrics.TIMERS_FIRED.labels(kind=f"keys-{timer.kind}").inc()
            if effects.merchant_state_unreadable:
                log.warning("keys: the merchant state of command %s was unreadable and started afresh", cmd["command_id"])

    @app.agent(merchant_labels_in, name="merchant-labels")
    async def merchant_labels_agent(stream: faust.StreamT) -> None:
        """Labels by merchant, into the keys table (co-partitioned with payment-commands-keyed)."""
        async for event in each_event(stream):
            label = await decode_or_dlq(event, "merchant-labels", LABEL_CODEC)
            if label is None:
                continue
            m = event.message
            effects = key_stage.handle_label(label, m.partition, int(m.timestamp * 1000), key_table.data.get, retention,
                                             settings.timer_sweep_max)
            if effects.skipped:
                metrics.DUPLICATES_SKIPPED.labels(stage="merchant-labels").inc()
                continue
            await emitter.emit(event, [StateWrite(key_table, k, v) for k, v in effects.writes], ())
            for timer in effects.fired:
                metrics.TIMERS_FIRED.labels(kind=f"keys-{timer.kind}").inc()

    @app.agent(validated, name="payments")
    async def payments_agent(stream: faust.StreamT) -> None:
        async for event in each_event(stream):
            cmd = await decode_or_dlq(event, "payments")
            if cmd is None:
                continue
            m = event.message
            try:
                effects = handle(cmd, event.value, m.partition, int(m.timestamp * 1000), views, saga, policy, retention,
                                 settings.timer_sweep_max, signer=signer)
            except Exception as e:  # a bug must not stop the partition: park the command, loudly
                detail = mask_pans(f"{type(e).__name__}: {e}")[0]
                log.exception("payments stage failed on command %s: %s", cmd["command_id"], detail)
                await to_dlq(event, dead_letter("payments", "internal_error", detail, event.value, source_of(event)))
                continue
            if effects.skipped:
                metrics.DUPLICATES_SKIPPED.labels(stage="payments").inc()
                continue
            if effects.reused_command_id:
                metrics.COMMAND_ID_REUSED.inc()
                detail = "this command_id was answered for a different message"
                await to_dlq(event, dead_letter("payments", "command_id_reused", detail, event.value, source_of(event)))
                continue
            writes = [StateWrite(tables[t], k, v) for t, k, v in effects.writes]
            records = [record_for(stream, m.key, r) for stream, r in effects.records]
            records += [posted(r, event) for stream, r in effects.records if stream == EVENTS]
            await emitter.emit(event, writes, [r for r in records if r is not None])
            observe_latency("payments", event)
            for stream, record in effects.records:
                if stream == OUTCOMES:
                    metrics.OUTCOMES.labels(kind=record["kind"], status=record["status"]).inc()
                    # From payment-commands to this outcome: the p99 SLO's measure.
                    metrics.STAGE_LATENCY.labels(stage="pipeline").observe(max(0.0, time.time() - origin_ms(m) / 1000))
                elif stream == EVENTS:
                    metrics.PAYMENT_EVENTS.labels(type=record["type"]).inc()
            for timer in effects.fired:
                metrics.TIMERS_FIRED.labels(kind=timer.kind).inc()
            if effects.routed is not None:
                if routing_log is not None:
                    routing_log.routed(m.partition, cmd["payment_id"], effects.routed)
                for change in effects.routed.transitions:
                    breakers.apply(m.partition, change)
                    metrics.BREAKER_STATE.labels(provider=change.provider).set(breakers.worst()[change.provider])
                    log.warning("breaker %s: %s -> %s (%s)", change.provider, change.from_state, change.to_state, change.reason)

    def posted(record: dict, source: faust.types.EventT) -> Record | None:
        """An event's journal entry, to its merchant's ledger shard, in the event's own
        transaction (no separate posting hop: the entry is a pure function of the
        event); None when it moves no money. A refusal is a bug of ours: the event
        still goes out and the refusal is dead-lettered with it (`paystream audit`
        names the event without its entry)."""
        posting = ledger_stage.post_event(record, n)
        if posting.refused is not None:
            return dlq_record(source, dead_letter("post", posting.refused.reason, posting.refused.detail,
                                                  EVENT_CODEC.encode(record), source_of(source)))
        if posting.entry is None:
            return None
        entry = posting.entry
        return Record(names.ledger, entry.merchant_id.encode(), ENTRY_CODEC.encode(entry_to_record(entry)), entry.shard)

    @app.agent(ledger_entries, name="ledger")
    async def ledger_agent(stream: faust.StreamT) -> None:
        async for event in each_event(stream):
            record = await decode_or_dlq(event, "ledger", ENTRY_CODEC)
            if record is None:
                continue
            m = event.message
            result = ledger_stage.apply_entry(record, m.partition, int(m.timestamp * 1000), balances.data.get,
                                              entries_applied.data.get, retention, settings.timer_sweep_max)
            if result.refused is not None or result.wrong_shard:
                reason, detail = ("wrong_shard", f"shard {record.get('shard')} read from partition {m.partition}") \
                    if result.wrong_shard else (result.refused.reason, result.refused.detail)
                await to_dlq(event, dead_letter("ledger", reason, detail, event.value, source_of(event)))
                continue
            if result.skipped:
                metrics.DUPLICATES_SKIPPED.labels(stage="ledger").inc()
                continue
            writes = [StateWrite(ledger_tables[t], k, v) for t, k, v in result.writes]
            await emitter.emit(event, writes, ())
            observe_latency("ledger", event)
            metrics.LEDGER_ENTRIES.inc()

    @app.agent(risk_in, name="risk")
    async def risk_agent(stream: faust.StreamT) -> None:
        async for batch in batches(stream):
            blocklist_reader.ensure_loaded()
            cmds = {id(e): decoded(VALIDATED_CODEC, e.value) for e in batch}  # each decoded once
            # One model call for the batch; each create is then handled alone, as ever.
            risk_stage.prime([(cmds[id(e)], e.message.partition, int(e.message.timestamp * 1000)) for e in batch
                              if cmds[id(e)] is not None],
                             risk_table.data.get, scorer, retention, settings.timer_sweep_max)
            for event in in_turn(batch):
                await risk_one(event, cmds[id(event)])

    async def risk_one(event: faust.types.EventT, cmd: dict | None) -> None:
        if cmd is None:  # undecodable: dead-lettered with the codec's reason
            await decode_or_dlq(event, "risk")
            return
        m = event.message
        effects = risk_stage.handle(cmd, m.partition, int(m.timestamp * 1000), risk_table.data.get, scorer, retention,
                                    settings.timer_sweep_max)
        if effects.skipped:
            metrics.DUPLICATES_SKIPPED.labels(stage="risk").inc()
            return
        assert effects.command is not None
        records = [to_payments(effects.command)]
        if effects.review is not None:
            records.append(Record(names.review, records[0].key, REVIEW_CODEC.encode(effects.review)))
        await emitter.emit(event, [StateWrite(risk_table, k, v) for k, v in effects.writes], records)
        observe_latency("risk", event)
        if effects.decision is not None:
            metrics.FRAUD_DECISIONS.labels(action=effects.decision.action, fallback=str(effects.fallback).lower(),
                                           merchant="partition" if effects.merchant_fallback else "exact").inc()
        if effects.state_unreadable:
            log.warning("risk: a stored state of command %s was unreadable and started afresh", cmd["command_id"])

    @app.agent(labels_in, name="labels")
    async def labels_agent(stream: faust.StreamT) -> None:
        async for event in each_event(stream):
            label = await decode_or_dlq(event, "labels", LABEL_CODEC)
            if label is None:
                continue
            m = event.message
            effects = risk_stage.handle_label(label, m.partition, int(m.timestamp * 1000), risk_table.data.get, retention,
                                              settings.timer_sweep_max)
            if effects.skipped:
                continue
            # A copy to the label's merchant partition, for the keys stage's exact merchant state:
            # in this label's transaction, so it is forwarded exactly when it is applied here.
            key = key_stage.label_routing_key(label)
            copy = [] if key is None else [Record(names.merchant_labels, key, event.value, partition_for(key, n))]
            await emitter.emit(event, [StateWrite(risk_table, k, v) for k, v in effects.writes], copy)

    @app.agent(merchants_in, name="merchants")
    async def merchants_agent(stream: faust.StreamT) -> None:
        async for event in each_event(stream):
            key = event.message.key
            if event.value is not None:
                try:
                    MERCHANT_CODEC.decode(event.value)
                except DecodeError as e:
                    await to_dlq(event, dead_letter("merchants", e.reason, e.detail, event.value, source_of(event)))
                    continue
            if not key:
                await to_dlq(event, dead_letter("merchants", "missing_key", "a registry record needs its merchant id as key",
                                                event.value or b"", source_of(event)))
                continue
            await emitter.emit(event, [StateWrite(merchant_table, key, event.value)], ())

    @app.agent(clock_in, name="clock")
    async def clock_agent(stream: faust.StreamT) -> None:
        """Each tick on to the same partition of subscription-commands, into that log's order."""
        async for event in each_event(stream):
            tick = await decode_or_dlq(event, "clock", SUBSCRIPTION_CODEC)
            if tick is None:
                continue
            if tick["kind"] != "tick":
                await to_dlq(event, dead_letter("clock", "not_a_tick", f"{tick['kind']} on the clock topic", event.value, source_of(event)))
                continue
            await emitter.emit(event, (), [Record(names.subscription_commands, event.message.key, event.value)])

    @app.agent(outcomes_in, name="subscription-outcomes")
    async def subscription_outcomes_agent(stream: faust.StreamT) -> None:
        """A charge's outcome on to its subscription's partition; every other outcome is skipped."""
        async for event in each_event(stream):
            if event.value is None or subscriptions_stage.CHARGE_KEY_BYTES not in event.value:
                continue
            outcome = await decode_or_dlq(event, "subscription-outcomes", OUTCOME_CODEC)
            cmd = subscriptions_stage.outcome_forward(outcome) if outcome is not None else None
            if cmd is None:
                continue
            key = cmd["subscription_id"].encode()
            record = Record(names.subscription_commands, key, SUBSCRIPTION_CODEC.encode(cmd), partition_for(key, n))
            await emitter.emit(event, (), [record])

    @app.agent(subscriptions_in, name="subscriptions")
    async def subscriptions_agent(stream: faust.StreamT) -> None:
        """Subscriptions of this partition: commands, ticks and outcomes in log order;
        the charges due go to payment-commands in the same transaction."""
        async for event in each_event(stream):
            cmd = await decode_or_dlq(event, "subscriptions", SUBSCRIPTION_CODEC)
            if cmd is None:
                continue
            p = event.message.partition
            prefix = subscriptions_stage.partition_prefix(p)
            effects = subscriptions_stage.handle(
                cmd, p, n, subscription_table.data.get,
                lambda: [(k, v) for k, v in subscription_table.data.items() if k.startswith(prefix)])
            if effects.refused is not None:
                await to_dlq(event, dead_letter("subscriptions", effects.refused.reason, effects.refused.detail, event.value,
                                                source_of(event)))
                continue
            charges = [Record(names.commands, c["payment_id"].encode(), COMMAND_CODEC.encode(c),
                              partition_for(c["payment_id"].encode(), n)) for c in effects.charges]
            await emitter.emit(event, [StateWrite(subscription_table, k, v) for k, v in effects.writes], charges)

    @app.timer(interval=BLOCKLIST_POLL_S)
    async def blocklist_refresh() -> None:
        blocklist_reader.poll()

    # Reconciliation runs as its own job (`paystream reconcile`), which counts there; the
    # worker exposes every kind at 0 so the series exists for the alert and dashboards.
    for status in STATUSES:
        if status != "matched":
            metrics.SETTLEMENT_DISCREPANCIES.labels(kind=status)
    sources = {agent.channel.get_topic_name() for agent in app.agents.values()}
    lag_probe = probes.LagProbe(client_config(settings), settings.app_id)
    atexit.register(lag_probe.close)
    lag_reported: set[tuple[str, int]] = set()
    stall_watch = probes.StallWatch(settings.worker_stall_s)
    imbalance_currencies: set[str] = set()

    @app.timer(interval=probes.PROBE_INTERVAL_S)
    async def refresh_gauges() -> None:
        """Consumer lag of the source partitions this worker owns (others' are theirs to
        report: the alert sums over workers), and the imbalance of its ledger partitions."""
        owned = {(tp.topic, tp.partition) for tp in app.consumer.assignment() if tp.topic in sources}
        try:
            lags = await asyncio.get_running_loop().run_in_executor(None, lag_probe.lags, owned)
        except Exception as e:  # a slow broker must not stop the timer: the gauge keeps its last value
            log.warning("consumer lag not read: %s", e)
        else:
            for topic, partition in lag_reported - owned:
                metrics.CONSUMER_LAG.remove(topic, str(partition))
            for (topic, partition), progress in lags.items():
                metrics.CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(progress.lag)
            lag_reported.clear()
            lag_reported.update(lags)
            ready = not (app.rebalancing or app.in_recovery)  # restoring tables is progress, not a stall
            stalled = []
            for tp in stall_watch.observe(time.monotonic(), lags, ready):
                # A lag of aborted records and commit markers only is idle, not stalled.
                if await asyncio.get_running_loop().run_in_executor(None, lag_probe.readable_after, tp,
                                                                    lags[tp].committed):
                    stalled.append(tp)
                else:
                    stall_watch.idle(tp, time.monotonic())
            if stalled:
                exit_for_restart(f"no progress for {stall_watch.stall_s}s on {stalled} while ready")
        try:
            totals = probes.ledger_imbalance(balances.data.items())
        except probes.TooManyBalances as e:
            log.warning("ledger imbalance not checked: %s", e)
            return
        imbalance_currencies.update(totals)
        for currency in imbalance_currencies:
            metrics.LEDGER_IMBALANCE.labels(currency=currency).set(totals.get(currency, 0))

    return app


class BlocklistReader:
    """Every worker folds the whole `fraud-blocklist` topic (all partitions, no group)
    into its scorer's blocklist: all of it before the worker starts, then what is new
    every BLOCKLIST_POLL_S, so a block reaches all workers within seconds. An unusable
    record is counted, not applied."""

    def __init__(self, settings: Settings, scorer: Scorer) -> None:
        self.settings, self.scorer = settings, scorer
        self.consumer: Any = None  # connected on first use: building the app needs no broker

    def ensure_loaded(self) -> None:
        """Read the whole topic once (the risk agent calls this before its first score)."""
        if self.consumer is not None:
            return
        from confluent_kafka import TopicPartition

        from connectors.kafka.clients import committed_reader, end_offsets, read_to_end

        topic = topics.topic_names(self.settings).blocklist
        consumer = committed_reader(client_config(self.settings), [])
        atexit.register(consumer.close)
        ends = {(topic, p): end for p, end in end_offsets(consumer, topic, self.settings.partitions).items()}
        for msg in read_to_end(client_config(self.settings), [topic], self.settings.partitions, ends=ends):
            self._apply(msg.value())
        consumer.assign([TopicPartition(topic, p, end) for (_, p), end in ends.items()])
        self.consumer = consumer

    def poll(self) -> int:
        self.ensure_loaded()
        msgs = self.consumer.consume(BLOCKLIST_BATCH_MAX, timeout=0)
        for msg in msgs:
            if msg.error() is None:
                self._apply(msg.value())
        return len(msgs)

    def _apply(self, value: bytes | None) -> None:
        if value is None:
            return
        try:  # in offset order, unblocks too: the latest entry per key wins
            self.scorer.blocklist.apply(BlockEntry.from_record(BLOCK_CODEC.decode(value)))
        except (DecodeError, BlocklistError):
            metrics.DEAD_LETTERS.labels(stage="blocklist", reason="unusable_entry").inc()
