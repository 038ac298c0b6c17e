"""Every alert in deploy/prometheus/alerts.yml has a test that makes it fire from
metrics the real code path produced (tests/unit/deploy/alert_support.py says how the
rule is evaluated). The alerts of the scheduler's metrics are here; the worker's are
in tests/integration/streams/worker/test_alerts_run.py (they need a running worker)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from streams import metrics
from streams.client.processes import wait_until
from streams.domain.reconcile import ProviderTxn, write_report
from streams.jobs.scheduler import JOB_ORDER, default_jobs
from streams.settings import Settings
from tests.unit.deploy.alert_support import RULES, by, expr, free_port, increase, increase_by, render, sample, scrape
from tests.unit.streams.jobs.test_scheduler import Clock, Offline, _NoProducer

# alert -> the test that makes it fire ("module::function").
HERE, RUN = "tests/unit/deploy/test_alerts_fire.py::", "tests/integration/streams/worker/test_alerts_run.py::"
FIRING = {
    "PaystreamSettlementDiscrepancy": HERE + "test_settlement_discrepancy_fires_from_the_schedulers_reconcile_job",
    "PaystreamDailyJobFailed": HERE + "test_daily_job_failed_fires_when_a_job_raises",
    "PaystreamClockStalled": HERE + "test_clock_stalled_fires_when_the_broker_takes_no_tick",
    "PaystreamDeadLetters": RUN + "test_the_workers_alerts_fire",
    "PaystreamSuccessRateLow": RUN + "test_the_workers_alerts_fire",
    "PaystreamLatencyP99High": RUN + "test_the_workers_alerts_fire",
    "PaystreamConsumerLagGrowing": RUN + "test_consumer_lag_growing_fires_from_the_lag_watch",
    "PaystreamLedgerImbalance": HERE + "test_ledger_imbalance_fires_from_the_workers_gauge_and_clears",
    "PaystreamBreakerOpen": HERE + "test_breaker_open_fires_while_a_partitions_breaker_is_open",
    "PaystreamFraudSpike": HERE + "test_fraud_spike_fires_when_todays_hour_reviews_twice_yesterdays_share",
}
REPO = Path(__file__).resolve().parents[3]


def test_every_alert_has_a_firing_test_or_is_listed_as_pending() -> None:
    assert set(FIRING) == set(RULES)
    for where in set(FIRING.values()):
        path, name = where.split("::")
        assert f"def {name}(" in (REPO / path).read_text(), where


def test_settlement_discrepancy_fires_from_the_schedulers_reconcile_job(
    tmp_path: Path, ch_url: str, ch, ch_database: str
) -> None:
    assert (
        expr("PaystreamSettlementDiscrepancy")
        == "sum by (kind) (increase(paystream_settlement_discrepancies_total[15m])) > 0"
    )
    settings = Settings(data_dir=tmp_path, clickhouse_url=ch_url, clickhouse_database=ch_database)
    day = date(2026, 12, 5)
    # A provider settled a capture our books never posted: missing_in_ledger.
    (settings.reports_dir / day.isoformat()).mkdir(parents=True)
    write_report(
        settings.reports_dir / day.isoformat() / "simcard.csv",
        [ProviderTxn("simcard", "pk_unknown", "pay_unknown", "USD", 1_000, 30, day, "capture")],
    )
    port = free_port()
    metrics.serve(port)  # as `paystream scheduler run` serves its jobs' metrics
    before = scrape(port)
    detail = default_jobs(settings)["reconcile"](day)
    assert "missing_in_ledger 1" in detail
    after = scrape(port)
    firing = {
        k for k, v in increase_by(before, after, "paystream_settlement_discrepancies_total", "kind").items() if v > 0
    }
    assert firing == {"missing_in_ledger"}


def test_daily_job_failed_fires_when_a_job_raises() -> None:
    assert (
        expr("PaystreamDailyJobFailed") == 'sum by (job) (increase(paystream_job_runs_total{status="failed"}[1h])) > 0'
    )

    def fails(_day: date) -> str:
        raise RuntimeError("ClickHouse unavailable")

    jobs = {name: (fails if name == "payouts" else (lambda _d: "ok")) for name in JOB_ORDER}
    s = Offline(
        Settings(scheduler_jobs="settle,payouts", scheduler_jobs_delay_s=0, scheduler_tick_lag_s=0),
        jobs,
        Clock(datetime(2026, 12, 6, 0, 0, 1, tzinfo=UTC)),
    )
    before = render()
    assert [status for _, _, status in s.run_due()] == ["succeeded", "failed"]
    after = render()
    firing = {
        job
        for job, v in increase_by(before, after, "paystream_job_runs_total", "job", status="failed").items()
        if v > 0
    }
    assert firing == {"payouts"}


def test_clock_stalled_fires_when_the_broker_takes_no_tick() -> None:
    assert expr("PaystreamClockStalled") == "sum(increase(paystream_scheduler_ticks_total[5m])) == 0"
    settings = Settings(scheduler_jobs="", scheduler_tick_interval_s=0.1)

    def window(producer: _NoProducer) -> float:
        """The ticks' increase over a window of the scheduler's loop with this broker."""
        s = Offline(settings, {}, Clock(datetime(2026, 12, 6, tzinfo=UTC)), producer)
        stop = threading.Event()
        loop = threading.Thread(target=s.serve, args=(stop,))
        before, failures = render(), sample("paystream_scheduler_tick_failures_total")
        loop.start()
        try:
            # Three intervals' worth of attempts, acknowledged or not.
            assert wait_until(
                lambda: (
                    sample("paystream_scheduler_tick_failures_total") >= failures + 3
                    or increase(before, render(), "paystream_scheduler_ticks_total") >= 3
                ),
                10,
                0.05,
            )
        finally:
            stop.set()
            loop.join(10)
        return increase(before, render(), "paystream_scheduler_ticks_total")

    assert window(_NoProducer(unacked=0)) > 0  # ticking: the alert stays quiet
    assert window(_NoProducer(unacked=1)) == 0  # nothing acknowledged: the alert's condition holds


def test_ledger_imbalance_fires_from_the_workers_gauge_and_clears() -> None:
    # The ledger stage refuses an unbalanced entry, so only a bug unbalances the books:
    # the test feeds the worker's gauge update (probes.set_ledger_gauge) such balances.
    assert expr("PaystreamLedgerImbalance") == "max by (currency) (abs(paystream_ledger_imbalance_minor)) != 0"
    from streams.domain.ledger import balance_key, encode_balance, house_account, merchant_account
    from streams.worker import probes

    seen: set[str] = set()
    balanced = [
        (balance_key(merchant_account("m_a", "pending"), "CHF"), encode_balance(-500)),
        (balance_key(house_account("clearing", 0), "CHF"), encode_balance(500)),
    ]
    probes.set_ledger_gauge(balanced, seen)
    assert by(render(), "paystream_ledger_imbalance_minor", "currency", currency="CHF") == {"CHF": 0}  # silent
    probes.set_ledger_gauge(
        balanced + [(balance_key(merchant_account("m_b", "pending"), "CHF"), encode_balance(7))], seen
    )
    firing = {
        c: abs(v) for c, v in by(render(), "paystream_ledger_imbalance_minor", "currency", currency="CHF").items()
    }
    assert firing == {"CHF": 7}  # max by currency of abs != 0: fires
    probes.set_ledger_gauge(balanced, seen)  # balanced again: the series stays, at 0, and the alert clears
    assert by(render(), "paystream_ledger_imbalance_minor", "currency", currency="CHF") == {"CHF": 0}


def test_breaker_open_fires_while_a_partitions_breaker_is_open() -> None:
    # The provider's real breaker (connectors/providers/breaker.py) fails its way open on
    # one partition; the worker's board (probes.BreakerBoard.export, as the payments
    # handler calls it) sets the gauge the rule reads, the worst over partitions.
    assert expr("PaystreamBreakerOpen") == "max by (provider) (paystream_breaker_state) == 2"
    assert RULES["PaystreamBreakerOpen"]["for"] == "2m"
    from connectors.providers.breaker import Breaker, BreakerConfig, allow, record
    from streams.worker import probes

    cfg, board = BreakerConfig(), probes.BreakerBoard(("acq_alert_a", "acq_alert_b"))
    board.export()
    assert by(render(), "paystream_breaker_state", "provider", provider="acq_alert_.") == {
        "acq_alert_a": 0,
        "acq_alert_b": 0,
    }
    b, opened = Breaker("acq_alert_a"), []
    for i in range(cfg.min_calls):
        b, changes = record(b, cfg, 1_000 + i, "timeout", 5_000)
        opened += changes
    assert [c.to_state for c in opened] == ["open"]
    board.export([(3, opened[0])])
    firing = by(render(), "paystream_breaker_state", "provider", provider="acq_alert_.")
    assert {p for p, level in firing.items() if level == 2} == {"acq_alert_a"}  # == 2: fires (after 2m of it)
    # Another partition's breaker of the same provider still closed: the worst holds it open.
    board.export([(4, replace(opened[0], from_state="open", to_state="closed"))])
    assert by(render(), "paystream_breaker_state", "provider", provider="acq_alert_a") == {"acq_alert_a": 2}
    # Past the cool-down the breaker half-opens on the next call: the rule stops matching.
    _, half, probing = allow(b, cfg, 1_000 + cfg.min_calls + cfg.open_ms)
    assert half and [c.to_state for c in probing] == ["half_open"]
    board.export([(3, probing[0])])
    assert by(render(), "paystream_breaker_state", "provider", provider="acq_alert_a") == {"acq_alert_a": 1}


def test_fraud_spike_fires_when_todays_hour_reviews_twice_yesterdays_share() -> None:
    # The real risk stage decides creates (shipped model and rules); the worker counts each
    # decision (probes.count_fraud_decision). Four scrapes: an hour yesterday, an hour today.
    flagged_rate = 'sum(rate(paystream_fraud_decisions_total{action=~"decline|review"}[1h]{o}))'
    all_rate = "sum(rate(paystream_fraud_decisions_total[1h]{o}))"
    assert expr("PaystreamFraudSpike") == (
        f"( {flagged_rate} / {all_rate} ) > 2 * ( {flagged_rate} / {all_rate} ) and "
        'sum(increase(paystream_fraud_decisions_total{action=~"decline|review"}[1h])) > 50'
    ).replace("{o}", "", 2).replace("{o}", " offset 1d", 2)
    from models.scoring import Scorer
    from models.train import SHIPPED_ARTIFACT
    from schemas.times import to_ms
    from streams.stages import risk
    from streams.worker import probes
    from tests.unit.streams.stages.test_risk_stage import RETENTION, T0, Table, create

    scorer, table = Scorer.load(SHIPPED_ARTIFACT), Table()

    def decide(cmds: list[dict]) -> None:
        for cmd in cmds:
            effects = risk.handle(cmd, 0, to_ms(cmd["occurred_at"]), table.get, scorer, RETENTION)
            table.apply(effects.writes)
            probes.count_fraud_decision(effects)

    def flagged_share(before: dict, after: dict) -> float:
        flagged = increase(before, after, "paystream_fraud_decisions_total", action="decline|review")
        return flagged / increase(before, after, "paystream_fraud_decisions_total")

    yesterday = render()
    # Yesterday's hour: calm traffic and one card tried fifteen times (some reviews: a base rate).
    decide(
        [create(i, card=f"tok_calm_{i}", at=T0 + timedelta(minutes=2 * i)) for i in range(30)]
        + [create(50 + i, card="tok_eager", at=T0 + timedelta(seconds=36 * i)) for i in range(15)]
    )
    base = flagged_share(yesterday, render())
    assert base > 0
    today = render()
    # A day later, the same calm traffic plus four cards tried 25 times each in a quarter hour.
    later = T0 + timedelta(days=1)
    decide(
        [create(100 + i, card=f"tok_calm_{100 + i}", at=later + timedelta(minutes=2 * i)) for i in range(30)]
        + [
            create(1_000 * c + i, card=f"tok_burst_{c}", at=later + timedelta(seconds=36 * i))
            for c in range(1, 5)
            for i in range(25)
        ]
    )
    after = render()
    spike = flagged_share(today, after)
    flagged = increase(today, after, "paystream_fraud_decisions_total", action="decline|review")
    assert spike > 2 * base and flagged > 50, (spike, base, flagged)  # fires
    quiet = render()
    decide(
        [create(300 + i, card=f"tok_calm_{300 + i}", at=later + timedelta(hours=1, minutes=2 * i)) for i in range(30)]
    )
    assert not flagged_share(quiet, render()) > 2 * base  # calm again: it clears
