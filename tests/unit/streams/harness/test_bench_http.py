"""The HTTP part of `paystream bench`: the open-loop schedule, the summary, the
generator against a real local server, the idle check."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from streams.api.ops import LagRow
from streams.harness.bench_http import http_summary, open_loop, send_offsets_s, settled


def test_the_schedule_is_open_loop_at_the_offered_rate() -> None:
    offsets = send_offsets_s(50.0, 2.0)
    assert len(offsets) == 100 and offsets[0] == 0.0 and offsets[-1] == pytest.approx(99 / 50)
    assert all(b - a == pytest.approx(0.02) for a, b in zip(offsets, offsets[1:]))
    with pytest.raises(AssertionError):
        send_offsets_s(0.0, 1.0)


def test_the_summary_counts_statuses_and_the_achieved_rate() -> None:
    s = http_summary(10.0, 2.0, [0.01, 0.02, 0.03, 0.5], [200, 200, 202, 0], elapsed_s=2.0, not_sent=1)
    assert s["statuses"] == {"0": 1, "200": 2, "202": 1} and s["sent"] == 4 and s["not_sent"] == 1
    assert s["achieved_per_s"] == 2.0 and s["decided_per_s"] == 1.0  # 200, 200 over 2 s; not the 202 nor the 0
    assert s["p99_ms"] == 500.0 and s["p50_ms"] == 20.0


def test_the_generator_sends_every_due_request_with_its_own_key() -> None:
    keys: list[str] = []

    async def create(request: web.Request) -> web.Response:
        keys.append(request.headers["Idempotency-Key"])
        assert request.headers["Authorization"] == "Bearer sk_test" and (await request.json())["currency"] == "USD"
        return web.json_response({"ok": True}, status=200 if len(keys) % 2 else 202)

    async def main(replay: bool) -> dict:
        app = web.Application()
        app.router.add_post("/v1/payments", create)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            return await open_loop(f"http://127.0.0.1:{port}/v1/payments", "sk_test", 200.0, 0.1, "run", replay)
        finally:
            await runner.cleanup()

    result = asyncio.run(main(False))
    assert sorted(keys) == sorted(f"run-{i}" for i in range(20))
    assert result["sent"] == 20 and result["not_sent"] == 0 and result["statuses"] == {"200": 10, "202": 10}
    assert result["p99_ms"] is not None and result["p99_ms"] >= result["p50_ms"]
    keys.clear()
    assert asyncio.run(main(True))["sent"] == 20 and keys == ["run-0"] * 21  # replays: one key throughout, primed once


def test_settled_means_no_lag_moved_between_two_reads() -> None:
    idle = [LagRow("g", "a", 8, 14), LagRow("g", "b", 8, 0)]  # EOS leaves a fixed lag when idle
    assert settled(idle, list(idle)) and settled([], [])
    assert not settled(idle, [LagRow("g", "a", 8, 12), LagRow("g", "b", 8, 0)])
