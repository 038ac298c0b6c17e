"""The demo's chaos pieces without Kafka: the schedule over the traffic's span, the
settings a chaos worker gets, and routing shares from events."""

from __future__ import annotations

from datetime import datetime, timezone

from connectors.providers.rails import load_schedules
from streams.demo import CHAOS_PROVIDER, chaos_schedule, generate, provider_shares, with_chaos
from streams.settings import Settings
from schemas.times import to_ms

START = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def test_chaos_schedule_covers_the_traffic_span_outage_then_degraded():
    t0 = to_ms(START)
    (outage, degraded) = chaos_schedule(t0, t0 + 100_000)[CHAOS_PROVIDER]
    assert (outage.mode, outage.start_ms, outage.end_ms) == ("outage", t0 + 10_000, t0 + 40_000)
    assert degraded.mode == "degraded" and t0 + 40_000 < degraded.start_ms < degraded.end_ms <= t0 + 100_000
    assert degraded.error_per_mille > 0 and degraded.latency_factor > 1


def test_chaos_settings_point_the_worker_at_the_schedule_and_a_journal(tmp_path):
    traffic = generate(50, 3, "run1", START)
    s = with_chaos(Settings(data_dir=tmp_path, keys_dir=tmp_path / "keys", providers="test"), traffic, "run1")
    assert s.providers == "rails" and s.provider_journal_dir is not None
    (outage, _) = load_schedules(s.provider_schedule_file)[CHAOS_PROVIDER]
    times = [to_ms(c["occurred_at"]) for c in traffic.items if isinstance(c, dict)]
    assert min(times) < outage.start_ms < outage.end_ms < max(times)


def test_shares_count_each_payment_once_by_the_provider_that_decided_it():
    events = {
        "p1": [{"type": "authorized", "provider": "acq_north"}, {"type": "captured", "provider": "acq_north"}],
        "p2": [{"type": "authorization_pending", "provider": "acq_south"}, {"type": "authorized", "provider": "acq_south"}],
        "p3": [{"type": "declined", "provider": None}],  # refused before any provider
    }
    assert provider_shares(events) == {"acq_north": 1, "acq_south": 1}
