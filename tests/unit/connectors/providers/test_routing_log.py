"""The routing log: the router's decisions (attempts, failovers, breaker transitions)
as JSON lines, folded back; outage schedules through their file."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.providers.rails import (
    Rail,
    RailConfigError,
    Window,
    build_rails,
    load_rail_configs,
    load_schedules,
    schedule_toml,
)
from connectors.providers.router import Routed, RoutingState, build_router
from connectors.providers.routing_log import RoutingLog, read_routing_log
from connectors.providers.simulated import Call

T0_MS = 1_795_000_000_000
ROUTER = build_router(load_rail_configs())
OUTAGE = {"acq_north": (Window(T0_MS, T0_MS + 20_000, "outage"),)}


def run_outage(log: RoutingLog | None, books: Path, creates: int = 100) -> tuple[dict[str, Rail], list[Routed]]:
    """Creates every 500 ms through a 20 s outage of the primary, logged as the worker
    does; the rails keep their books (journal.py) under `books`."""
    rails = build_rails(3, schedules=OUTAGE, journal_dir=books)
    state, routes = RoutingState(), []
    for i in range(creates):
        c = {
            "payment_id": f"pay_{i}",
            "currency": "USD",
            "amount_minor": 10_000,
            "card": {"bin": "424242", "last4": "4242"},
            "metadata": {},
        }
        routed = ROUTER.authorize(state, rails, c, f"key_{i}", Call(c["payment_id"], "USD", T0_MS + i * 500))
        if log is not None:
            log.routed(i % 2, c["payment_id"], routed)
        state = routed.state
        routes.append(routed)
    return rails, routes


def test_the_log_folds_back_to_the_routers_failovers_and_breaker_trips(tmp_path: Path) -> None:
    log = RoutingLog(tmp_path / "routing", "w0")
    _, routes = run_outage(log, tmp_path / "providers")
    log.close()
    view = read_routing_log(tmp_path / "routing")
    assert set(view.routed) == {f"pay_{i}" for i in range(100)}
    assert view.failovers == sum(r.failovers for r in routes) > 0
    trips = view.trips()
    assert (
        trips["acq_north", "open"] >= 1 and trips["acq_north", "half_open"] >= 1 and trips["acq_north", "closed"] >= 1
    )
    assert sum(trips.values()) == len({(t.provider, t.to_state, t.at_ms) for r in routes for t in r.transitions})
    assert not list((tmp_path / "routing").glob("acq_*")), "no provider records in the routing log"


def test_a_redelivered_routing_counts_once(tmp_path: Path) -> None:
    log = RoutingLog(tmp_path / "routing", "w0")
    _, routes = run_outage(log, tmp_path / "providers", creates=40)
    log.close()
    other = RoutingLog(tmp_path / "routing", "w1")  # another worker took the partition and routed pay_30 again
    other.routed(0, "pay_30", routes[30])
    other.close()
    view = read_routing_log(tmp_path / "routing")
    assert view.failovers == sum(r.failovers for r in routes)
    assert len(view.routed) == 40


def test_torn_lines_are_skipped_and_the_size_is_bounded(tmp_path: Path) -> None:
    log = RoutingLog(tmp_path, "w0", max_bytes=2_000)
    run_outage(log, tmp_path / "providers", creates=50)
    log.close()
    path = tmp_path / "w0.jsonl"
    assert path.stat().st_size < 2_100
    with path.open("a") as f:
        f.write('{"fact": "routed", "partit')  # a worker killed mid-write...
    view = read_routing_log(tmp_path)
    assert view.full and view.skipped == 0  # a line with no newline yet is left out
    with path.open("a") as f:
        f.write('{"fact": "log_full"}\n')  # ...restarted, appending after the torn bytes
    view = read_routing_log(tmp_path)
    assert view.full and view.skipped == 1


def test_schedules_round_trip_through_their_file_and_bad_ones_are_clear_errors(tmp_path: Path) -> None:
    schedules = {"acq_north": (Window(T0_MS, T0_MS + 10, "outage"), Window(T0_MS + 20, T0_MS + 30, "degraded", 400, 4))}
    path = tmp_path / "s.toml"
    path.write_text(schedule_toml(schedules))
    assert load_schedules(path) == schedules
    assert build_rails(0, schedules=load_schedules(path))["acq_north"].config.window_at(T0_MS + 25).latency_factor == 4
    for text, message in (
        ("acq_north = 3", "array of windows"),
        ('[[acq_north]]\nmode = "gone"\nstart_ms = 1\nend_ms = 2', "mode"),
        ("[[x", "not TOML"),
    ):
        path.write_text(text)
        with pytest.raises(RailConfigError, match=message):
            load_schedules(path)
    with pytest.raises(RailConfigError, match="cannot read"):
        load_schedules(tmp_path / "missing.toml")
