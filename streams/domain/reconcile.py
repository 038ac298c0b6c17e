"""Reconciliation: what a provider says it settled vs what our ledger posted. Pure.

Both sides are `ProviderTxn`s, one per provider call that moved money: a capture
(amount positive) or a refund (amount negative), with its fee, matched by
(provider, provider_ref, kind): `provider_ref` is the provider-side idempotency
key the payments stage sent, and it is on every PaymentEvent; `kind` is capture,
refund or (bank transfers) return, which reuses its capture's key. A provider's
settlement report is a list of these (CSV columns = the field names); the
simulated rails' `SettlementRow`s convert with `from_settlement_row`.

A provider settles `lag_days` after the transaction (cards 1, bank transfers 2;
connectors/providers/rails.toml `settle_days`): the ledger's transactions
*expected* in day D's report are those of day D - lag, and only those can be
`missing_in_report`.

Outcome per transaction of the day: `matched`, `amount_mismatch` (amount, fee or
currency differ), `missing_in_ledger` (the provider settled something we never
posted), `missing_in_report` (we posted it, the provider did not settle it),
`duplicate_in_report`. Everything but `matched` is a discrepancy. A report row
matched by a ledger row expected on another day is matched (a timing difference,
noted in `detail`); ledger rows expected on other days only explain such rows. A
bank transfer is a capture when submitted (bank_submitted) and a return when the
bank returns it (bank_returned, bank_reversed), under the submission's key.

The chain is a source too (`reconcile_custody`): per asset, the ledger's
`crypto_custody` balance at the end of the day must equal the chain's deposits to our
addresses less our sends (refunds to payers) by then; else `custody_mismatch`.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.money import is_currency
from schemas.times import from_ms, to_ms

if TYPE_CHECKING:
    from connectors.providers.chain import SimChain
    from connectors.providers.rails import Rail
    from streams.domain.crypto import CryptoPolicy

STATUSES = (
    "matched",
    "amount_mismatch",
    "missing_in_ledger",
    "missing_in_report",
    "duplicate_in_report",
    "custody_mismatch",
)
MAX_REPORT_ROWS = 5_000_000
# The events whose money a provider settles; a bank transfer's return reuses its submission's key.
# The payment events that moved money at a provider, and as what.
KIND_OF_EVENT = {
    "captured": "capture",
    "refunded": "refund",
    "bank_submitted": "capture",
    "bank_returned": "return",
    "bank_reversed": "return",
}
KINDS = ("capture", "refund", "return")


class ReportError(ValueError):
    pass


@dataclass(frozen=True)
class ProviderTxn:
    provider: str
    provider_ref: str
    payment_id: str
    currency: str
    amount_minor: int  # capture positive, refund negative
    fee_minor: int
    day: date
    kind: str = ""  # capture | refund | return; empty: capture or refund by the amount's sign

    def __post_init__(self) -> None:
        assert self.provider and self.provider_ref and is_currency(self.currency), self
        assert type(self.amount_minor) is int and type(self.fee_minor) is int and self.fee_minor >= 0, self
        if not self.kind:
            object.__setattr__(self, "kind", "capture" if self.amount_minor >= 0 else "refund")
        assert self.kind in KINDS, self


def from_settlement_row(row: Any) -> ProviderTxn:
    """A rail's `SettlementRow` (connectors/providers/rails.py) as a report row; ReportError if it is not one."""
    if (
        row.kind not in KINDS
        or not is_currency(row.currency)
        or not row.provider
        or not row.provider_ref
        or type(row.amount_minor) is not int
        or type(row.fee_minor) is not int
        or row.fee_minor < 0
    ):
        raise ReportError(f"{row.provider}/{row.provider_ref}: not a settlement row ({row.kind}, {row.currency})")
    return ProviderTxn(
        row.provider,
        row.provider_ref,
        row.payment_id or "",
        row.currency,
        row.amount_minor,
        row.fee_minor,
        row.day,
        row.kind,
    )


@dataclass(frozen=True)
class ReconItem:
    """One row of the `reconciliation` table (field names are its columns)."""

    day: date
    provider: str
    provider_ref: str
    payment_id: str
    status: str
    currency: str
    report_amount_minor: int | None
    ledger_amount_minor: int | None
    report_fee_minor: int | None
    ledger_fee_minor: int | None
    detail: str


@dataclass(frozen=True)
class ReconResult:
    day: date
    items: tuple[ReconItem, ...]

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(i.status for i in self.items)
        return {s: c.get(s, 0) for s in STATUSES}

    @property
    def discrepancies(self) -> int:
        """The alert's `settlement_discrepancies_total` for this day."""
        return sum(1 for i in self.items if i.status != "matched")


