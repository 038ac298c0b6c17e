"""The chaos run's plan and its verdict, over plain values."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.kafka import admin
from streams.domain.audit import AuditReport, Failure
from streams.harness import chaos
from streams.harness.chaos import Figures, check, longest_gap_s, plan, run_chaos
from streams.settings import Settings


def report(ok: bool = True, totals: dict[str, int] | None = None) -> AuditReport:
    failures = () if ok else (Failure("payment-events", 0, 3, "bad_signature", "x"),)
    return AuditReport(
        records=0,
        events=0,
        entries=0,
        signatures_verified=0,
        events_authenticated=0,
        partitions=0,
        payments=0,
        duplicate_entries=0,
        accounts=0,
        totals=totals or {},
        failures=failures,
        failures_total=len(failures),
    )


def cmd(i: int, kind: str = "create", key: str | None = None) -> dict:
    return {"command_id": f"c{i}", "merchant_id": "m", "idempotency_key": key or f"k{i}", "kind": kind}


def out(status: str = "succeeded") -> dict:
    return {"status": status}


def event(pid: str, version: int, type_: str = "captured") -> dict:
    return {"payment_id": pid, "version": version, "type": type_}


def test_the_plan_is_sorted_seeded_and_inside_the_run() -> None:
    faults = plan(5, 2, seed=3)
    assert [f.kind for f in faults].count("kill") == 5 and [f.kind for f in faults].count("broker_restart") == 2
    assert [f.at_fraction for f in faults] == sorted(f.at_fraction for f in faults)
    assert all(0.05 <= f.at_fraction <= 0.9 for f in faults)
    assert plan(5, 2, seed=3) == faults and plan(5, 2, seed=4) != faults


def test_broker_kills_pick_any_node_from_the_seed_and_leave_the_other_faults_alone() -> None:
    faults = plan(5, 0, seed=3, broker_kills=30, nodes=3)
    kills = [f for f in faults if f.kind == "broker_kill"]
    assert len(kills) == 30 and {f.node for f in kills} == {1, 2, 3}
    assert all(0.05 <= f.at_fraction <= 0.9 for f in kills)
    assert plan(5, 0, seed=3, broker_kills=30, nodes=3) == faults
    assert [f for f in faults if f.kind == "kill"] == plan(5, 0, seed=3), "adding broker kills moves no worker kill"


def test_broker_kills_need_a_cluster() -> None:
    with pytest.raises(AssertionError, match="3\\+ nodes"):
        plan(1, 0, seed=3, broker_kills=1, nodes=1)


@pytest.mark.parametrize(
    ("brokers", "restarts", "kills", "error"),
    [
        (1, 0, 1, "need the embedded cluster"),
        (3, 1, 0, "single embedded broker"),
    ],
)
def test_a_fault_the_broker_cannot_take_is_refused_before_anything_starts(
    tmp_path: Path, brokers: int, restarts: int, kills: int, error: str
) -> None:
    settings = Settings(
        kafka_bootstrap="localhost:48100", kafka_embedded_port=48100, kafka_brokers=brokers, data_dir=tmp_path
    )
    with pytest.raises(ValueError, match=error):
        run_chaos(settings, commands=10, kills=0, broker_restarts=restarts, workers=1, seed=1, broker_kills=kills)
    assert not list(tmp_path.iterdir())


def test_a_run_deletes_its_namespace_even_when_it_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[list[str]] = []
    discarded: list[tuple[list[str], list[str]]] = []

    def fail(*_: object) -> None:
        raise RuntimeError("the broker went away")

    monkeypatch.setattr(admin, "ensure_topics", lambda _conn, specs: created.append([s.name for s in specs]))
    monkeypatch.setattr(
        admin, "discard_topics", lambda _conn, names, prefixes, timeout_s: discarded.append((names, prefixes))
    )
    monkeypatch.setattr(chaos, "open_the_day", fail)  # the first broker call after the topics are made
    with pytest.raises(RuntimeError, match="went away"):
        run_chaos(Settings(data_dir=tmp_path), commands=10, kills=0, broker_restarts=0, workers=1, seed=1)
    ((topics,),) = [created]
    ((names, prefixes),) = discarded
    assert all(t in names or t.startswith(tuple(prefixes)) for t in topics)


def test_a_clean_run_passes() -> None:
    commands = [cmd(1), cmd(2), cmd(3, key="k1")]  # c3 retries c1's key: a replay
    outcomes = {"c1": [out()], "c2": [out("rejected")], "c3": [out("replayed")]}
    events = {"p1": [event("p1", 1, "authorized"), event("p1", 2)]}
    figures = check(commands, outcomes, events, report(), 0, dead_letters=2, dead_letters_expected=2)
    assert figures.ok and (figures.commands, figures.lost, figures.duplicated) == (3, 0, 0)


def test_each_kind_of_damage_is_counted_and_fails_the_run() -> None:
    commands = [cmd(1), cmd(2), cmd(3, key="k1")]
    base = dict(
        outcomes={"c1": [out()], "c2": [out()], "c3": [out("replayed")]}, events={"p1": [event("p1", 1, "authorized")]}
    )

    def figures(**changes) -> Figures:
        args = base | changes
        return check(
            commands,
            args["outcomes"],
            args["events"],
            changes.get("report", report()),
            changes.get("diffs", 0),
            changes.get("dlq", 0),
            0,
            changes.get("copies", 0),
        )

    assert figures(outcomes={"c1": [out()], "c3": [out("replayed")]}).lost == 1
    assert figures(outcomes={"c1": [out(), out()], "c2": [out()], "c3": [out("replayed")]}).duplicated == 1
    assert figures(outcomes={"c1": [out()], "c2": [out()], "c3": [out()]}).keys_applied_twice == 1
    assert figures(events={"p1": [event("p1", 1, "authorized"), event("p1", 2, "authorized")]}).keys_applied_twice == 1
    assert figures(events={"p1": [event("p1", 1, "authorized"), event("p1", 3)]}).event_version_breaks == 1
    assert figures(report=report(totals={"USD": 5})).unbalanced_currencies == 1
    assert not figures(report=report(ok=False)).audit_ok
    assert not figures(diffs=2).replay_matches
    assert not figures(dlq=1).ok
    assert not figures(copies=1).ok, "a bad message is dead-lettered once"
    for f in (
        figures(outcomes={"c1": [out()], "c3": [out("replayed")]}),
        figures(diffs=2),
        figures(report=report(ok=False)),
    ):
        assert not f.ok


def test_the_backstop_outlasts_a_worker_s_own_stall_detector() -> None:
    # The run's global "no answer" restart once fired at 45 s, during table restores, and
    # each restart began the restore again; the worker's own detector comes first now.
    from streams.harness.chaos import BACKSTOP_STALL_S
    from streams.settings import Settings

    assert BACKSTOP_STALL_S >= 5 * Settings().worker_stall_s


def test_peak_rss_is_the_process_high_water_mark() -> None:
    import subprocess
    import sys

    from streams.harness.stats import peak_rss_bytes

    # A fresh process (this one's peak may already be above anything it allocates now):
    # it writes 64 MiB, frees them, says so, and waits to be read.
    code = (
        "import sys; b = b'\\x01' * (64 * 2**20); del b; "
        "sys.stdout.write('freed\\n'); sys.stdout.flush(); sys.stdin.read()"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"freed\n"
        assert peak_rss_bytes(child.pid) >= 64 * 2**20  # the high-water mark keeps the freed block
    finally:
        child.kill()
        child.wait()
    assert peak_rss_bytes(2**22 + 1) == 0  # no such process: no figure, no crash


def test_a_big_run_waits_longer_for_its_answers() -> None:
    from streams.harness.chaos import DRAIN_TIMEOUT_S, drain_timeout_s

    assert drain_timeout_s(3_000) == DRAIN_TIMEOUT_S
    assert drain_timeout_s(100_000) >= 100_000 / 25  # the rate measured under 40 kills on 2 cores


def test_the_longest_outcome_gap_is_between_consecutive_timestamps_in_any_order() -> None:
    assert longest_gap_s([5_000, 1_000, 1_200, 26_000, 26_100]) == 21.0
    assert longest_gap_s([7]) == 0.0 and longest_gap_s([]) == 0.0


def test_the_books_wait_keeps_restarting_workers_that_exit() -> None:
    """After every command is answered the run waits for the ledger's hop; a worker
    that exits then (a node killed late) must still be restarted, or the wait runs out."""

    class Fleet:
        looks = 0

        def supervise(self) -> None:
            self.looks += 1

    fleet = Fleet()
    check = chaos.supervised(fleet, lambda: fleet.looks >= 3)  # type: ignore[arg-type]
    assert [check(), check(), check()] == [False, False, True]
    assert fleet.looks == 3
