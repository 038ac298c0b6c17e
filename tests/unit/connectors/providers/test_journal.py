"""The providers' journal: a rail remembers across restarts and across processes
sharing the dir; torn and foreign lines are skipped and counted, never a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from connectors.providers.journal import MARKER, Journal, JournalError
from connectors.providers.rails import DAY_MS, Rail, build_rails, day_of_ms, load_rail_configs
from connectors.providers.simulated import Call

T0_MS = 1_795_000_000_000  # 2026-11-18, some event time
VISA = ("424242", "4242")


def call(pid: str = "pay_1", at_ms: int = T0_MS, currency: str = "USD") -> Call:
    return Call(pid, currency, at_ms)


def rail(tmp: Path, name: str = "acq_north", seed: int = 7, max_records: int = 1_000, **changes: object) -> Rail:
    return Rail(replace(load_rail_configs()[name], **changes), seed, max_records=max_records, journal_dir=tmp)


def lines(tmp: Path, name: str = "acq_north") -> list[bytes]:
    return (tmp / f"{name}.jsonl").read_bytes().splitlines()


def traffic(r: Rail, n: int = 30) -> None:
    """Authorize, capture (and refund a third of) n payments, a day apart in halves."""
    for i in range(n):
        at = T0_MS + (i % 2) * DAY_MS
        if r.authorize(f"a{i}", *VISA, 1_000 + i, "USD", call(f"p{i}", at)).status == "approved":
            r.capture(f"c{i}", *VISA, 1_000 + i, call(f"p{i}", at + 1))
            if i % 3 == 0:
                r.refund(f"r{i}", 500, call(f"p{i}", at + 2))


def test_a_restarted_rail_answers_from_its_journal_and_records_nothing_new(tmp_path):
    before = rail(tmp_path, decline_per_mille=500)
    first = [before.authorize(f"k{i}", *VISA, 1_000, "USD", call(f"p{i}")) for i in range(40)]
    assert {a.status for a in first} == {"approved", "declined"}
    written = lines(tmp_path)
    assert len(written) == 40
    after = rail(tmp_path, decline_per_mille=500)  # the worker restarted
    assert after.records == before.records
    # a redelivered command is the recorded answer, even under another event time
    again = [after.authorize(f"k{i}", *VISA, 1_000, "USD", call(f"p{i}", T0_MS + 9_000)) for i in range(40)]
    assert [(a.status, a.reason) for a in again] == [(a.status, a.reason) for a in first]
    assert lines(tmp_path) == written and len(after.records) == 40
    assert after.records["authorize", "k3"].at_ms == T0_MS  # the first call's event time


def test_two_rails_over_one_dir_see_each_others_records(tmp_path):
    w1, w2 = rail(tmp_path), rail(tmp_path)  # two workers, both started
    assert w1.authorize("k1", *VISA, 2_000, "USD", call()).status == "approved"
    # the partition moved: w2 never saw k1, the provider did
    assert w2.status("k1", *VISA, 2_000, call(at_ms=T0_MS + 5)).status == "approved"
    assert w2.capture("c1", *VISA, 2_000, call()).fee_minor == 75
    assert w1.capture("c1", *VISA, 2_000, call(at_ms=T0_MS + 7)).fee_minor == 75  # w1 reads w2's capture
    assert len(lines(tmp_path)) == 2
    assert w1.records == w2.records
    w3 = rail(tmp_path)
    w1.capture("c2", *VISA, 4_000, call())
    # the provider's report and view hold every worker's records
    assert [row.provider_ref for row in w3.settlement_report(day_of_ms(T0_MS) + timedelta(days=1))] == ["c1", "c2"]
    assert list(w3.authorized()) == ["pay_1"]


def test_a_bank_transfer_accepted_by_one_worker_is_known_to_another(tmp_path):
    w1, w2 = rail(tmp_path, "bank_ach"), rail(tmp_path, "bank_ach")
    w1.capture("c1", *VISA, 5_000, call())
    assert w2.transfer_status("c1", T0_MS + 2 * DAY_MS) == "settled"


def test_settlement_reports_are_the_same_after_a_reload(tmp_path):
    days = [day_of_ms(T0_MS) + timedelta(days=d) for d in range(8)]
    for name in ("acq_north", "bank_ach"):
        live = rail(tmp_path, name, return_per_mille=300)
        traffic(live)
        reloaded = rail(tmp_path, name, return_per_mille=300)
        reports = [live.settlement_report(d) for d in days]
        assert sum(map(len, reports)) >= 20
        assert [reloaded.settlement_report(d) for d in days] == reports
    assert any(row.kind == "return" for d in days for row in reloaded.settlement_report(d))


def test_money_stays_integer_on_disk(tmp_path):
    r = rail(tmp_path)
    r.capture("c1", *VISA, 12_345, call())
    (line,) = lines(tmp_path)
    assert line.startswith(MARKER)
    obj = json.loads(line)
    assert obj["amount_minor"] == 12_345 and type(obj["amount_minor"]) is int and obj["fee_minor"] == 333
    assert obj["at_ms"] == T0_MS


def test_a_torn_last_line_is_skipped_and_counted(tmp_path, caplog):
    r = rail(tmp_path)
    r.authorize("k1", *VISA, 1_000, "USD", call())
    (good,) = lines(tmp_path)
    with (tmp_path / "acq_north.jsonl").open("ab") as f:
        f.write(good.replace(b'"k1"', b'"k2"')[:40])  # the writer died mid-line
    crashed = rail(tmp_path)  # starts over the torn tail: no crash, the good record kept
    assert list(crashed.records) == [("authorize", "k1")]
    crashed.authorize("k3", *VISA, 1_000, "USD", call())  # lands right after the torn bytes
    fresh = rail(tmp_path)
    assert list(fresh.records) == [("authorize", "k1"), ("authorize", "k3")]
    assert fresh.journal is not None and fresh.journal.torn == 1 and fresh.journal.bad == 0
    assert "torn" in caplog.text
    # the writer reads its own glued line back the same way
    assert crashed.status("k2", *VISA, 1_000, call()).reason == "not_processed"
    assert crashed.journal is not None and crashed.journal.torn == 1


def test_a_line_being_written_is_left_for_the_next_read(tmp_path):
    j = Journal(tmp_path / "x.jsonl")
    line = b'{"v":1,"n":7}\n'
    with (tmp_path / "x.jsonl").open("ab") as f:
        f.write(line[:6])
        f.flush()
        assert list(j.read_new(dict)) == [] and j.offset == 0
        f.write(line[6:])
    assert list(j.read_new(dict)) == [{"n": 7}] and j.offset == len(line) and j.torn == 0


def test_lines_that_are_not_records_are_skipped_and_counted(tmp_path):
    r = rail(tmp_path)
    r.authorize("k1", *VISA, 1_000, "USD", call())
    (good,) = lines(tmp_path)
    with (tmp_path / "acq_north.jsonl").open("ab") as f:
        f.write(
            b"garbage\n"
            + good.replace(b'"amount_minor":1000', b'"amount_minor":10.5')
            + b"\n"
            + good.replace(b'"authorize"', b'"teleport"')
            + b"\n\n"
        )
    again = rail(tmp_path)
    assert list(again.records) == [("authorize", "k1")]
    assert again.journal is not None and again.journal.bad == 3 and again.journal.torn == 0


def test_loading_keeps_the_newest_max_records(tmp_path):
    r = rail(tmp_path)
    for i in range(5):
        r.authorize(f"k{i}", *VISA, 1_000, "USD", call())
    small = rail(tmp_path, max_records=3)
    assert [k for _, k in small.records] == ["k2", "k3", "k4"] and small.forgotten == 2


def test_build_rails_gives_each_rail_its_file(tmp_path):
    rails = build_rails(1, journal_dir=tmp_path / "providers")
    assert sorted(p.name for p in (tmp_path / "providers").iterdir()) == sorted(f"{n}.jsonl" for n in rails)


def test_an_unusable_dir_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(JournalError, match="cannot open the provider journal"):
        rail(tmp_path / "file")


WORKER = """
import sys
from pathlib import Path
from connectors.providers.rails import Rail, load_rail_configs
from connectors.providers.simulated import Call
r = Rail(load_rail_configs()["acq_north"], 7, journal_dir=Path(sys.argv[1]))
sys.stdin.readline()  # start together
for i in range(300):
    r.authorize(f"k{i}", "424242", "4242", 1_000, "USD", Call(f"p{i}", "USD", 1_795_000_000_000 + int(sys.argv[2])))
"""


def test_concurrent_processes_record_each_key_once_in_whole_lines(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(n)], stdin=subprocess.PIPE) for n in (1, 2)
    ]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.close()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    written = [json.loads(line) for line in lines(tmp_path)]
    assert sorted(o["key"] for o in written) == sorted(f"k{i}" for i in range(300))
    assert len(rail(tmp_path).records) == 300
