"""`paystream chaos`: break the pipeline on purpose and prove, from the topics, that
nothing was lost or doubled and the books still balance.

A run, in its own namespace (fresh topics, group and state; its topics deleted at the end):
  1. start W workers (separate processes; one data dir each, shared keys);
  2. publish N commands of demo traffic (retries, key conflicts, captures, partial
     refunds, voids, invalid input and undecodable bytes mixed in);
  3. while they are processed, `kill -9` a random worker K times and restart it,
     restart the broker R times (one embedded node), and on an embedded cluster
     (PAYSTREAM_KAFKA_BROKERS=3) `kill -9` a random node B times, each at a random
     point of the progress; a killed node stays down while the cluster serves with
     the other two (acks=all, min ISR 2), then comes back;
  4. wait until every command is answered, every bad message dead-lettered and every
     money-moving event posted (stalls are supervised: a stalled worker is restarted);
  5. check from the topics (`check`): every command has exactly one outcome, no
     idempotency key was applied twice, no payment's events repeat or skip a
     version, `paystream audit` passes (signatures, chains, invariants 1-3, every
     entry balances, balances sum to zero per currency) and a replay from offset 0
     equals the live balances and chain heads.
The figures go to JSON; any non-zero loss, duplicate or imbalance exits non-zero.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from threading import Thread
from typing import Any

from connectors.kafka import admin, launcher
from connectors.vault.keys import FileKeyStore
from streams.client.books import (
    book_records,
    live_balances,
    live_chain_heads,
    public_keys,
)
from streams.client.broker import broker_config, cluster_config
from streams.client.observe import Observer
from streams.client.processes import WorkerProcess
from streams.client.publish import publish_commands
from streams.demo.run import generate, open_the_day
from streams.domain.audit import AuditReport, audit, compare, rebuild
from streams.harness.bench_peers import CLEANUP_TIMEOUT_S
from streams.harness.stats import peak_rss_bytes
from streams.settings import Settings, client_config
from streams.topics import declared_topics, discard_namespace, topic_names

# Commands per payment in demo traffic (creates, retries, follow-ups): to size N.
COMMANDS_PER_PAYMENT = 1.48
MAX_WORKERS = 8
MAX_FAULTS = 1_000
DRAIN_TIMEOUT_S = 1_800.0
# A big run drains longer: below this rate the run is given up on (a 2-core box under
# 40 kills answers ~25 commands/s; 100,000 commands then need over an hour).
DRAIN_MIN_RATE_PER_S = 10.0
BOOKS_TIMEOUT_S = 600.0
# A killed worker comes back after this long (a supervisor's restart delay).
RESTART_DELAY_S = 1.0
# Each worker watches its own partitions and exits when one stops while it is ready
# (streams/worker/probes.py StallWatch); `supervise` restarts it. No answer at all for this
# long restarts every worker: the backstop for a worker too wedged to watch itself.
# It must outlast a table restore, or each restart would begin the restore again.
BACKSTOP_STALL_S = 600.0
# A killed broker node stays down until this share of the commands was answered without
# it, and at least BROKER_DOWN_MIN_S (past the controller's broker session timeout, 9 s,
# so its leaderships do move), at most BROKER_DOWN_MAX_S (a cluster that stalls on two
# nodes gets its third back: the run records how much was answered meanwhile).
BROKER_DOWN_FRACTION = 0.1
BROKER_DOWN_MIN_S = 15.0
BROKER_DOWN_MAX_S = 90.0


@dataclass(frozen=True)
class Fault:
    at_fraction: float  # of the commands answered when it fires
    kind: str  # "kill" | "broker_restart" | "broker_kill"
    node: int = 0  # the cluster node a broker_kill takes down (1..nodes)


def supervised(fleet: Fleet, done: Callable[[], bool]) -> Callable[[], bool]:
    """`done`, with the fleet supervised at every look: a worker that exits once every
    command is answered (a node killed late in the run) is restarted, so the ledger's
    hop still drains instead of the wait running out on workers nobody restarts."""

    def check() -> bool:
        fleet.supervise()
        return done()

    return check


def plan(kills: int, broker_restarts: int, seed: int, broker_kills: int = 0, nodes: int = 1) -> list[Fault]:
    """The faults, at random points of the progress (between 5% and 90% answered); a
    broker kill's victim is any node, the controller or a partition leader included."""
    assert 0 <= kills <= MAX_FAULTS and 0 <= broker_restarts <= MAX_FAULTS and 0 <= broker_kills <= MAX_FAULTS
    assert broker_kills == 0 or nodes >= 3, "broker kills need a cluster of 3+ nodes"
    rng = random.Random(seed)
    faults = [Fault(rng.uniform(0.05, 0.9), "kill") for _ in range(kills)]
    faults += [Fault(rng.uniform(0.05, 0.9), "broker_restart") for _ in range(broker_restarts)]
    faults += [Fault(rng.uniform(0.05, 0.9), "broker_kill", rng.randint(1, nodes)) for _ in range(broker_kills)]
    return sorted(faults, key=lambda f: f.at_fraction)