def ledger_side(events: Iterable[Mapping[str, Any]]) -> list[ProviderTxn]:
    """The provider transactions our books hold, from the payment events the ledger
    posted (captures and refunds that went through a provider; not the chain's)."""
    out = []
    for e in events:
        kind = KIND_OF_EVENT.get(e["type"])
        if kind is None or not e.get("provider") or not e.get("provider_ref") or e.get("crypto"):
            continue  # a crypto refund is a send on the chain: reconciled with the custody
        at = e["occurred_at"] if isinstance(e["occurred_at"], int) else to_ms(e["occurred_at"])
        sign = 1 if kind == "capture" else -1
        out.append(
            ProviderTxn(
                e["provider"],
                e["provider_ref"],
                e["payment_id"],
                e["currency"],
                sign * e["amount_minor"],
                e.get("fee_minor") or 0,
                from_ms(at).date(),
                kind,
            )
        )
    return out


def reconcile(
    day: date, report: Iterable[ProviderTxn], ledger: Iterable[ProviderTxn], lag_days: Mapping[str, int] | None = None
) -> ReconResult:
    """Match the providers' report rows of `day` against the ledger's transactions;
    `lag_days`: provider -> days from a transaction to its report (absent: 0)."""
    lag = lag_days or {}

    def expected(t: ProviderTxn) -> date:
        return t.day + timedelta(days=lag.get(t.provider, 0))

    books: dict[tuple[str, str, str], ProviderTxn] = {}
    for t in ledger:
        books.setdefault((t.provider, t.provider_ref, t.kind), t)
    seen: set[tuple[str, str, str]] = set()
    items = []
    for n, r in enumerate(x for x in report if x.day == day):
        if n >= MAX_REPORT_ROWS:
            raise ReportError(f"more than {MAX_REPORT_ROWS} report rows for {day}")
        key = (r.provider, r.provider_ref, r.kind)
        mine = books.get(key)
        if key in seen:
            items.append(_item(day, r, mine, "duplicate_in_report", "the report lists this transaction again"))
            continue
        seen.add(key)
        if mine is None:
            why = (
                "a bank return the ledger has not booked" if r.kind == "return" else "no such transaction in the ledger"
            )
            items.append(_item(day, r, None, "missing_in_ledger", why))
            continue
        diffs = [
            f"{f} report {getattr(r, f)} ledger {getattr(mine, f)}"
            for f in ("currency", "amount_minor", "fee_minor")
            if getattr(r, f) != getattr(mine, f)
        ]
        timing = [] if expected(mine) == day else [f"ledger day {mine.day.isoformat()}"]
        items.append(_item(day, r, mine, "amount_mismatch" if diffs else "matched", "; ".join(diffs + timing)))
    for key, mine in sorted(books.items()):
        if expected(mine) == day and key not in seen:
            items.append(_item(day, None, mine, "missing_in_report", "the provider did not report it"))
    return ReconResult(day, tuple(items))


def _item(day: date, r: ProviderTxn | None, mine: ProviderTxn | None, status: str, detail: str) -> ReconItem:
    any_ = r or mine
    assert any_ is not None
    return ReconItem(
        day=day,
        provider=any_.provider,
        provider_ref=any_.provider_ref,
        payment_id=any_.payment_id,
        status=status,
        currency=any_.currency,
        report_amount_minor=r.amount_minor if r else None,
        ledger_amount_minor=mine.amount_minor if mine else None,
        report_fee_minor=r.fee_minor if r else None,
        ledger_fee_minor=mine.fee_minor if mine else None,
        detail=detail,
    )


REPORT_COLUMNS = tuple(f.name for f in fields(ProviderTxn))


def read_report(path: Path) -> list[ProviderTxn]:
    """A provider settlement report as CSV with a header of REPORT_COLUMNS; ReportError
    names the line of a bad row."""
    out: list[ProviderTxn] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != REPORT_COLUMNS:
            raise ReportError(f"{path}: header must be {','.join(REPORT_COLUMNS)}")
        for row in reader:
            if len(out) >= MAX_REPORT_ROWS:
                raise ReportError(f"{path}: more than {MAX_REPORT_ROWS} rows")
            try:
                out.append(
                    ProviderTxn(
                        row["provider"],
                        row["provider_ref"],
                        row["payment_id"],
                        row["currency"],
                        int(row["amount_minor"]),
                        int(row["fee_minor"]),
                        date.fromisoformat(row["day"]),
                        row["kind"],
                    )
                )
            except (ValueError, TypeError, AssertionError) as e:
                raise ReportError(f"{path}:{reader.line_num}: bad row ({type(e).__name__})") from None
    return out


