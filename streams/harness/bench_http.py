"""The HTTP part of `paystream bench` (streams/harness/bench.py): `paystream api` in its own
process on loopback, in front of the bench's worker, driven by an open-loop generator
(asyncio + aiohttp) at fixed offered rates: a request is sent when it is due whatever
the earlier ones are doing, and its latency runs from when it was due, so a stall is
not hidden by coordinated omission. Creates with unique Idempotency-Keys; answered
when the pipeline's outcome is committed (or 202 past the API's outcome timeout)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from streams.api import auth
from streams.api.ops import KafkaOps, LagRow
from streams.client.processes import ApiProcess, wait_until
from streams.demo.cards import TEST_CARDS, cardholder
from streams.harness.stats import percentiles, rate
from streams.settings import Settings, client_config
from streams.topics import topic_names

HTTP_RATES_PER_S, HTTP_DURATION_S = (25.0, 50.0, 100.0, 200.0), 10.0
HTTP_QUICK_RATES_PER_S, HTTP_QUICK_DURATION_S = (20.0, 50.0), 3.0
HTTP_REPLAY_RATE_PER_S, HTTP_QUICK_REPLAY_RATE_PER_S = 500.0, 100.0
HTTP_RATE_MAX_PER_S, HTTP_DURATION_MAX_S = 10_000.0, 600.0
HTTP_MAX_IN_FLIGHT = 2_000  # past this a due request is counted not_sent: the generator's own bound
HTTP_REQUEST_TIMEOUT_S = 60.0
HTTP_MERCHANT = "m_bench"
API_READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 600.0
DRAIN_POLL_S = 3.0  # longer than the commit interval (0.5 s): a moving pipeline shows it


def send_offsets_s(rate_per_s: float, duration_s: float) -> list[float]:
    """Open loop: request i is due at i / rate seconds, whatever the earlier ones are doing."""
    assert 0 < rate_per_s <= HTTP_RATE_MAX_PER_S and 0 < duration_s <= HTTP_DURATION_MAX_S
    return [i / rate_per_s for i in range(max(1, round(rate_per_s * duration_s)))]


def http_summary(
    offered_per_s: float,
    duration_s: float,
    latencies_s: Sequence[float],
    statuses: Sequence[int],
    elapsed_s: float,
    not_sent: int,
) -> dict[str, Any]:
    """One offered rate's figures. Status 0 is a transport error or a timeout.
    achieved_per_s counts every answer, 202s included; decided_per_s only the
    pipeline's decisions (200, 402, ...)."""
    assert len(latencies_s) == len(statuses)
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return {
        "offered_per_s": offered_per_s,
        "duration_s": duration_s,
        "sent": len(statuses),
        "not_sent": not_sent,
        "statuses": dict(sorted(counts.items())),
        "achieved_per_s": rate(len(statuses), elapsed_s),
        # answered with the pipeline's decision: not a 202 (outcome timeout) nor a transport error
        "decided_per_s": rate(sum(1 for st in statuses if st not in (0, 202)), elapsed_s),
        **_quantiles_ms(latencies_s),
    }