@dataclass
class BrokerKill:
    """One node killed: what it was when it died and what the cluster did without it."""

    node: int
    controller: bool  # the active KRaft controller
    leaders: int  # partitions of the run's topics it led
    answered_at_kill: int
    answered_while_down: int = 0
    down_s: float = 0.0


@dataclass
class Figures:
    commands: int
    lost: int
    duplicated: int
    keys_applied_twice: int
    event_version_breaks: int
    unbalanced_currencies: int
    audit_ok: bool
    replay_matches: bool
    dead_letters: int  # distinct (by dlq_id)
    dead_letters_expected: int
    dead_letter_copies: int = 0  # the same dead letter written again (a redelivery the marks missed)
    kills: int = 0
    broker_restarts: int = 0
    broker_kills: int = 0
    # Workers the harness started again after they exited (crash-only: a transaction call
    # failing past its retries, say at a broker restart) or stalled; the kills not counted.
    worker_restarts: int = 0
    workers: int = 1
    elapsed_s: float = 0.0
    # The commands are published as fast as the producer goes (a burst far above what
    # the pipeline processes); the largest resident set any worker process reached.
    publish_rate_per_s: float = 0.0
    worker_peak_rss_mb: float = 0.0
    # The longest time between two outcomes (by their records' timestamps): how long a
    # fault (a worker or node killed, a worker exiting for a restart) left every
    # partition unanswered.
    longest_outcome_gap_s: float = 0.0
    audit_failures: list[str] = field(default_factory=list)
    broker_kill_log: list[BrokerKill] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.keys_applied_twice == 0
            and self.event_version_breaks == 0
            and self.unbalanced_currencies == 0
            and self.audit_ok
            and self.replay_matches
            and self.dead_letters == self.dead_letters_expected
            and self.dead_letter_copies == 0
        )


def check(
    commands: Iterable[Mapping[str, Any]],
    outcomes: Mapping[str, list[Mapping[str, Any]]],
    events: Mapping[str, list[Mapping[str, Any]]],
    report: AuditReport,
    replay_differences: int,
    dead_letters: int,
    dead_letters_expected: int,
    dead_letter_copies: int = 0,
) -> Figures:
    """The run's figures from what the topics hold. Pure."""
    commands = list(commands)
    ids = [c["command_id"] for c in commands]
    lost = sum(1 for c in ids if not outcomes.get(c))
    duplicated = sum(1 for c in ids if len(outcomes.get(c, ())) > 1)
    # One idempotency key of a merchant applied twice would show as two succeeded
    # (non-replay) answers for it, or as two payments' worth of authorizations.
    succeeded = Counter(
        (c["merchant_id"], c["idempotency_key"], c["kind"])
        for c in commands
        for o in outcomes.get(c["command_id"], ())[:1]
        if o["status"] == "succeeded"
    )
    authorized = Counter(pid for pid, es in events.items() for e in es if e["type"] == "authorized")
    twice = sum(1 for n in succeeded.values() if n > 1) + sum(1 for n in authorized.values() if n > 1)
    breaks = sum(
        1
        for es in events.values()
        if [e["version"] for e in es] != list(range(es[0]["version"], es[0]["version"] + len(es)))
    )
    return Figures(
        commands=len(ids),
        lost=lost,
        duplicated=duplicated,
        keys_applied_twice=twice,
        event_version_breaks=breaks,
        unbalanced_currencies=len(report.totals),
        audit_ok=report.ok,
        replay_matches=replay_differences == 0,
        dead_letters=dead_letters,
        dead_letters_expected=dead_letters_expected,
        dead_letter_copies=dead_letter_copies,
        audit_failures=[str(f) for f in report.failures[:10]],
    )


def longest_gap_s(timestamps_ms: Iterable[int]) -> float:
    """The longest stretch between consecutive timestamps, in seconds. Read from the
    outcome records' own timestamps (set when the worker sent them), not from when the
    run's observer read them: the observer stops reading while it restarts a node."""
    ordered = sorted(timestamps_ms)
    return max((b - a for a, b in zip(ordered, ordered[1:], strict=False)), default=0) / 1000


