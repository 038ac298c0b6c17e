"""Simulated payment rails: card acquirers, a wallet and a bank-transfer rail.

Each `Rail` is a process-local service behind the saga's provider interface
(authorize, capture, void, refund, status), idempotent by the provider key: the
first call under a key is processed and recorded; every later call under that key
gets the recorded answer. Its behaviour is configured (`RailConfig`, from
`rails.toml`), and every random choice is a hash of (seed, rail, key, what is drawn),
never a global RNG, so a run is the same for the same seed and the same calls.

- Latency: lognormal through a p50 and a p99, in simulated ms on the result (nothing
  sleeps). A call slower than the rail's timeout is *processed* but its answer is
  lost: `unknown` (`provider_timeout`); a status query under the same key reveals it.
- Declines: a base rate, by BIN prefix and by amount band (per mille); the public
  test cards of `simulated.py` behave as there, on every rail.
- Schedules by event time: `outage` (every call refused before processing,
  retryable), `degraded` (latency multiplied, some calls refused, retryable),
  `partition` (calls processed, every answer lost: the network-partition scenario).
- Bank transfer: accepted at once, settled `settle_days` later, or returned
  (`return_per_mille`) `return_days` later, by event time, with one of its
  `return_codes`; `transfer_notices` is the rail's notification feed.
- BNPL: the provider approves the customer's plan (authorize) and pays the merchant
  upfront at capture, less its fee; the instalments are the provider's business.
- Settlement reports per day: one row per capture (fee included), refund (negative)
  and bank return (negative), the shape reconciliation reads.
- Memory: with a journal dir the records are also kept on disk (`journal.py`), so a
  restarted worker, or another worker taking the partition, gets the recorded answer.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Any

from connectors.providers.journal import Journal
from connectors.providers.simulated import (
    AMOUNT_CEILING_MINOR,
    CAPTURE_FAILS,
    DECLINED_CARDS,
    TIMEOUT_THEN_APPROVED,
    UNREACHABLE,
    Call,
    ProviderResult,
    number_mismatch,
)
from schemas.money import is_currency
from schemas.times import EPOCH

DEFAULT_RAILS = Path(__file__).parent / "rails.toml"
KINDS = ("card", "wallet", "bank_transfer", "bnpl")
SCHEDULE_MODES = ("outage", "degraded", "partition")
OPERATIONS = ("authorize", "capture", "void", "refund")  # what a rail records
DAY_MS = 86_400_000
# Provider-side records kept per rail; the oldest are forgotten past this (a real
# provider keeps idempotency keys for a bounded time too, e.g. 24 h).
MAX_RECORDS = 1_000_000
MAX_WINDOWS = 1_000
# A refused connection fails fast.
REFUSED_LATENCY_MS = 5
_NORMAL = NormalDist()
_Z99 = _NORMAL.inv_cdf(0.99)
# Why a probabilistic decline happened, drawn among these.
_DECLINE_REASONS = ("card_declined", "insufficient_funds", "do_not_honor")


class RailConfigError(ValueError):
    """A rails file or value that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Pricing:
    """What the rail charges per capture: basis points of the amount plus a fixed
    part in minor units, rounded down, never more than the amount."""

    fee_bps: int
    fee_fixed_minor: int

    def __post_init__(self) -> None:
        _check(0 <= self.fee_bps <= 10_000, f"fee_bps must be 0..10000, got {self.fee_bps}")
        _check(0 <= self.fee_fixed_minor <= 10_000, f"fee_fixed_minor must be 0..10000, got {self.fee_fixed_minor}")

    def fee_minor(self, amount_minor: int) -> int:
        return min(amount_minor, amount_minor * self.fee_bps // 10_000 + self.fee_fixed_minor)


@dataclass(frozen=True)
class Latency:
    p50_ms: int
    p99_ms: int
    timeout_ms: int  # the client gives up after this: the answer is lost

    def __post_init__(self) -> None:
        _check(1 <= self.p50_ms <= self.p99_ms <= 600_000, f"need 1 <= p50_ms <= p99_ms <= 600000: {self}")
        _check(1 <= self.timeout_ms <= 600_000, f"timeout_ms must be 1..600000, got {self.timeout_ms}")

    def draw_ms(self, u: float, factor: int = 1) -> int:
        """The latency at quantile `u` of a lognormal with this p50 and p99."""
        sigma = math.log(self.p99_ms / self.p50_ms) / _Z99
        z = _NORMAL.inv_cdf(min(max(u, 1e-9), 1 - 1e-9))
        return max(1, min(round(self.p50_ms * math.exp(sigma * z)) * factor, 10 * self.timeout_ms))


@dataclass(frozen=True)
class Window:
    """A scheduled condition of a rail over event time [start_ms, end_ms)."""

    start_ms: int
    end_ms: int
    mode: str  # "outage" | "degraded" | "partition"
    error_per_mille: int = 0  # degraded: calls refused (retryable)
    latency_factor: int = 1  # degraded: latency multiplied

    def __post_init__(self) -> None:
        _check(self.mode in SCHEDULE_MODES, f"mode must be one of {SCHEDULE_MODES}, got {self.mode!r}")
        _check(0 <= self.start_ms < self.end_ms, f"window needs 0 <= start_ms < end_ms: {self}")
        _check(0 <= self.error_per_mille <= 1000, f"error_per_mille must be 0..1000: {self}")
        _check(1 <= self.latency_factor <= 100, f"latency_factor must be 1..100: {self}")


@dataclass(frozen=True)
class RailConfig:
    name: str
    kind: str  # "card" | "wallet" | "bank_transfer" | "bnpl"
    pricing: Pricing
    latency: Latency
    currencies: frozenset[str]
    max_amount_minor: int = AMOUNT_CEILING_MINOR
    decline_per_mille: int = 0
    # BIN prefix -> decline rate; the longest matching prefix applies
    bin_decline_per_mille: Mapping[str, int] = field(default_factory=dict)
    # (from amount_minor, rate), ascending: the last band the amount reaches applies
    amount_decline_per_mille: tuple[tuple[int, int], ...] = ()
    settle_days: int = 1
    return_per_mille: int = 0  # bank transfer: share returned after acceptance
    return_days: int = 3
    return_codes: tuple[str, ...] = ("R01",)  # bank transfer: drawn for each return
    schedule: tuple[Window, ...] = ()

    def __post_init__(self) -> None:
        _check(
            bool(self.name) and self.name.replace("_", "").isalnum() and len(self.name) <= 32,
            f"rail name must be 1-32 letters, digits or _: {self.name!r}",
        )
        _check(self.kind in KINDS, f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        _check(
            bool(self.currencies) and all(is_currency(c) for c in self.currencies),
            f"{self.name}: currencies must be ISO 4217 codes",
        )
        _check(self.max_amount_minor >= 1, f"{self.name}: max_amount_minor must be >= 1")
        rates = [
            self.decline_per_mille,
            self.return_per_mille,
            *self.bin_decline_per_mille.values(),
            *(r for _, r in self.amount_decline_per_mille),
        ]
        _check(all(0 <= r <= 1000 for r in rates), f"{self.name}: rates are per mille, 0..1000")
        _check(
            all(p.isdigit() and 1 <= len(p) <= 8 for p in self.bin_decline_per_mille),
            f"{self.name}: BIN prefixes are 1-8 digits",
        )
        bands = [a for a, _ in self.amount_decline_per_mille]
        _check(bands == sorted(bands), f"{self.name}: amount bands must ascend")
        _check(0 <= self.settle_days <= 30 and 1 <= self.return_days <= 60, f"{self.name}: days out of range")
        _check(len(self.schedule) <= MAX_WINDOWS, f"{self.name}: at most {MAX_WINDOWS} schedule windows")
        _check(
            1 <= len(self.return_codes) <= 32 and all(c.isalnum() and 2 <= len(c) <= 4 for c in self.return_codes),
            f"{self.name}: return_codes must be 1..32 codes of 2-4 letters or digits",
        )

    def window_at(self, at_ms: int) -> Window | None:
        for w in self.schedule:
            if w.start_ms <= at_ms < w.end_ms:
                return w
        return None

    def decline_rate_per_mille(self, card_bin: str, amount_minor: int) -> int:
        by_bin, longest = 0, 0  # the longest matching prefix's rate (a plain loop: one per authorization)
        for prefix, rate in self.bin_decline_per_mille.items():
            if len(prefix) > longest and card_bin.startswith(prefix):
                by_bin, longest = rate, len(prefix)
        by_amount = 0
        for start, rate in self.amount_decline_per_mille:
            if amount_minor >= start:
                by_amount = rate
        return max(self.decline_per_mille, by_bin, by_amount)


@dataclass(frozen=True)
class Record:
    """The provider's side of one processed call."""

    operation: str
    key: str
    payment_id: str | None
    currency: str | None
    amount_minor: int
    at_ms: int
    result: ProviderResult


@dataclass(frozen=True)
class SettlementRow:
    """One line of a rail's daily settlement report. `amount_minor` is signed: a
    capture is positive, a refund or a bank return negative; `fee_minor` is what the
    rail keeps on that line."""

    provider: str
    provider_ref: str
    payment_id: str | None
    currency: str | None
    amount_minor: int
    fee_minor: int
    day: date
    kind: str  # "capture" | "refund" | "return"


class Rail:
    """One simulated rail. Not thread-safe; a worker holds one per rail."""

    def __init__(
        self, config: RailConfig, seed: int = 0, *, max_records: int = MAX_RECORDS, journal_dir: Path | None = None
    ) -> None:
        """`journal_dir`: keep the records in `<journal_dir>/<name>.jsonl` too
        (connectors/providers/journal.py), shared by every Rail over that dir."""
        assert 1 <= max_records <= MAX_RECORDS
        self.config = config
        self.name = config.name
        self.seed = seed
        self.max_records = max_records
        self.records: dict[tuple[str, str], Record] = {}  # (operation, key) -> record, oldest first
        self.calls = 0  # every call, processed or refused
        self.forgotten = 0  # records dropped past max_records
        self.journal = Journal(journal_dir / f"{self.name}.jsonl") if journal_dir is not None else None
        self._catch_up()

    def __repr__(self) -> str:
        return f"Rail({self.name!r}, kind={self.config.kind!r}, seed={self.seed}, records={len(self.records)})"

    # --- the provider interface ---

    def authorize(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, currency: str, call: Call | None = None
    ) -> ProviderResult:
        def process() -> ProviderResult:
            if currency not in self.config.currencies:
                return ProviderResult("declined", "currency_not_supported")
            if amount_minor > self.config.max_amount_minor:
                return ProviderResult("declined", "amount_limit_exceeded")
            mismatch = number_mismatch(call, card_bin, card_last4)
            if mismatch is not None:
                return mismatch
            declined = DECLINED_CARDS.get((card_bin, card_last4))
            if declined:
                return ProviderResult("declined", declined)
            rate = self.config.decline_rate_per_mille(card_bin, amount_minor)
            if self._u(key, "decline") * 1000 < rate:
                return ProviderResult("declined", _DECLINE_REASONS[int(self._u(key, "reason") * len(_DECLINE_REASONS))])
            return ProviderResult("approved")

        answer_lost = (card_bin, card_last4) in (TIMEOUT_THEN_APPROVED, UNREACHABLE)
        return self._call("authorize", key, amount_minor, call, process, answer_lost, currency)

    def status(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, call: Call | None = None
    ) -> ProviderResult:
        """What became of the authorization under `key`: its recorded answer, or a
        decline (`not_processed`) if the rail never processed it."""
        self.calls += 1
        at_ms = call.at_ms if call else None
        window = self.config.window_at(at_ms) if at_ms is not None else None
        if (card_bin, card_last4) == UNREACHABLE or (window is not None and window.mode in ("outage", "partition")):
            return ProviderResult("unknown", "provider_unreachable", latency_ms=REFUSED_LATENCY_MS)
        record = self._recorded("authorize", key)
        latency_ms = self._latency_ms(key, "status", at_ms, window)
        if record is None:
            return ProviderResult("declined", "not_processed", latency_ms=latency_ms)
        return _with_latency(record.result, latency_ms)

    def capture(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, call: Call | None = None
    ) -> ProviderResult:
        def process() -> ProviderResult:
            if (card_bin, card_last4) == CAPTURE_FAILS:
                return ProviderResult("declined", "capture_refused")
            return ProviderResult("approved", fee_minor=self.config.pricing.fee_minor(amount_minor))

        return self._call("capture", key, amount_minor, call, process)

    def void(self, key: str, call: Call | None = None) -> ProviderResult:
        # Releasing a hold is never refused and never lost: the saga's compensation relies on it.
        return self._call("void", key, 0, call, lambda: ProviderResult("approved"), schedule=False)

    def refund(self, key: str, amount_minor: int, call: Call | None = None) -> ProviderResult:
        return self._call("refund", key, amount_minor, call, lambda: ProviderResult("approved"))

    # --- bank transfers and reports ---

    def transfer_status(self, key: str, at_ms: int) -> str:
        """A bank transfer's state at `at_ms` (event time): "accepted", "settled" or
        "returned"; "unknown" for a key the rail has not processed."""
        record = self._recorded("capture", key)
        if record is None or record.result.status != "approved":
            return "unknown"
        day = _day_index(record.at_ms)
        if self._returned(key) and _day_index(at_ms) >= day + self.config.return_days:
            return "returned"
        return "settled" if _day_index(at_ms) >= day + self.config.settle_days else "accepted"

    def transfer_notices(self, key: str, submitted_at_ms: int) -> tuple[tuple[str, int, str | None], ...]:
        """The bank's notifications about the transfer submitted under `key` at
        `submitted_at_ms`, as (kind, event time, return code): "settle" at the start of
        day + settle_days, "return" at the start of day + return_days if it returns
        (after the settlement, or instead of it when return_days <= settle_days).
        A pure function of (seed, rail, key): the same feed every time it is asked."""
        assert self.config.kind == "bank_transfer", self.name
        day = _day_index(submitted_at_ms)
        settle_at, return_at = (day + self.config.settle_days) * DAY_MS, (day + self.config.return_days) * DAY_MS
        if not self._returned(key):
            return (("settle", settle_at, None),)
        code = self.config.return_codes[int(self._u(key, "return_code") * len(self.config.return_codes))]
        if return_at <= settle_at:
            return (("return", return_at, code),)
        return (("settle", settle_at, None), ("return", return_at, code))

    def settlement_report(self, day: date) -> list[SettlementRow]:
        """Every line the rail settles on `day`: captures and refunds `settle_days`
        after they happened, bank returns `return_days` after the transfer (whichever
        process sharing the journal recorded them)."""
        self._catch_up()
        rows: list[SettlementRow] = []
        for record in self.records.values():
            if record.result.status != "approved" or record.operation not in ("capture", "refund"):
                continue
            recorded = _day_index(record.at_ms)
            if recorded + self.config.settle_days == _day_of(day):
                sign = 1 if record.operation == "capture" else -1
                rows.append(
                    self._row(record, sign * record.amount_minor, record.result.fee_minor, day, record.operation)
                )
            if (
                record.operation == "capture"
                and self.config.kind == "bank_transfer"
                and self._returned(record.key)
                and recorded + self.config.return_days == _day_of(day)
            ):
                rows.append(self._row(record, -record.amount_minor, 0, day, "return"))
        return rows

    def authorized(self) -> dict[str, Record]:
        """Approved authorizations by payment_id: the provider-side view tests hold
        against the ledger."""
        self._catch_up()
        return {
            r.payment_id or r.key: r
            for r in self.records.values()
            if r.operation == "authorize" and r.result.status == "approved"
        }

    # --- internals ---

    def _call(
        self,
        operation: str,
        key: str,
        amount_minor: int,
        call: Call | None,
        process: Any,
        answer_lost: bool = False,
        currency: str | None = None,
        *,
        schedule: bool = True,
    ) -> ProviderResult:
        self.calls += 1
        at_ms = call.at_ms if call else 0
        window = self.config.window_at(at_ms) if schedule and call else None
        refused = self._refused(key, operation, at_ms, window)
        if refused is not None:
            return refused  # not processed: nothing recorded
        record = self.records.get((operation, key))
        if record is None:
            with self._exclusive():  # another process may be recording this key right now
                record = self._recorded(operation, key)
                if record is None:
                    result = process()
                    record = Record(
                        operation,
                        key,
                        call.payment_id if call else None,
                        currency or (call.currency if call else None),
                        amount_minor,
                        at_ms,
                        result,
                    )
                    self._remember(record)
        latency_ms = self._latency_ms(key, operation, at_ms, window)
        lost = (
            answer_lost
            or latency_ms >= self.config.latency.timeout_ms
            or (window is not None and window.mode == "partition")
        )
        if lost and operation == "authorize":
            return ProviderResult(
                "unknown", "provider_timeout", latency_ms=min(latency_ms, self.config.latency.timeout_ms)
            )
        return _with_latency(record.result, min(latency_ms, self.config.latency.timeout_ms))

    def _refused(self, key: str, operation: str, at_ms: int, window: Window | None) -> ProviderResult | None:
        if window is None:
            return None
        if window.mode == "outage":
            return ProviderResult("declined", "provider_unavailable", retryable=True, latency_ms=REFUSED_LATENCY_MS)
        if window.mode == "degraded" and self._u(key, f"error:{operation}:{at_ms}") * 1000 < window.error_per_mille:
            return ProviderResult(
                "declined",
                "provider_overloaded",
                retryable=True,
                latency_ms=self._latency_ms(key, operation, at_ms, window),
            )
        return None

    def _latency_ms(self, key: str, operation: str, at_ms: int | None, window: Window | None) -> int:
        factor = window.latency_factor if window is not None and window.mode == "degraded" else 1
        return self.config.latency.draw_ms(self._u(key, f"latency:{operation}:{at_ms}"), factor)

    def _remember(self, record: Record) -> None:
        if self.journal is not None:
            self.journal.append(_record_json(record))  # on disk before the answer goes out
        self._keep(record)

    def _keep(self, record: Record) -> None:
        if len(self.records) >= self.max_records:
            del self.records[next(iter(self.records))]
            self.forgotten += 1
        self.records[record.operation, record.key] = record

    def _recorded(self, operation: str, key: str) -> Record | None:
        """The record under (operation, key), looking at what other processes
        journaled since the last look when this process has none."""
        record = self.records.get((operation, key))
        if record is None and self.journal is not None:
            self._catch_up()
            record = self.records.get((operation, key))
        return record

    def _catch_up(self) -> None:
        if self.journal is None:
            return
        for record in self.journal.read_new(_record_of):
            # The first record of a key is the provider's answer (a later one can only
            # come from a writer that skipped the lock: it is ignored).
            if (record.operation, record.key) not in self.records:
                self._keep(record)

    def _exclusive(self) -> AbstractContextManager[None]:
        return self.journal.locked() if self.journal is not None else nullcontext()

    def _returned(self, key: str) -> bool:
        return self.config.kind == "bank_transfer" and self._u(key, "return") * 1000 < self.config.return_per_mille

    def _row(self, record: Record, amount_minor: int, fee_minor: int, day: date, kind: str) -> SettlementRow:
        return SettlementRow(
            self.name, record.key, record.payment_id, record.currency, amount_minor, fee_minor, day, kind
        )

    def _u(self, key: str, what: str) -> float:
        """A uniform draw in [0, 1) from (seed, rail, key, what): no global RNG."""
        digest = hashlib.sha256(f"{self.seed}\x1f{self.name}\x1f{key}\x1f{what}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


def _record_json(r: Record) -> dict[str, Any]:
    return {
        "operation": r.operation,
        "key": r.key,
        "payment_id": r.payment_id,
        "currency": r.currency,
        "amount_minor": r.amount_minor,
        "at_ms": r.at_ms,
        "status": r.result.status,
        "reason": r.result.reason,
        "fee_minor": r.result.fee_minor,
        "retryable": r.result.retryable,
        "latency_ms": r.result.latency_ms,
    }


def _record_of(obj: dict[str, Any]) -> Record:
    """A journal line's record; ValueError/KeyError/AssertionError if it is not one."""
    ints = ("amount_minor", "at_ms", "fee_minor", "latency_ms")
    texts = ("payment_id", "currency", "reason")
    if (
        obj["operation"] not in OPERATIONS
        or not isinstance(obj["key"], str)
        or not obj["key"]
        or any(type(obj[f]) is not int for f in ints)
        or type(obj["retryable"]) is not bool
        or any(obj[f] is not None and not isinstance(obj[f], str) for f in texts)
    ):
        raise ValueError("a journal field has the wrong type")
    result = ProviderResult(obj["status"], obj["reason"], obj["fee_minor"], obj["retryable"], obj["latency_ms"])
    return Record(
        obj["operation"], obj["key"], obj["payment_id"], obj["currency"], obj["amount_minor"], obj["at_ms"], result
    )


def _with_latency(result: ProviderResult, latency_ms: int) -> ProviderResult:
    return ProviderResult(result.status, result.reason, result.fee_minor, result.retryable, latency_ms)


def _day_index(at_ms: int) -> int:
    return at_ms // DAY_MS


def _day_of(day: date) -> int:
    return (day - EPOCH.date()).days


def day_of_ms(at_ms: int) -> date:
    """The UTC day of an event time, as settlement reports name it."""
    return EPOCH.date() + timedelta(days=_day_index(at_ms))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RailConfigError(message)


# --- configuration ---


def rail_config(raw: Mapping[str, Any], schedule: tuple[Window, ...] = ()) -> RailConfig:
    """A RailConfig from one `[[rails]]` table of the rails file."""
    try:
        return RailConfig(
            name=str(raw["name"]),
            kind=str(raw["kind"]),
            pricing=Pricing(int(raw["fee_bps"]), int(raw["fee_fixed_minor"])),
            latency=Latency(int(raw["latency_p50_ms"]), int(raw["latency_p99_ms"]), int(raw["timeout_ms"])),
            currencies=frozenset(raw["currencies"]),
            max_amount_minor=int(raw.get("max_amount_minor", AMOUNT_CEILING_MINOR)),
            decline_per_mille=int(raw.get("decline_per_mille", 0)),
            bin_decline_per_mille={str(k): int(v) for k, v in raw.get("bin_decline_per_mille", {}).items()},
            amount_decline_per_mille=tuple((int(a), int(r)) for a, r in raw.get("amount_decline_per_mille", [])),
            settle_days=int(raw.get("settle_days", 1)),
            return_per_mille=int(raw.get("return_per_mille", 0)),
            return_days=int(raw.get("return_days", 3)),
            return_codes=tuple(str(c) for c in raw.get("return_codes", ["R01"])),
            schedule=schedule or tuple(Window(**w) for w in raw.get("schedule", [])),
        )
    except KeyError as e:
        raise RailConfigError(f"rail {raw.get('name', '?')!r}: missing field {e.args[0]}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, RailConfigError):
            raise
        raise RailConfigError(f"rail {raw.get('name', '?')!r}: {e}") from None


def load_rail_configs(path: Path | str = DEFAULT_RAILS) -> dict[str, RailConfig]:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise RailConfigError(f"{path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise RailConfigError(f"{path}: not TOML: {e}") from None
    configs: dict[str, RailConfig] = {}
    for entry in raw.get("rails", []):
        cfg = rail_config(entry)
        if cfg.name in configs:
            raise RailConfigError(f"{path}: rail {cfg.name} is defined twice")
        configs[cfg.name] = cfg
    if not configs:
        raise RailConfigError(f"{path}: no [[rails]]")
    return configs


def load_schedules(path: Path | str) -> dict[str, tuple[Window, ...]]:
    """Outage schedules from a TOML file: per rail name an array of tables with
    `mode`, `start_ms`, `end_ms` and (degraded) `error_per_mille`, `latency_factor`."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
        out = {str(name): tuple(Window(**w) for w in windows) for name, windows in raw.items()}
    except (OSError, UnicodeDecodeError) as e:
        raise RailConfigError(f"{path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise RailConfigError(f"{path}: not TOML: {e}") from None
    except RailConfigError as e:
        raise RailConfigError(f"{path}: {e}") from None
    except (TypeError, AttributeError) as e:
        raise RailConfigError(f"{path}: each rail needs an array of windows (mode, start_ms, end_ms): {e}") from None
    if any(len(w) > MAX_WINDOWS for w in out.values()):
        raise RailConfigError(f"{path}: at most {MAX_WINDOWS} windows per rail")
    return out


def schedule_toml(schedules: Mapping[str, tuple[Window, ...]]) -> str:
    """The file `load_schedules` reads."""
    lines = []
    for name, windows in sorted(schedules.items()):
        for w in windows:
            lines += [
                f"[[{name}]]",
                f'mode = "{w.mode}"',
                f"start_ms = {w.start_ms}",
                f"end_ms = {w.end_ms}",
                f"error_per_mille = {w.error_per_mille}",
                f"latency_factor = {w.latency_factor}",
                "",
            ]
    return "\n".join(lines)


def build_rails(
    seed: int = 0,
    path: Path | str = DEFAULT_RAILS,
    schedules: Mapping[str, tuple[Window, ...]] | None = None,
    journal_dir: Path | None = None,
) -> dict[str, Rail]:
    """Every rail of the file, seeded; `schedules` replaces a rail's outage schedule;
    `journal_dir`: the rails keep their records on disk there (Rail)."""
    configs = load_rail_configs(path)
    unknown = set(schedules or {}) - set(configs)
    if unknown:
        raise RailConfigError(f"schedules for unknown rails: {sorted(unknown)}")
    out = {}
    for name, cfg in configs.items():
        if schedules and name in schedules:
            cfg = RailConfig(**{**cfg.__dict__, "schedule": tuple(schedules[name])})
        out[name] = Rail(cfg, seed, journal_dir=journal_dir)
    return out
