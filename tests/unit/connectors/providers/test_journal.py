"""The provider journal: the rails' processed calls and the router's decisions as
JSON lines, folded back, and held against payment events (double charges)."""

from __future__ import annotations

import pytest

from connectors.providers.journal import Journal, double_charges, read_journal
from connectors.providers.rails import RailConfigError, Window, build_rails, load_rail_configs, load_schedules, schedule_toml
from connectors.providers.router import RoutingState, build_router
from connectors.providers.simulated import Call

T0_MS = 1_795_000_000_000
ROUTER = build_router(load_rail_configs())


def run_outage(journal: Journal, creates: int = 100):
    """Creates every 500 ms through a 20 s outage of the primary, journalled as the worker does."""
    rails = build_rails(3, schedules={"acq_north": (Window(T0_MS, T0_MS + 20_000, "outage"),)},
                        on_record=journal.rail_record)
    state, routes = RoutingState(), []
    for i in range(creates):
        c = {"payment_id": f"pay_{i}", "currency": "USD", "amount_minor": 10_000,
             "card": {"bin": "424242", "last4": "4242"}, "metadata": {}}
        routed = ROUTER.authorize(state, rails, c, f"key_{i}", Call(c["payment_id"], "USD", T0_MS + i * 500))
        journal.routed(i % 2, c["payment_id"], routed)
        state = routed.state
        routes.append(routed)
    return rails, routes


def events_of(routes) -> dict[str, list[dict]]:
    return {f"pay_{i}": [{"type": "authorized" if r.result.status == "approved" else "declined", "provider": r.provider}]
            for i, r in enumerate(routes)}


def test_journal_folds_back_to_the_rails_records_and_the_routers_counts(tmp_path):
    journal = Journal(tmp_path, "w0")
    rails, routes = run_outage(journal)
    journal.close()
    view = read_journal(tmp_path)
    approved = {r.payment_id: {name} for name, rail in rails.items() for r in rail.authorized().values()}
    assert view.authorized == approved and approved
    assert view.failovers == sum(r.failovers for r in routes) > 0
    trips = view.trips()
    assert trips["acq_north", "open"] >= 1 and trips["acq_north", "closed"] >= 1 and trips["acq_north", "half_open"] >= 1
    check = double_charges(view, events_of(routes))
    assert check.payments == 100 and not check.double_charged and not check.mismatched and not check.unreported


def test_a_payment_approved_at_two_providers_is_caught_and_a_redelivery_counts_once(tmp_path):
    journal = Journal(tmp_path, "w0")
    rails, routes = run_outage(journal, creates=10)
    # Another worker (a crash, a rebalance) processed pay_0 again: once at the same rail
    # (one charge: same key), once at the other (a double charge).
    other = Journal(tmp_path, "w1")
    first = next(iter(rails["acq_south"].authorized().values()))
    other.rail_record("acq_south", first)
    other.routed(0, "pay_0", routes[0])
    view = read_journal(tmp_path)
    assert not double_charges(view, events_of(routes)).double_charged
    assert view.failovers == sum(r.failovers for r in routes), "pay_0's routing counted once"
    other.rail_record("acq_north", first)
    other.close()
    check = double_charges(read_journal(tmp_path), events_of(routes))
    assert check.double_charged == (first.payment_id,)


def test_events_that_disagree_with_the_rails_are_reported(tmp_path):
    journal = Journal(tmp_path, "w0")
    _, routes = run_outage(journal, creates=10)
    journal.close()
    events = events_of(routes)
    events["pay_1"] = [{"type": "authorized", "provider": "wallet_pay"}]  # no such authorization there
    events["pay_2"] = [{"type": "authorization_pending", "provider": routes[2].provider}]  # approved, never reported
    check = double_charges(read_journal(tmp_path), events)
    assert check.mismatched == ("pay_1",) and check.unreported == ("pay_2",)


def test_a_torn_last_line_is_skipped_and_the_size_is_bounded(tmp_path):
    journal = Journal(tmp_path, "w0", max_bytes=2_000)
    run_outage(journal, creates=50)
    journal.close()
    with (tmp_path / "w0.jsonl").open("a") as f:
        f.write('{"fact": "rail", "prov')  # a worker killed mid-write
    assert (tmp_path / "w0.jsonl").stat().st_size < 2_100
    assert read_journal(tmp_path).full


def test_schedules_round_trip_through_their_file_and_bad_ones_are_clear_errors(tmp_path):
    schedules = {"acq_north": (Window(T0_MS, T0_MS + 10, "outage"), Window(T0_MS + 20, T0_MS + 30, "degraded", 400, 4))}
    path = tmp_path / "s.toml"
    path.write_text(schedule_toml(schedules))
    assert load_schedules(path) == schedules
    assert build_rails(0, schedules=load_schedules(path))["acq_north"].config.window_at(T0_MS + 25).latency_factor == 4
    for text, message in (("acq_north = 3", "array of windows"), ('[[acq_north]]\nmode = "gone"\nstart_ms = 1\nend_ms = 2', "mode"),
                          ("[[x", "not TOML")):
        path.write_text(text)
        with pytest.raises(RailConfigError, match=message):
            load_schedules(path)
