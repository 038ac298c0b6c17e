"""The double-charge check: the rails' approvals, read from their journals (the
providers' books), held against the payment events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.providers.charges import approvals, double_charges
from connectors.providers.rails import build_rails
from connectors.providers.router import Routed
from connectors.providers.simulated import Call
from tests.unit.connectors.providers.test_routing_log import OUTAGE, T0_MS, run_outage


def events_of(routes: list[Routed]) -> dict[str, list[dict[str, Any]]]:
    return {
        f"pay_{i}": [{"type": "authorized" if r.result.status == "approved" else "declined", "provider": r.provider}]
        for i, r in enumerate(routes)
    }


def test_approvals_come_from_the_rails_books_and_match_the_events(tmp_path: Path) -> None:
    rails, routes = run_outage(None, tmp_path)
    approved = approvals(rails)
    assert approved == {r.payment_id: (name,) for name, rail in rails.items() for r in rail.authorized().values()}
    assert {p for (p,) in approved.values()} == {"acq_north", "acq_south"}  # failed over, then back
    # Another process (a restarted worker) reads the same books from disk.
    assert approvals(build_rails(3, journal_dir=tmp_path)) == approved
    check = double_charges(approved, events_of(routes))
    assert check.payments == 100 and not check.double_charged and not check.mismatched and not check.unreported


def test_a_redelivery_is_one_charge_and_a_second_rail_is_two(tmp_path: Path) -> None:
    rails, routes = run_outage(None, tmp_path, creates=10)
    pid, (provider,) = next(iter(approvals(rails).items()))
    i = int(pid.removeprefix("pay_"))
    # Another worker, sharing the books, re-sends the same authorization (same key): the
    # rail answers from its record, nothing new is charged.
    other = build_rails(3, schedules=OUTAGE, journal_dir=tmp_path)
    call = Call(pid, "USD", T0_MS + i * 500)
    assert other[provider].authorize(f"key_{i}", "424242", "4242", 10_000, "USD", call).status == "approved"
    assert not double_charges(approvals(build_rails(3, journal_dir=tmp_path)), events_of(routes)).double_charged
    # ...but one that sends it to the other acquirer charges the card twice.
    elsewhere = "acq_south" if provider == "acq_north" else "acq_north"
    assert (
        other[elsewhere].authorize(f"key_{i}", "424242", "4242", 10_000, "USD", Call(pid, "USD", T0_MS + 60_000)).status
        == "approved"
    )
    check = double_charges(approvals(build_rails(3, journal_dir=tmp_path)), events_of(routes))
    assert check.double_charged == (pid,)
    assert check.mismatched == ()  # the events' provider does hold it


def test_events_that_disagree_with_the_rails_are_reported(tmp_path: Path) -> None:
    rails, routes = run_outage(None, tmp_path, creates=10)
    events = events_of(routes)
    approved_at = {pid: p for pid, (p,) in approvals(rails).items()}
    a, b = sorted(approved_at)[:2]
    events[a] = [{"type": "authorized", "provider": "wallet_pay"}]  # no such authorization there
    events[b] = [{"type": "authorization_pending", "provider": approved_at[b]}]  # approved, never reported
    check = double_charges(approvals(rails), events)
    assert check.mismatched == (a,) and check.unreported == (b,)
    assert double_charges(approvals(rails), {"pay_x": [{"type": "captured", "provider": "acq_north"}]}).payments == 0


def test_a_submitted_bank_transfer_is_its_rail_s_approval() -> None:
    approved = {"pay_1": ("bank_ach",)}
    check = double_charges(approved, {"pay_1": [{"type": "bank_submitted", "provider": "bank_ach"}]})
    assert (check.payments, check.mismatched, check.unreported) == (1, (), ())
    check = double_charges(approved, {"pay_1": [{"type": "bank_submitted", "provider": "bank_sepa"}]})
    assert check.mismatched == ("pay_1",)
