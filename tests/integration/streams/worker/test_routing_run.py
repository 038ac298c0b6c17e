"""Routing on a real run, with the learning router on (PAYSTREAM_ROUTING_LEARN): soft
declines at acq_north retried once at acq_south under the payment's second key, the
calls on the payment's events as they come off the topic, and nothing charged twice by
the rails' own books."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.providers.charges import approvals, double_charges
from connectors.providers.rails import build_rails
from connectors.providers.simulated import Call
from schemas.ids import derive_payment_id
from schemas.times import to_ms
from streams.client.observe import Observer
from streams.domain.payments import authorization_keys
from tests.integration.support import T0, Pipeline, create, make_settings, run, start_worker

pytestmark = pytest.mark.integration
VISA = ("424242", "4242")  # support.create's card


def soft_declined_keys(merchant: str, seed: int, n: int) -> list[str]:
    """Idempotency keys whose payment acq_north answers do_not_honor (the rails' draws
    are a hash of the provider key; a scratch copy of the rails is asked)."""
    scratch, keys = build_rails(seed), []
    for i in range(20_000):
        pid = derive_payment_id(merchant, f"soft-{i}")
        key, _ = authorization_keys(pid)
        if (
            scratch["acq_north"].authorize(key, *VISA, 1000, "USD", Call(pid, "USD", to_ms(T0))).reason
            == "do_not_honor"
        ):
            keys.append(f"soft-{i}")
            if len(keys) == n:
                return keys
    raise AssertionError("no soft-declined keys found")


def test_soft_declines_are_retried_at_another_acquirer_once_and_the_events_show_the_calls(
    bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, "routing").model_copy(
        update={"providers": "rails", "routing_learn": True, "providers_dir": tmp_path / "providers"}
    )
    m = f"m_{uuid.uuid4().hex[:6]}"
    soft = soft_declined_keys(m, settings.provider_seed, 3)
    # The soft-declined creates are decided before the others are published: the router
    # ranks by the calls its partition has seen, and a stage keeps the order of one key's
    # records, not across keys (docs/decisions.md, "Hand-off inside the worker").
    soft_items = [create(m, key) for key in soft]
    plain_items = [create(m, f"plain-{i}") for i in range(40)]
    items = soft_items + plain_items
    soft_ids = {derive_payment_id(m, key) for key in soft}

    def decided(payment_ids: set[str]) -> Callable[[Observer], bool]:
        # a create's outcome can arrive before its decision event: wait for every decision
        return lambda observer: all(
            any(e["type"] in ("authorized", "declined") for e in observer.events.get(pid, ())) for pid in payment_ids
        )

    worker = start_worker(settings)
    try:
        pipeline = Pipeline(settings, worker)
        observer = run(pipeline, soft_items, settled=decided(soft_ids))
        plain = run(pipeline, plain_items, settled=decided({item["payment_id"] for item in plain_items}))
    finally:
        assert worker.stop() == 0, worker.log_tail()
    events = {**observer.events, **plain.events}

    for pid in soft_ids:
        (decision,) = [e for e in events[pid] if e["type"] in ("authorized", "declined")]
        assert decision["attempts"][0] == {
            "provider": "acq_north",
            "status": "declined",
            "reason_code": "do_not_honor",
            "retryable": False,
        }
        assert [a["provider"] for a in decision["attempts"]] == ["acq_north", "acq_south"]
        assert decision["provider"] == "acq_south" or decision["reason_code"] == "do_not_honor"
        if decision["type"] == "authorized":
            assert decision["provider_ref"] == authorization_keys(pid)[1]  # the retry's own key
    # a payment decided by one call carries no attempts (its events stay as they were)
    others = [e for pid, es in events.items() if pid not in soft_ids for e in es]
    assert others and all(e["attempts"] is None or len(e["attempts"]) >= 2 for e in others)
    check = double_charges(approvals(build_rails(settings.provider_seed, journal_dir=settings.providers_dir)), events)
    assert check.payments == len(items) and not check.double_charged and not check.mismatched