def _quantiles_ms(latencies_s: Sequence[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    q = percentiles([x * 1000 for x in latencies_s])
    return {"p50_ms": q["p50"], "p99_ms": q["p99"], "max_ms": q["max"]}


def _create_body(i: int, rng: random.Random) -> dict[str, Any]:
    # A cardholder per request under the approving test BIN, as the demo does: one card
    # paying hundreds of times a second is what the fraud stage's velocity rules decline.
    return {
        "amount_minor": 100 + i % 9_900,
        "currency": "USD",
        "capture_method": "automatic",
        "card": {"number": cardholder(TEST_CARDS[0], rng), "exp_month": 12, "exp_year": 2030, "cvc": "123"},
    }


async def open_loop(
    url: str, secret: str, rate_per_s: float, duration_s: float, key_prefix: str, replay: bool = False
) -> dict[str, Any]:
    """POST creates to `url` at `rate_per_s` for `duration_s`, each with its own
    Idempotency-Key; latency from when each request was due to its answer. `replay`:
    one key and one body throughout, so after the first answer the gateway replays
    its stored response without the pipeline (the HTTP layer's own cost)."""
    import aiohttp

    offsets = send_offsets_s(rate_per_s, duration_s)
    rng = random.Random(key_prefix)
    same = _create_body(0, rng) if replay else None
    latencies: list[float] = []
    statuses: list[int] = []
    in_flight, not_sent = 0, 0
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=HTTP_MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=HTTP_REQUEST_TIMEOUT_S),
        headers={"Authorization": f"Bearer {secret}"},
    ) as session:

        async def one(i: int, due: float) -> None:
            nonlocal in_flight
            try:
                body, key = (
                    (same, f"{key_prefix}-0") if same is not None else (_create_body(i, rng), f"{key_prefix}-{i}")
                )
                async with session.post(url, json=body, headers={"Idempotency-Key": key}) as r:
                    await r.read()
                    status = r.status
            except (TimeoutError, aiohttp.ClientError):
                status = 0
            finally:
                in_flight -= 1
            latencies.append(loop.time() - due)
            statuses.append(status)

        if same is not None:  # the first answer is the pipeline's; the measured ones are replays of it
            async with session.post(url, json=same, headers={"Idempotency-Key": f"{key_prefix}-0"}) as r:
                await r.read()
        tasks = []
        start = loop.time()
        for i, offset in enumerate(offsets):
            due = start + offset
            if due > loop.time():
                await asyncio.sleep(due - loop.time())  # the schedule, not a sync
            if in_flight >= HTTP_MAX_IN_FLIGHT:
                not_sent += 1
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        elapsed_s = loop.time() - start
    return http_summary(rate_per_s, duration_s, latencies, statuses, elapsed_s, not_sent)


def settled(before: Sequence[LagRow], after: Sequence[LagRow]) -> bool:
    """The pipeline is idle: no offset lag moved between two reads. Not "lag is 0":
    under EOS a group's committed offsets stop short of the commit markers that
    follow its last records, so an idle group keeps a small, fixed lag."""
    return list(before) == list(after)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
            return r.status == 200
    except OSError:
        return False


def http(
    settings: Settings, rates_per_s: Sequence[float], duration_s: float, replay_rate_per_s: float
) -> dict[str, Any]:
    """`paystream api` in a child process over `settings`' topics (a worker must be
    running), rate limits lifted, one open-loop run per offered rate after a warm-up,
    each once the worker's group has caught up."""

    s = settings.model_copy(
        update={
            "api_host": "127.0.0.1",
            "api_port": _free_port(),
            "api_rate_per_s": 100_000.0,
            "api_rate_burst": 100_000,
            "api_rate_queue_max": 0,
        }
    )
    secret, record = auth.new_key(HTTP_MERCHANT, datetime.now(UTC).isoformat(timespec="seconds"))
    auth.save({record.key_id: record}, s.data_dir / "api_keys.json")
    base = f"http://{s.api_host}:{s.api_port}"
    run = uuid.uuid4().hex[:8]
    ops = KafkaOps(client_config(s), [s.app_id], topic_names(s).dlq, [])
    runs = []
    with ApiProcess(s, s.data_dir / "bench-api.log") as api:
        assert wait_until(lambda: _answers(f"{base}/openapi.json"), API_READY_TIMEOUT_S), api.log_tail()
        warmup = asyncio.run(open_loop(f"{base}/v1/payments", secret, 5.0, 1.0, f"{run}-warm"))
        replays = asyncio.run(
            open_loop(f"{base}/v1/payments", secret, replay_rate_per_s, duration_s, f"{run}-replay", replay=True)
        )
        for r in rates_per_s:
            # Each rate starts on an idle pipeline: a backlog left by the previous one (its
            # 202s) would be measured as this rate's latency.
            started, last = time.monotonic(), [None]

            def idle() -> bool:  # the first read is the baseline; each next one is DRAIN_POLL_S later
                now = ops.lag()
                was, last[0] = last[0], now
                return was is not None and settled(was, now)

            caught_up = wait_until(idle, DRAIN_TIMEOUT_S, interval_s=DRAIN_POLL_S)
            drain_s = round(time.monotonic() - started, 1)
            result = asyncio.run(open_loop(f"{base}/v1/payments", secret, r, duration_s, f"{run}-{r:g}"))
            runs.append(result | {"drained_before": caught_up, "drain_s": drain_s})
    return {
        "generator": "asyncio+aiohttp open loop",
        "route": "POST /v1/payments (create, automatic capture)",
        "outcome_timeout_ms": s.api_outcome_timeout_ms,
        "warmup_statuses": warmup["statuses"],
        "replay": replays,
        "runs": runs,
    }