class Fleet:
    """W worker processes of one namespace, each with its own data dir (RocksDB state
    is single-opener), sharing the keys (and the vault: the card-vault topic)."""

    def __init__(self, settings: Settings, workers: int) -> None:
        assert 1 <= workers <= MAX_WORKERS
        self.peak_rss_bytes = 0
        self.procs = [
            WorkerProcess(s, s.data_dir / "worker.log")
            for s in (
                settings.model_copy(update={"data_dir": settings.data_dir / f"w{i}", "worker_name": f"w{i}"})
                for i in range(workers)
            )
        ]

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def kill_one(self, rng: random.Random) -> None:
        victim = rng.choice(self.procs)
        self.sample_rss()
        victim.kill()
        time.sleep(RESTART_DELAY_S)  # the supervisor's restart delay, not a sync
        victim.start()

    def supervise(self) -> None:
        for p in self.procs:
            p.supervise()

    def restart_stalled(self) -> None:
        for p in self.procs:
            p.restart("stalled")

    @property
    def worker_restarts(self) -> int:
        return sum(p.restarts for p in self.procs)

    def sample_rss(self) -> None:
        """Keep the largest peak RSS of the live workers (each process's own high-water mark)."""
        for p in self.procs:
            if p.alive():
                assert p.proc is not None
                self.peak_rss_bytes = max(self.peak_rss_bytes, peak_rss_bytes(p.proc.pid))

    def stop(self) -> None:
        self.sample_rss()
        for p in self.procs:
            p.stop()


class NodeKiller:
    """kill -9 nodes of the embedded cluster, one at a time, and bring each back once
    the cluster has served long enough without it (`tick`, from the progress loop)."""

    def __init__(self, base: Settings, settings: Settings, total: int) -> None:
        self.cluster = cluster_config(base, base.kafka_brokers)  # the cluster's home is under the base data dir
        self.conn = client_config(settings)
        self.topics = [spec.name for spec in declared_topics(settings)]
        self.total = total
        self.log: list[BrokerKill] = []
        self._down_since_s: float | None = None

    def kill(self, node: int, done: int) -> None:
        self.restore(done)  # one node down at a time: two down would lose min ISR 2
        record = BrokerKill(
            node,
            launcher.quorum_leader(self.cluster) == node,
            admin.leaders_on(self.conn, node, self.topics, timeout_s=10),
            done,
        )
        launcher.kill_node(self.cluster, node)
        self.log.append(record)
        self._down_since_s = time.monotonic()

    def tick(self, done: int) -> None:
        if self._down_since_s is None:
            return
        down_s = time.monotonic() - self._down_since_s
        served = done - self.log[-1].answered_at_kill >= BROKER_DOWN_FRACTION * self.total
        if (served and down_s >= BROKER_DOWN_MIN_S) or down_s >= BROKER_DOWN_MAX_S:
            self.restore(done)

    def restore(self, done: int) -> None:
        """Restart the node that is down (up_cluster waits until it answers)."""
        if self._down_since_s is None:
            return
        record = self.log[-1]
        record.down_s = round(time.monotonic() - self._down_since_s, 1)
        record.answered_while_down = done - record.answered_at_kill
        launcher.up_cluster(self.cluster)
        self._down_since_s = None


def run_chaos(
    base: Settings,
    *,
    commands: int,
    kills: int,
    broker_restarts: int,
    workers: int,
    seed: int,
    broker_kills: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> Figures:
    cluster = base.kafka_embedded and base.kafka_brokers > 1
    if broker_kills and not cluster:
        raise ValueError(
            "broker kills need the embedded cluster: PAYSTREAM_KAFKA_BROKERS=3 (`paystream kafka up --brokers 3`)"
        )
    if broker_restarts and cluster:
        raise ValueError("broker restarts stop the single embedded broker; on a cluster, kill a node (--broker-kills)")
    namespace = f"chaos-{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={
            "namespace": namespace,
            "data_dir": base.data_dir / namespace,
            "keys_dir": base.data_dir / namespace / "keys",
            "providers_dir": base.data_dir / namespace / "providers",
        }
    )
    try:
        return _run(base, settings, commands, kills, broker_restarts, workers, seed, broker_kills, on_progress)
    finally:
        # The figures are taken from the topics, then they go (every partition holds broker
        # file descriptors); the workers' logs stay in the run's data dir.
        discard_namespace(settings, CLEANUP_TIMEOUT_S)


