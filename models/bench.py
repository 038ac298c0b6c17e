"""`run_fraud_bench(rows, seed)`: the fraud numbers for `paystream bench`, as JSON-able
values. Simulates `rows` transactions (up to 5,000 cards and 10,000 merchants, ~10,000 a day),
replays them (7-day feedback delay, weekly retraining) next to an offline hindsight
model, and times the online scorer one transaction at a time."""

from __future__ import annotations

import math
import platform
import time
from datetime import UTC, datetime
from typing import Any

from models.features import CardState, MerchantState, TxStates
from models.history import validate_history
from models.replay import ReplayConfig, replay
from models.scoring import Scorer
from models.simulate import SimConfig, simulate
from models.train import SHIPPED_ARTIFACT

TX_PER_DAY = 10_000  # what the default population makes, roughly
ONLINE_SAMPLE = 2_000


def run_fraud_bench(rows: int, seed: int) -> dict[str, Any]:
    if not 10_000 <= rows <= 20_000_000:
        raise ValueError("rows must be in 10,000..20,000,000")
    # At least 21 days (two weeks of history before the 7 evaluated); the population
    # shrinks below the default 5,000 cards when fewer rows are asked for.
    days = max(21, math.ceil(rows / TX_PER_DAY) + 1)
    cards = min(5_000, max(200, math.ceil(rows * 1.1 / (2 * days))))
    t = time.perf_counter()
    df = simulate(SimConfig(days=days, n_cards=cards, n_merchants=2 * cards, seed=seed)).iloc[:rows]
    df = validate_history(df.drop(columns=["ts_ms"]))
    simulate_s = time.perf_counter() - t
    result = replay(df, ReplayConfig(hindsight=True, seed=seed))
    return {
        "bench": "fraud",
        "rows": len(df),
        "days": days,
        "cards": cards,
        "seed": seed,
        "simulate_s": round(simulate_s, 2),
        "replay": result.summary(),
        "online_scorer_tx_per_s": _online_rate(df),
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _online_rate(df) -> float:
    """The saga's path: Scorer.score on one tx dict (state through bytes), then
    update_states; single-row model calls, so far slower than the replay's batches."""
    scorer = Scorer.load(SHIPPED_ARTIFACT)
    sample = df.iloc[:ONLINE_SAMPLE]
    db: dict[str, bytes] = {}
    txs = [
        {
            "card_token": r.card_id,
            "merchant_id": r.merchant_id,
            "amount_minor": int(r.amount_minor),
            "currency": r.currency,
            "bin": "424242",
            "occurred_at": datetime.fromtimestamp(r.ts_ms / 1000, tz=UTC),
        }
        for r in sample.itertuples()
    ]
    t = time.perf_counter()
    for tx in txs:
        c, m = "c" + tx["card_token"], "m" + tx["merchant_id"]
        states = TxStates(
            CardState.from_bytes(db[c]) if c in db else CardState(),
            MerchantState.from_bytes(db[m]) if m in db else MerchantState(),
        )
        scorer.score(tx, states)
        scorer.update_states(states, tx)
        db[c], db[m] = states.card.to_bytes(), states.merchant.to_bytes()
    return round(len(txs) / (time.perf_counter() - t), 1)
