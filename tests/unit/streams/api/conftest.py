"""An API over an in-memory bus whose answers come from a tiny fake pipeline: the
HTTP logic under test, the payment rules only as far as the responses need them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors.vault.intake import CardOpener, Sealer, active_sealer
from connectors.vault.keys import ACS_SIGNING, ActiveSigner, FileKeyStore
from schemas.ids import derive_outcome_id
from streams.api import auth
from streams.api.acs import Acs
from streams.api.app import ApiConfig, create_app
from streams.api.bus import InMemoryBus
from streams.api.stripe_events import Webhooks
from streams.domain.merchants import merchant_record
from streams.domain.sanctions import SanctionsList

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
DECLINED_CARD = "4000000000000002"
STEP_UP_CARD = "4000002760003184"  # the fake risk stage asks for 3-D Secure
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


@dataclass
class FakePipeline:
    """Creates authorize (declining DECLINED_CARD), captures and refunds move the
    amounts; per-merchant keys replay or conflict like the real one."""

    opener: CardOpener
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    silent: bool = False  # never answer: a stalled pipeline

    def __call__(self, cmd: dict[str, Any]) -> dict[str, Any] | None:
        if self.silent:
            return None
        # Ingest's part: open the sealed card (bound to this command) and compare cards, not ciphertexts.
        number = (
            self.opener.open(cmd["sealed_card"], cmd["merchant_id"], cmd["command_id"]).number
            if cmd.get("sealed_card")
            else None
        )
        request = {k: v for k, v in cmd.items() if k not in ("command_id", "occurred_at", "sealed_card")} | {
            "number": number
        }
        base = {
            "outcome_id": derive_outcome_id(cmd["command_id"]),
            "command_id": cmd["command_id"],
            "kind": cmd["kind"],
            "merchant_id": cmd["merchant_id"],
            "idempotency_key": cmd["idempotency_key"],
            "payment_id": cmd["payment_id"],
            "reason_code": None,
            "reason_detail": None,
            "amount_minor": cmd["amount_minor"],
            "occurred_at": cmd["occurred_at"],
        }
        prior = self.keys.get((cmd["merchant_id"], cmd["idempotency_key"]))
        if prior is not None:
            if prior[0] != request:
                return (
                    base
                    | self._none()
                    | {"status": "rejected", "reason_code": "idempotency_conflict", "currency": None}
                )
            return prior[1] | {"command_id": cmd["command_id"], "status": "replayed"}
        p = self.payments.get(cmd["payment_id"])
        if cmd["kind"] == "create":
            assert cmd["card"] is None and number is not None  # the API publishes sealed cards only
            declined, step_up = number == DECLINED_CARD, number == STEP_UP_CARD
            status = "declined" if declined else ("authorized" if cmd["capture_method"] == "manual" else "captured")
            if step_up:
                p = {
                    "payment_status": "requires_action",
                    "merchant_id": cmd["merchant_id"],
                    "currency": cmd["currency"],
                    "authorized_minor": 0,
                    "captured_minor": 0,
                    "refunded_minor": 0,
                    "card_bin": number[:6],
                    "card_last4": number[-4:],
                }
                self.payments[cmd["payment_id"]] = p
                out = base | p | {"status": "succeeded"}
                self.keys[(cmd["merchant_id"], cmd["idempotency_key"])] = (request, out)
                return out
            p = {
                "payment_status": status,
                "merchant_id": cmd["merchant_id"],
                "currency": cmd["currency"],
                "authorized_minor": 0 if declined else cmd["amount_minor"],
                "captured_minor": cmd["amount_minor"] if not declined and cmd["capture_method"] == "automatic" else 0,
                "refunded_minor": 0,
                "card_bin": number[:6],
                "card_last4": number[-4:],
            }
            self.payments[cmd["payment_id"]] = p
            out = (
                base
                | p
                | {
                    "status": "rejected" if declined else "succeeded",
                    "reason_code": "card_declined" if declined else None,
                }
            )
        elif p is None or p["merchant_id"] != cmd["merchant_id"]:
            return base | self._none() | {"status": "rejected", "reason_code": "payment_not_found", "currency": None}
        elif cmd["kind"] == "capture":
            amount = cmd["amount_minor"] or p["authorized_minor"] - p["captured_minor"]
            if p["payment_status"] != "authorized" or amount > p["authorized_minor"]:
                return base | p | {"status": "rejected", "reason_code": "amount_exceeds_authorized"}
            p |= {"captured_minor": p["captured_minor"] + amount, "payment_status": "captured"}
            out = base | p | {"status": "succeeded"}
        elif cmd["kind"] == "void":
            p |= {"payment_status": "voided"}
            out = base | p | {"status": "succeeded"}
        elif cmd["kind"] == "confirm":  # the saga's 3DS verdict, in short
            authenticated = cmd["three_ds"]["trans_status"] in ("Y", "A")
            p |= {"payment_status": "authorized" if authenticated else "declined"}
            out = (
                base
                | p
                | (
                    {"status": "succeeded"}
                    if authenticated
                    else {"status": "rejected", "reason_code": "authentication_failed"}
                )
            )
        elif cmd["kind"] in ("dispute_evidence", "dispute_close"):
            out = base | p | {"status": "succeeded"}
        else:
            amount = cmd["amount_minor"] or p["captured_minor"] - p["refunded_minor"]
            p |= {"refunded_minor": p["refunded_minor"] + amount, "payment_status": "refunded"}
            out = base | p | {"status": "succeeded"}
        self.keys[(cmd["merchant_id"], cmd["idempotency_key"])] = (request, out)
        return out

    @staticmethod
    def _none() -> dict[str, Any]:
        return {
            "payment_status": None,
            "authorized_minor": 0,
            "captured_minor": 0,
            "refunded_minor": 0,
            "card_bin": None,
            "card_last4": None,
        }


@dataclass
class FakeReader:
    """The read model over the fake pipeline's payments (PaymentReader)."""

    pipeline: FakePipeline
    # Disputes as ClickHousePayments.disputes answers them (the fake pipeline opens none).
    dispute_rows: list[dict[str, Any]] = field(default_factory=list)
    payout_rows: list[dict[str, Any]] = field(default_factory=list)  # as ClickHousePayments.payouts answers
    # As ClickHousePayments.transfers / application_fees answer, with the platform in `merchant_id`.
    transfer_rows: list[dict[str, Any]] = field(default_factory=list)
    fee_rows: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def _split(
        rows: list[dict[str, Any]], merchant_id: str, limit: int, after: str | None, before: str | None, one: str | None
    ) -> list[dict[str, Any]]:
        mine = sorted((r for r in rows if r["merchant_id"] == merchant_id), key=lambda r: r["id"])
        if one is not None:
            return [r for r in mine if r["id"] == one][:limit]
        if before is not None:
            return [r for r in reversed(mine) if r["id"] < before][:limit]
        return [r for r in mine if r["id"] > (after or "")][:limit]

    def transfers(
        self,
        merchant_id: str,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        transfer_id: str | None = None,
    ) -> list[dict[str, Any]]:
        return self._split(self.transfer_rows, merchant_id, limit, starting_after, ending_before, transfer_id)

    def application_fees(
        self,
        merchant_id: str,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        fee_id: str | None = None,
    ) -> list[dict[str, Any]]:
        return self._split(self.fee_rows, merchant_id, limit, starting_after, ending_before, fee_id)

    def payouts(
        self, merchant_id: str, limit: int, starting_after: str | None = None, ending_before: str | None = None
    ) -> list[dict[str, Any]]:
        mine = sorted((p for p in self.payout_rows if p["merchant_id"] == merchant_id), key=lambda p: p["payout_id"])
        if ending_before is not None:
            return [p for p in reversed(mine) if p["payout_id"] < ending_before][:limit]
        return [p for p in mine if p["payout_id"] > (starting_after or "")][:limit]

    def payout(self, merchant_id: str, payout_id: str) -> dict[str, Any] | None:
        return next(
            (p for p in self.payout_rows if p["merchant_id"] == merchant_id and p["payout_id"] == payout_id), None
        )

    # The ledger's lines and the payment events are read over chDB (tests/integration/api):
    # the fake pipeline posts none.
    def balance_transactions(
        self, merchant_id: str, limit: int, after: dict[str, Any] | None = None, before: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return []

    def balance_transaction(self, merchant_id: str, entry_hex: str, kind: str) -> dict[str, Any] | None:
        return None

    def events(
        self, merchant_id: str, limit: int, starting_after: str | None = None, ending_before: str | None = None
    ) -> list[dict[str, Any]]:
        return []

    def event(self, merchant_id: str, event_id: str) -> dict[str, Any] | None:
        return None

    def refunds(
        self,
        merchant_id: str,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        refund_id: str | None = None,
    ) -> list[dict[str, Any]]:
        return []  # refund events joined to their outcomes: over chDB (tests/unit/streams/api/test_readmodel.py)

    def saved_card(self, merchant_id: str, payment_id: str) -> str | None:
        return None

    def disputes(
        self, merchant_id: str, limit: int, starting_after: str | None = None, ending_before: str | None = None
    ) -> list[dict[str, Any]]:
        mine = sorted((d for d in self.dispute_rows if d["merchant_id"] == merchant_id), key=lambda d: d["event_id"])
        if ending_before is not None:
            return [d for d in reversed(mine) if d["event_id"] < ending_before][:limit]
        return [d for d in mine if d["event_id"] > (starting_after or "")][:limit]

    def dispute(self, merchant_id: str, event_id: str) -> dict[str, Any] | None:
        return next(
            (d for d in self.dispute_rows if d["merchant_id"] == merchant_id and d["event_id"] == event_id), None
        )

    def get(self, payment_id: str) -> dict[str, Any] | None:
        p = self.pipeline.payments.get(payment_id)
        return None if p is None else p | {"payment_id": payment_id}

    def balance(self, merchant_id: str) -> list[dict[str, Any]]:
        """Captured less refunded, all pending (the fake pipeline settles nothing)."""
        pending: dict[str, int] = {}
        for p in self.pipeline.payments.values():
            if p["merchant_id"] == merchant_id:
                pending[p["currency"]] = pending.get(p["currency"], 0) + p["captured_minor"] - p["refunded_minor"]
        return [
            {"account": f"merchant:{merchant_id}:pending", "currency": c, "amount": a}
            for c, a in sorted(pending.items())
        ]

    def list(
        self, merchant_id: str, limit: int, starting_after: str | None = None, ending_before: str | None = None
    ) -> list[dict[str, Any]]:
        mine = sorted(i for i, p in self.pipeline.payments.items() if p["merchant_id"] == merchant_id)
        if ending_before is not None:
            ids = [i for i in reversed(mine) if i < ending_before]
        else:
            ids = [i for i in mine if i > (starting_after or "")]
        return [self.pipeline.payments[i] | {"payment_id": i} for i in ids[:limit]]


@dataclass
class FakeRegistry:
    """The merchant registry in memory (the KycDesk's calls), m_acme a verified platform."""

    records: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            m: merchant_record(m, kyc_status="verified", updated_at=T0) for m in ("m_acme", "m_other")
        }
    )
    writes: list[dict[str, Any]] = field(default_factory=list)

    def registry(self) -> dict[str, dict[str, Any]]:
        return {m: dict(r) for m, r in self.records.items()}

    def write(self, record: dict[str, Any]) -> None:
        self.writes.append(dict(record))
        self.records[record["merchant_id"]] = dict(record)

    def sanctions(self) -> SanctionsList:
        return SanctionsList()