def write_report(path: Path, rows: Iterable[ProviderTxn]) -> int:
    """A report as CSV (REPORT_COLUMNS), e.g. a rail's `settlement_report(day)` exported
    for `paystream reconcile`; returns the rows written."""
    n = 0
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(REPORT_COLUMNS)
        for t in rows:
            out.writerow([getattr(t, c) for c in REPORT_COLUMNS])
            n += 1
    assert n <= MAX_REPORT_ROWS
    return n


@dataclass(frozen=True)
class Export:
    files: dict[str, Path]  # rail -> the CSV written
    rows: dict[str, int]  # rail -> rows in it
    altered: ProviderTxn | None  # the row written off by one minor unit, if asked


def export_reports(rails: Mapping[str, Rail], day: date, out_dir: Path, *, inject_discrepancy: bool = False) -> Export:
    """One `<out_dir>/<rail>.csv` per rail with its `settlement_report(day)` (a rail
    that settles nothing that day gets the header only: it reported nothing). With
    `inject_discrepancy`, the first row (rails by name) is written 1 minor unit
    higher, for reconcile to flag as `amount_mismatch`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files, counts, altered = {}, {}, None
    for name in sorted(rails):
        rows = [from_settlement_row(r) for r in rails[name].settlement_report(day)]
        if inject_discrepancy and altered is None and rows:
            altered = rows[0] = replace(rows[0], amount_minor=rows[0].amount_minor + 1)
        path = out_dir / f"{name}.csv"
        tmp = path.with_suffix(".csv.tmp")
        counts[name] = write_report(tmp, rows)
        os.replace(tmp, path)  # reconcile never reads a half-written report
        files[name] = path
    return Export(files, counts, altered)


# --- the chain as a source: custody per asset ---

CUSTODY_ACCOUNT = "house:crypto_custody:"  # streams/domain/ledger.py house_account("crypto_custody", shard)
SEND_EVENTS = ("crypto_refunded", "refunded")  # our transactions out of a deposit address


def _ms(at: Any) -> int:
    return at if isinstance(at, int) else to_ms(at)


def day_end_ms(day: date) -> int:
    """The last millisecond of `day` (UTC): the report's cut-off."""
    return to_ms(datetime.combine(day + timedelta(days=1), time.min, UTC)) - 1


def last_look_ms(issued_ms: int, expires_ms: int, cutoff_ms: int, policy: CryptoPolicy) -> int | None:
    """When the pipeline last looked at a payment's address by `cutoff_ms`: its crypto
    timer fires every `poll_ms` after the quote and stops at the first look at or past
    `expires + watch_ms` (streams/domain/crypto.py `watching`). None: not looked at yet. The
    chain is compared as of that look, so a deposit mined since is not a discrepancy."""
    looks = (cutoff_ms - issued_ms) // policy.poll_ms
    if looks < 1:
        return None
    return min(issued_ms + looks * policy.poll_ms, watch_end_ms(issued_ms, expires_ms, policy))