def _run(
    base: Settings,
    settings: Settings,
    commands: int,
    kills: int,
    broker_restarts: int,
    workers: int,
    seed: int,
    broker_kills: int,
    on_progress: Callable[[int, int], None] | None,
) -> Figures:
    namespace = settings.namespace
    FileKeyStore(settings.keys_dir).init()
    payments = max(1, round(commands / COMMANDS_PER_PAYMENT))
    traffic = generate(payments, seed, namespace, datetime.now(UTC))
    sent = [c for c in traffic.items if isinstance(c, dict)]
    admin.ensure_topics(client_config(settings), declared_topics(settings))
    # The demo's merchants registered, as the demo does: their admission and splits run
    # through the kills too, and every assignment holds the command partitions until
    # the registry is read to its end (streams/runtime/catchup.py).
    open_the_day(settings, traffic.items[0]["occurred_at"] - timedelta(hours=1))
    rng = random.Random(seed)
    faults = plan(kills, broker_restarts, seed, broker_kills, base.kafka_brokers)
    figures_faults = Counter()
    fleet = Fleet(settings, workers)
    killer = NodeKiller(base, settings, len(traffic.command_ids)) if broker_kills else None
    started = time.monotonic()
    with Observer(settings) as observer:
        fleet.start()
        published_in_s: list[float] = []

        def publish() -> None:
            t0 = time.monotonic()
            publish_commands(settings, traffic.items)
            published_in_s.append(time.monotonic() - t0)

        publisher = Thread(target=publish, daemon=True)
        publisher.start()

        def progress(done: int, dlq: int) -> None:
            fleet.sample_rss()  # before a restart loses the process's high-water mark
            fleet.supervise()
            if killer is not None:
                killer.tick(done)
            while faults and done >= faults[0].at_fraction * len(traffic.command_ids):
                fault = faults.pop(0)
                if fault.kind == "kill":
                    fleet.kill_one(rng)
                elif fault.kind == "broker_kill":
                    assert killer is not None
                    killer.kill(fault.node, done)
                else:
                    restart_broker(base)  # the broker's home is under the base data dir
                figures_faults[fault.kind] += 1
            if on_progress is not None:
                on_progress(done, len(traffic.command_ids))

        try:
            answered = observer.wait_for(
                traffic.command_ids,
                traffic.garbage,
                drain_timeout_s(len(sent)),
                progress,
                on_stall=fleet.restart_stalled,
                stall_s=BACKSTOP_STALL_S,
            )
            if killer is not None:  # every command was answered with the node down: the run ends on a whole cluster
                killer.restore(len(observer.outcomes))
            closed = answered and observer.wait_until(supervised(fleet, observer.books_applied), BOOKS_TIMEOUT_S)
            # Whatever the topics hold now is what the checks judge; late answers would show as duplicates.
            observer.wait_until(lambda: observer.poll(1.0) == 0, 30)
        finally:
            fleet.stop()  # also when a stalled worker gave up: no worker outlives the run
            if killer is not None:
                killer.restore(len(observer.outcomes))  # nor does a node stay down
        publisher.join(timeout=60)
        outcomes, events, dlq = dict(observer.outcomes), dict(observer.events), len(observer.dead_letters)
        dlq_copies = observer.dead_letter_copies
        first_outcome_at = dict(observer.first_outcome_at)
    names = topic_names(settings)
    records = list(book_records(settings))  # one read of the topics serves the audit and the replay
    report = audit(records, public_keys(settings), events_topic=names.events, entries_topic=names.ledger)
    rebuilt = rebuild(records, events_topic=names.events, entries_topic=names.ledger)
    differences = compare(live_balances(settings), live_chain_heads(settings), rebuilt)
    figures = check(sent, outcomes, events, report, len(differences), dlq, traffic.garbage, dlq_copies)
    figures.kills, figures.broker_restarts = figures_faults["kill"], figures_faults["broker_restart"]
    figures.broker_kills = figures_faults["broker_kill"]
    figures.broker_kill_log = killer.log if killer is not None else []
    figures.worker_restarts, figures.workers = fleet.worker_restarts, workers
    figures.worker_peak_rss_mb = round(fleet.peak_rss_bytes / 2**20, 1)
    if published_in_s:
        figures.publish_rate_per_s = round(len(traffic.items) / max(published_in_s[0], 1e-3), 1)
    figures.elapsed_s = round(time.monotonic() - started, 1)
    figures.longest_outcome_gap_s = round(longest_gap_s(ts for _, ts, _ in first_outcome_at.values()), 1)
    if not closed:
        figures.audit_failures.insert(0, "the books did not close before the timeout")
    return figures


def drain_timeout_s(commands: int) -> float:
    """How long a run waits for every answer: at least DRAIN_TIMEOUT_S, more for a big run."""
    return max(DRAIN_TIMEOUT_S, commands / DRAIN_MIN_RATE_PER_S)


def restart_broker(settings: Settings) -> None:
    """Stop and start the embedded broker (the workers, the publisher and the observer
    ride it out: their clients reconnect)."""
    if not settings.kafka_embedded:
        raise ValueError("broker restarts need the embedded broker (PAYSTREAM_KAFKA_BOOTSTRAP is external)")

    cfg = broker_config(settings)
    launcher.down(cfg)
    launcher.up(cfg)


def to_json(figures: Figures) -> dict[str, Any]:
    return asdict(figures) | {"ok": figures.ok}
