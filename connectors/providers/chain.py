"""A simulated blockchain for crypto payments: blocks, confirmations, reorgs, payers.

Deterministic and driven by event time: every answer is a pure function of (seed,
chain, address, what is drawn) and the `at_ms` asked about; no wall clock, no global
RNG and no memory, so the payments stage, a restarted worker, the reconciliation job
and the tests all see one and the same chain.

- Blocks: block h is mined at `genesis_ms + h * block_interval_ms`; the head at
  `at_ms` is the last block mined by then. A deposit in block b has
  `head - b + 1` confirmations.
- Payers: the deposit address of a payment is paid by a simulated payer who saw the
  quote (asset amount due, lock window). What it does is drawn per address: pays in
  full (most), under (a part), over (a part more), late (after the lock window) or
  never; a full payment may come in two transfers.
- Reorgs: `reorg_per_mille` of the transfers are first mined in a block that is
  orphaned `1..reorg_depth_blocks` blocks later; the transfer is then mined again in
  the next block, or (`drop_per_mille` of those) never (a double spend). A reorg is
  never deeper than `reorg_depth_blocks`; the pipeline's confirmation depth must be
  more (`check_depth`), else a confirmed payment could vanish.
- Sends (refunds to a payer address) are our transactions: their id derives from the
  caller's key, so the same refund asked twice is the same transaction.
- Quotes: USDC is pegged (1 USD = 10**6 micro-USDC); BTC's price moves by the hour
  (±`volatility_per_mille` around `price_minor`), drawn like everything else.

Amounts are integers of the asset's minor unit (schemas/money.py: USDC 6 decimals,
BTC 8, the satoshi); a price is an integer ratio, never a float.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.money import asset_exponent, is_asset, is_currency

DEFAULT_CHAINS = Path(__file__).parent / "chains.toml"
HOUR_MS = 3_600_000
BEHAVIOURS = ("exact", "split", "under", "over", "late", "never")


class ChainConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Rate:
    """`asset_minor` of the asset buy `fiat_minor` of the currency: an exact ratio."""

    asset_minor: int
    fiat_minor: int

    def __post_init__(self) -> None:
        assert type(self.asset_minor) is int and type(self.fiat_minor) is int, self
        assert self.asset_minor > 0 and self.fiat_minor > 0, self

    def to_asset_minor(self, fiat_minor: int) -> int:
        """What the payer owes for `fiat_minor`: rounded up, so a payment in full
        always covers the price (the difference is under one minor unit of the asset)."""
        return -(-fiat_minor * self.asset_minor // self.fiat_minor)

    def refund_asset_minor(self, fiat_minor: int) -> int:
        """What a refund of `fiat_minor` sends back: rounded down, never more than was paid for it."""
        return fiat_minor * self.asset_minor // self.fiat_minor


@dataclass(frozen=True)
class ChainConfig:
    name: str
    asset: str
    block_interval_ms: int
    genesis_ms: int = 0
    reorg_per_mille: int = 0
    reorg_depth_blocks: int = 1
    drop_per_mille: int = 0
    # the payers' mix, per mille; what is left of 1000 pays exactly
    split_per_mille: int = 0
    under_per_mille: int = 0
    over_per_mille: int = 0
    late_per_mille: int = 0
    never_per_mille: int = 0
    # blocks between the quote and the payer's (first) transfer: uniform in 1..payer_delay_blocks
    payer_delay_blocks: int = 3
    # price of one whole unit of the asset, per fiat currency, in the currency's minor units
    price_minor: Mapping[str, int] | None = None
    volatility_per_mille: int = 0
    fee_bps: int = 0  # what the rail keeps of a confirmed payment, in basis points of its fiat amount

    def __post_init__(self) -> None:
        check = _check
        check(bool(self.name) and self.name.replace("_", "").isalnum(), f"chain name {self.name!r}")
        check(is_asset(self.asset), f"{self.name}: asset must be one of the crypto assets (schemas/money.py)")
        check(self.block_interval_ms >= 1 and self.genesis_ms >= 0, f"{self.name}: block interval / genesis")
        check(1 <= self.reorg_depth_blocks <= 100 and self.payer_delay_blocks >= 1, f"{self.name}: depths")
        mix = (
            self.split_per_mille,
            self.under_per_mille,
            self.over_per_mille,
            self.late_per_mille,
            self.never_per_mille,
        )
        rates = (self.reorg_per_mille, self.drop_per_mille, self.volatility_per_mille, *mix)
        check(all(0 <= r <= 1000 for r in rates) and sum(mix) <= 1000, f"{self.name}: rates are per mille")
        check(self.volatility_per_mille < 1000, f"{self.name}: volatility must leave a positive price")
        check(0 <= self.fee_bps <= 1000, f"{self.name}: fee_bps 0..1000")
        prices = self.price_minor or {}
        check(
            bool(prices) and all(is_currency(c) and type(p) is int and p > 0 for c, p in prices.items()),
            f"{self.name}: price_minor needs positive integer prices per ISO 4217 currency",
        )

    def check_depth(self, depth_blocks: int) -> None:
        """A confirmation depth this chain's reorgs cannot undo."""
        _check(
            depth_blocks > self.reorg_depth_blocks,
            f"{self.name}: confirmation depth {depth_blocks} must exceed the reorg depth {self.reorg_depth_blocks}",
        )