def watch_end_ms(issued_ms: int, expires_ms: int, policy: CryptoPolicy) -> int:
    """The pipeline's last look at a quote's address ever (`last_look_ms` of any later
    cutoff): from then on what the chain shows for the quote no longer changes."""
    last = -(-(expires_ms + policy.watch_ms - issued_ms) // policy.poll_ms)
    return issued_ms + max(last, 1) * policy.poll_ms


@dataclass(frozen=True)
class CustodyCheckpoint:
    """The chain's custody per asset as of `cutoff_ms`, counting only what can no longer
    change: the quotes whose watch ended by then (`watch_end_ms` <= cutoff) and the
    sends by then; and the ledger's custody balance by then. A later check starts here
    and reads only the quotes still watched then and what happened since, so its reads
    stay bounded however long the history (docs/payments.md, "Reconciliation against
    the chain")."""

    cutoff_ms: int
    chain_settled: Mapping[str, int]
    ledger: Mapping[str, int]


#: Before any event: nothing settled, nothing booked.
NO_CHECKPOINT = CustodyCheckpoint(-1, {}, {})


def custody_since(
    checkpoint: CustodyCheckpoint,
    events: Iterable[Mapping[str, Any]],
    chains: Mapping[str, SimChain],
    policy: CryptoPolicy,
    cutoff_ms: int,
    keep_ms: int | None = None,
) -> tuple[dict[str, int], CustodyCheckpoint]:
    """asset -> what the chain says our deposit addresses hold at `cutoff_ms` (the
    deposits it shows for each quoted address, as of the pipeline's last look, less our
    sends by then), from `checkpoint` on; and the checkpoint at `keep_ms` (checkpoint's
    cutoff <= keep_ms <= cutoff_ms; default cutoff_ms) with its chain side (its ledger
    side is the caller's: `ledger_custody`). `events` (payment events: the quotes name the
    addresses, the sends carry their amounts; a simulated chain keeps no history of its
    own) may hold more than it needs: what the checkpoint holds already is skipped."""
    keep = cutoff_ms if keep_ms is None else keep_ms
    assert checkpoint.cutoff_ms <= keep <= cutoff_ms, (checkpoint.cutoff_ms, keep, cutoff_ms)
    out = dict(checkpoint.chain_settled)
    settled = dict(checkpoint.chain_settled)
    for e in events:
        crypto = e.get("crypto")
        at = _ms(e["occurred_at"])
        if crypto is None or at > cutoff_ms:
            continue
        asset = crypto["asset"]
        if e["type"] == "crypto_quoted":
            expires = _ms(crypto["expires_at"])
            ends = watch_end_ms(at, expires, policy)
            look = last_look_ms(at, expires, cutoff_ms, policy)
            if ends <= checkpoint.cutoff_ms or look is None:
                continue  # in the checkpoint already, or not looked at yet
            view = chains[asset].view(crypto["address"], crypto["due_minor"], at, expires, look)
            held = sum(d.amount_minor for d in view.deposits)
            out[asset] = out.get(asset, 0) + held
            if ends <= keep:
                settled[asset] = settled.get(asset, 0) + held
        elif e["type"] in SEND_EVENTS and at > checkpoint.cutoff_ms:
            out[asset] = out.get(asset, 0) - crypto["amount_minor"]
            if at <= keep:
                settled[asset] = settled.get(asset, 0) - crypto["amount_minor"]
    return out, CustodyCheckpoint(keep, settled, {})


def chain_custody(
    events: Iterable[Mapping[str, Any]], chains: Mapping[str, SimChain], policy: CryptoPolicy, cutoff_ms: int
) -> dict[str, int]:
    """asset -> what the chain says our deposit addresses hold at `cutoff_ms`, from
    every event (`custody_since` from no checkpoint)."""
    return custody_since(NO_CHECKPOINT, events, chains, policy, cutoff_ms)[0]


def ledger_custody(
    entries: Iterable[Mapping[str, Any]], cutoff_ms: int, since: CustodyCheckpoint = NO_CHECKPOINT
) -> dict[str, int]:
    """asset -> the `crypto_custody` balance (debit) of the journal entries by `cutoff_ms`
    (records as on ledger-entries, streams/domain/ledger.py `entry_to_record`), over every
    shard; from `since`'s ledger balance on, adding only the entries after its cut-off."""
    out = dict(since.ledger)
    for entry in entries:
        at = _ms(entry["occurred_at"])
        if at > cutoff_ms or at <= since.cutoff_ms:
            continue
        for line in entry["lines"]:
            if line["account"].startswith(CUSTODY_ACCOUNT):
                out[line["currency"]] = out.get(line["currency"], 0) + line["debit_minor"] - line["credit_minor"]
    return out


def reconcile_custody(
    day: date, chain: Mapping[str, int], ledger: Mapping[str, int], chain_names: Mapping[str, str]
) -> ReconResult:
    """One item per asset: `matched` when the ledger's custody equals the chain's,
    else `custody_mismatch` (counted like any other discrepancy). The chain's figure
    is the report side, the ledger's the ledger side, in the asset's minor units;
    `chain_names`: asset -> the chain's name (the item's provider)."""
    items = []
    for asset in sorted(set(chain) | set(ledger)):
        on_chain, booked = chain.get(asset, 0), ledger.get(asset, 0)
        status = "matched" if on_chain == booked else "custody_mismatch"
        detail = (
            "" if status == "matched" else f"chain {on_chain} ledger {booked} ({booked - on_chain:+d} in the ledger)"
        )
        items.append(
            ReconItem(
                day=day,
                provider=chain_names.get(asset, asset),
                provider_ref=f"custody:{asset}",
                payment_id="",
                status=status,
                currency=asset,
                report_amount_minor=on_chain,
                ledger_amount_minor=booked,
                report_fee_minor=None,
                ledger_fee_minor=None,
                detail=detail,
            )
        )
    return ReconResult(day, tuple(items))