@dataclass
class Api:
    client: TestClient
    bus: InMemoryBus
    pipeline: FakePipeline
    keys_path: Path
    secret: str  # m_acme's key
    other_secret: str  # m_other's key
    reader: FakeReader | None = None
    registry: FakeRegistry | None = None

    def headers(self, key: str | None = None, secret: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {secret or self.secret}"}
        if key is not None:
            h["Idempotency-Key"] = key
        return h

    def create(self, key: str = "order-1", secret: str | None = None, **body: Any):  # type: ignore[no-untyped-def]
        payload = {"amount_minor": 1999, "currency": "USD", "capture_method": "manual", "card": CARD} | body
        return self.client.post("/v1/payments", json=payload, headers=self.headers(key, secret))


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def make_keys(path: Path) -> tuple[str, str]:
    secret, record = auth.new_key("m_acme", "2026-11-25T10:00:00Z")
    other, other_record = auth.new_key("m_other", "2026-11-25T10:00:00Z")
    auth.save({record.key_id: record, other_record.key_id: other_record}, path)
    return secret, other


@pytest.fixture(scope="session")
def intake_keys(tmp_path_factory: pytest.TempPathFactory) -> FileKeyStore:
    store = FileKeyStore(tmp_path_factory.mktemp("intake") / "keys")
    store.init()
    return store


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    # scrypt is deliberately slow: one key file for the session, copied per test.
    path = tmp_path_factory.mktemp("keys") / "api_keys.json"
    return (path, *make_keys(path))


def build_api(
    tmp_path: Path,
    key_file: tuple[Path, str, str],
    intake_keys: FileKeyStore,
    config: ApiConfig = ApiConfig(outcome_timeout_s=0.5),
    clock: Clock | None = None,
    with_reader: bool = False,
) -> Api:
    src, secret, other = key_file
    path = tmp_path / "api_keys.json"
    path.write_bytes(src.read_bytes())
    pipeline = FakePipeline(CardOpener(intake_keys))
    bus = InMemoryBus(pipeline)
    sealer: Sealer = active_sealer(intake_keys)
    reader = FakeReader(pipeline) if with_reader else None
    webhooks = Webhooks(tmp_path / "webhooks.json", lambda merchant: "whsec_" + merchant.encode().hex())
    registry = FakeRegistry()
    app = create_app(
        bus,
        auth.ApiKeys(path),
        sealer=sealer,
        config=config,
        instance="test",
        clock=clock or Clock(),
        now=lambda: T0,
        reader=reader,
        acs=Acs(ActiveSigner.of(intake_keys, ACS_SIGNING)),
        webhooks=webhooks,
        registry=registry,
    )
    return Api(TestClient(app, raise_server_exceptions=False), bus, pipeline, path, secret, other, reader, registry)


@pytest.fixture
def api(tmp_path: Path, key_file: tuple[Path, str, str], intake_keys: FileKeyStore) -> Api:
    return build_api(tmp_path, key_file, intake_keys)