@dataclass(frozen=True)
class Deposit:
    """A transfer to an address as the canonical chain shows it at some head."""

    tx_id: str
    amount_minor: int
    block: int
    block_ms: int


@dataclass(frozen=True)
class ChainView:
    """An address as of `at_ms`: the head and the deposits on the canonical chain."""

    head: int
    at_ms: int
    deposits: tuple[Deposit, ...]

    def confirmations(self, d: Deposit) -> int:
        return self.head - d.block + 1


@dataclass(frozen=True)
class Send:
    tx_id: str
    to_address: str
    amount_minor: int
    at_ms: int


@dataclass(frozen=True)
class _Transfer:
    """A payer's transfer: first mined in `block`; orphaned at `orphaned_at` (None:
    never) and mined again in `again` (None: dropped)."""

    tx_id: str
    amount_minor: int
    block: int
    orphaned_at: int | None
    again: int | None


class SimChain:
    def __init__(self, config: ChainConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.name = config.name
        self.asset = config.asset

    # --- blocks ---

    def head(self, at_ms: int) -> int:
        """The last block mined by `at_ms` (-1 before genesis)."""
        c = self.config
        return (at_ms - c.genesis_ms) // c.block_interval_ms if at_ms >= c.genesis_ms else -1

    def block_ms(self, block: int) -> int:
        return self.config.genesis_ms + block * self.config.block_interval_ms

    # --- quotes and addresses ---

    def rate(self, currency: str, at_ms: int) -> Rate | None:
        """The asset's price in `currency` at `at_ms` as an exact ratio, None if the chain
        does not price it. Moves by the hour within ±volatility_per_mille."""
        price = (self.config.price_minor or {}).get(currency)
        if price is None:
            return None
        swing = self.config.volatility_per_mille
        if swing:
            drawn = int(self._u(f"price:{currency}:{at_ms // HOUR_MS}") * (2 * swing + 1)) - swing
            price = price * (1000 + drawn) // 1000
        return Rate(10 ** asset_exponent(self.asset), max(price, 1))

    def deposit_address(self, payment_id: str) -> str:
        """One fresh address per payment (a hash of chain and payment: a deterministic HD wallet)."""
        return "sim1" + hashlib.sha256(f"{self.name}\x1faddress\x1f{payment_id}".encode()).hexdigest()[:38]

    # --- what the chain shows ---

    def view(self, address: str, due_minor: int, issued_ms: int, expires_ms: int, at_ms: int) -> ChainView:
        """The deposits to `address` on the canonical chain at `at_ms`, paid by the
        simulated payer of a quote of `due_minor` issued at `issued_ms`, locked until `expires_ms`."""
        head = self.head(at_ms)
        shown = []
        for t in self._transfers(address, due_minor, issued_ms, expires_ms):
            if t.orphaned_at is not None and head >= t.orphaned_at:
                block = t.again
            else:
                block = t.block
            if block is not None and block <= head:
                shown.append(Deposit(t.tx_id, t.amount_minor, block, self.block_ms(block)))
        return ChainView(head, at_ms, tuple(shown))

    def send(self, key: str, to_address: str, amount_minor: int, at_ms: int) -> Send:
        """Our transaction to `to_address` (a refund): its id derives from `key`, so the
        same key is the same transaction however often it is asked."""
        assert amount_minor > 0, amount_minor
        tx = hashlib.sha256(f"{self.name}\x1fsend\x1f{key}".encode()).hexdigest()
        return Send(tx, to_address, amount_minor, at_ms)

    def behaviour(self, address: str) -> str:
        c = self.config
        u = int(self._u(f"payer:{address}") * 1000)
        for name, share in zip(
            BEHAVIOURS[1:],
            (c.split_per_mille, c.under_per_mille, c.over_per_mille, c.late_per_mille, c.never_per_mille),
        ):
            if u < share:
                return name
            u -= share
        return "exact"

    def _transfers(self, address: str, due_minor: int, issued_ms: int, expires_ms: int) -> list[_Transfer]:
        c = self.config
        behaviour = self.behaviour(address)
        if behaviour == "never" or due_minor <= 0:
            return []
        first = self.head(issued_ms) + 1 + int(self._u(f"delay:{address}") * c.payer_delay_blocks)
        if behaviour == "late":
            first = max(first, self.head(expires_ms) + 1)
        part = 1 + int(self._u(f"part:{address}") * max(due_minor // 2, 1))  # 1 .. about half the due amount
        amounts = {
            "exact": [due_minor],
            "late": [due_minor],
            "split": [due_minor - part, part],
            "under": [max(due_minor - part, 1)],
            "over": [due_minor + part],
        }[behaviour]
        out = []
        for i, amount in enumerate(a for a in amounts if a > 0):
            tx_id = hashlib.sha256(f"{self.seed}\x1f{self.name}\x1ftx\x1f{address}\x1f{i}".encode()).hexdigest()
            block = first + i
            orphaned_at = again = None
            if self._u(f"reorg:{tx_id}") * 1000 < c.reorg_per_mille:
                orphaned_at = block + 1 + int(self._u(f"reorg_depth:{tx_id}") * c.reorg_depth_blocks)
                if self._u(f"drop:{tx_id}") * 1000 >= c.drop_per_mille:
                    again = orphaned_at  # mined again in the new chain's tip block
            out.append(_Transfer(tx_id, amount, block, orphaned_at, again))
        return out

    def _u(self, what: str) -> float:
        digest = hashlib.sha256(f"{self.seed}\x1f{self.name}\x1f{what}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ChainConfigError(message)


def build_chains(seed: int, path: Path | str = DEFAULT_CHAINS) -> dict[str, SimChain]:
    """asset -> its simulated chain, seeded like the rails: the worker's and the
    reconciliation's are one and the same chain."""
    return {asset: SimChain(config, seed=seed) for asset, config in load_chains(path).items()}


def load_chains(path: Path | str = DEFAULT_CHAINS) -> dict[str, ChainConfig]:
    """asset -> its chain, from chains.toml."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    chains: dict[str, ChainConfig] = {}
    for entry in raw.get("chains", []):
        fields: dict[str, Any] = dict(entry)
        config = ChainConfig(**fields)
        _check(config.asset not in chains, f"two chains carry {config.asset}")
        chains[config.asset] = config
    return chains
