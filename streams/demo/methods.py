"""The demo's payment-method flow: after the day, the banks' notifications about the
day's bank transfers (settled, or returned days later by event time), published from
the rails' own decisions (`Rail.transfer_notices`), and the summary line by method.
Fraud on every method: before the day the demo's operator blocks a wallet, a bank
account and a BNPL customer, and the day pays with them (declined), with an address
of the shipped sanctioned list (declined), and in a burst on one instrument of each
method (the burst's fifth create held for review by the method's velocity rule).
Every wallet create carries a cryptogram the wallet provider signed for it
(`sign_wallets`), so its liability shifts and the summary says how many did."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from connectors.kafka.clients import command_producer
from connectors.providers.rails import Rail, build_rails
from models.blocklist import account_digest, shipped_entries
from schemas.codec import Codec
from schemas.ids import derive_payment_id
from schemas.times import from_ms, to_ms
from streams.api.commands import follow_up_command
from streams.client.fraud import block_record
from streams.client.observe import Observer
from streams.client.publish import publish_commands
from streams.domain.authentication import Signer, WalletCryptogram, issue_cryptogram, token_digest
from streams.settings import Settings, client_config
from streams.topics import topic_names

RETURN_TYPES = ("bank_returned", "bank_reversed")
# The fraud showcase: a USD merchant (every method's rails take USD), a burst past each
# method's first velocity limit (3 prior creates: models/rules/v3.toml), one second apart.
FRAUD_MERCHANT = "m_acme"
FRAUD_BURST = 5
FRAUD_AMOUNT_MINOR = 4_200
FRAUD_METHODS = ("wallet", "bank_transfer", "bnpl", "crypto")
BLOCK_CODEC = Codec("FraudBlockEntry")
# The device makes the cryptogram as the customer pays: a moment before the create.
CRYPTOGRAM_LEAD_MS = 2_000


@dataclass(frozen=True)
class BankNotices:
    """The banks' notices this run sent, and what came of them."""

    sent: int = 0
    answered: int = 0
    settled: int = 0  # bank_settle applied
    returned: int = 0  # bank_return applied (before or after the settlement)


def bank_notice_commands(
    events: Mapping[str, list[dict[str, Any]]], rails: Mapping[str, Rail], run_id: str
) -> list[dict[str, Any]]:
    """One bank_settle / bank_return per notice the submitting rail gives for each
    submitted transfer (rails that are not bank rails, e.g. the test provider, give none).
    In event-time order, so a payment's settlement comes before its return."""
    notices = []
    for pid, evs in sorted(events.items()):
        submitted = next((e for e in evs if e["type"] == "bank_submitted"), None)
        rail = rails.get(submitted["provider"]) if submitted else None
        if rail is None or rail.config.kind != "bank_transfer":
            continue
        for kind, at_ms, code in rail.transfer_notices(submitted["provider_ref"], to_ms(submitted["occurred_at"])):
            notices.append((at_ms, pid, kind, code, submitted["merchant_id"]))
    out = []
    for at_ms, pid, kind, code, merchant in sorted(notices):
        out.append(
            follow_up_command(f"bank_{kind}", merchant, f"{pid}-bank-{kind}", pid, None)
            | {
                "command_id": f"cmd_{run_id}_bank_{len(out)}",
                "occurred_at": from_ms(at_ms),
                "bank_notice": {"return_code": code} if code else None,
            }
        )
    return out


def run_bank_notices(settings: Settings, observer: Observer, run_id: str, timeout_s: float) -> BankNotices:
    """Publish the banks' notices for this run's transfers (the rails as the worker built
    them: same file, same seed), wait for every answer, count what applied."""
    rails = build_rails(seed=settings.provider_seed)
    commands = bank_notice_commands(observer.events, rails, run_id)
    publish_commands(settings, commands)
    ids = {c["command_id"] for c in commands}
    observer.wait_for(ids, 0, timeout_s)
    applied = Counter(
        c["kind"]
        for c in commands
        if observer.outcomes.get(c["command_id"]) and observer.outcomes[c["command_id"]][0]["status"] == "succeeded"
    )
    answered = sum(1 for c in ids if observer.outcomes.get(c))
    return BankNotices(len(commands), answered, applied["bank_settle"], applied["bank_return"])


def payments_by_method(events: Mapping[str, list[dict[str, Any]]]) -> Counter[str]:
    """Payments with events, by method (an event's null method is a card)."""
    return Counter((evs[0].get("method") or "card") for evs in events.values() if evs)


def methods_summary(events: Mapping[str, list[dict[str, Any]]], bank: BankNotices) -> str:
    by = payments_by_method(events)
    returns = sum(1 for evs in events.values() for e in evs if e["type"] in RETURN_TYPES)
    methods = ", ".join(f"{m} {n}" for m, n in sorted(by.items()))
    return (
        f"payments by method: {methods}; bank notices {bank.sent} (settled {bank.settled}, returned "
        f"{bank.returned}); returns {returns}"
    )


def _instrument(method: str, run_id: str, which: str) -> dict[str, Any]:
    """A create's instrument fields (and metadata) for the showcase's `which` instrument."""
    if method == "wallet":
        return {
            "method": method,
            "wallet": {
                "provider": "google_pay",
                "token": f"wtok_{run_id}_{which}_account",
                "cryptogram": "AgAAAAAABk4DWZ4C28yUQAAAAAA=",
            },
            "metadata": {},
        }
    if method == "bank_transfer":
        return {
            "method": method,
            "bank_account": {"scheme": "ach", "mandate_id": f"MD-{run_id}-{which}", "account_last4": "0001"},
            "metadata": {"bank_account_digest": account_digest(f"US{run_id}{which}0001")},
        }
    if method == "bnpl":
        return {
            "method": method,
            "bnpl": {"provider": "later"},
            "metadata": {"bnpl_customer": f"cust_{run_id}_{which}"},
        }
    address = shipped_entries()[0].value if which == "blocked" else f"bc1qdemo{run_id}{which}"
    return {"method": method, "crypto": {"asset": "USDC", "refund_address": address}, "metadata": {}}


def fraud_blocks(run_id: str, at: Any) -> list[tuple[bytes, dict[str, Any]]]:
    """The operator's blocks the showcase's declines hit (FraudBlockEntry key, record);
    the crypto one is on the shipped sanctioned list already."""
    return [
        block_record(
            "wallet", f"wtok_{run_id}_blocked_account", "block", "demo: stolen device", at, actor="demo-operator"
        ),
        block_record(
            "bank_account", f"US{run_id}blocked0001", "block", "demo: account takeover", at, actor="demo-operator"
        ),
        block_record(
            "bnpl_customer",
            f"later:cust_{run_id}_blocked",
            "block",
            "demo: synthetic identity",
            at,
            actor="demo-operator",
        ),
    ]


def publish_fraud_blocks(settings: Settings, run_id: str, at: Any) -> None:
    """Put the showcase's blocks on the blocklist topic (before the worker scores its first create)."""
    producer = command_producer(client_config(settings))
    blocklist = topic_names(settings).blocklist
    for key, record in fraud_blocks(run_id, at):
        producer.produce(blocklist, key=key, value=BLOCK_CODEC.encode(record, check=True))
    if producer.flush(30) != 0:
        raise RuntimeError("the broker did not take the demo's blocklist entries in 30 s")


def fraud_commands(run_id: str, start: Any) -> list[dict[str, Any]]:
    """Per method: one create on its blocked instrument, then FRAUD_BURST on one
    instrument, a second apart from `start` (event time)."""
    out: list[dict[str, Any]] = []
    for method in FRAUD_METHODS:
        for which, n in (("blocked", 1), ("burst", FRAUD_BURST)):
            for i in range(n):
                key = f"{run_id}-fraud-{method}-{which}-{i}"
                out.append(
                    {
                        "command_id": f"cmd_{run_id}_fraud_{len(out)}",
                        "kind": "create",
                        "merchant_id": FRAUD_MERCHANT,
                        "idempotency_key": key,
                        "payment_id": derive_payment_id(FRAUD_MERCHANT, key),
                        "amount_minor": FRAUD_AMOUNT_MINOR + i,
                        "currency": "USD",
                        "capture_method": "automatic",
                        "card": None,
                        "occurred_at": start + timedelta(seconds=len(out)),
                    }
                    | _instrument(method, run_id, which)
                )
    return out


def fraud_by_method(events: Mapping[str, list[dict[str, Any]]]) -> dict[str, tuple[int, int]]:
    """method -> (payments declined by the fraud stage, payments held for its review)."""
    declined: Counter[str] = Counter()
    reviewed: Counter[str] = Counter()
    for evs in events.values():
        method = (evs[0].get("method") or "card") if evs else "card"
        declined[method] += any(e["type"] == "declined" and e.get("reason_code") == "fraud_suspected" for e in evs)
        reviewed[method] += any(
            e["type"] == "authorization_pending" and e.get("reason_code") == "fraud_review" for e in evs
        )
    return {m: (declined[m], reviewed[m]) for m in sorted(set(declined) | set(reviewed))}


def fraud_summary(events: Mapping[str, list[dict[str, Any]]]) -> str:
    by = fraud_by_method(events)
    return "fraud by method: " + "; ".join(f"{m} declined {d}, reviewed {r}" for m, (d, r) in by.items())


def sign_wallets(items: list[Any], signer: Signer) -> int:
    """Replace each wallet create's cryptogram with one the wallet provider (`signer`,
    key kind wallet-signing) issued for that create: its payment, merchant, amount and
    device token (ingest verifies it, the payment's liability shifts). A retry of the
    same request gets the same cryptogram. Returns the creates signed."""
    issued: dict[tuple[str, int], str] = {}
    signed = 0
    for cmd in items:
        if not isinstance(cmd, dict) or cmd["kind"] != "create" or cmd.get("method") != "wallet":
            continue
        wallet = cmd["wallet"]
        key = (cmd["payment_id"], cmd["amount_minor"])
        if key not in issued:
            claims = WalletCryptogram(
                signer.key_id,
                wallet["provider"],
                token_digest(wallet["token"]),
                cmd["payment_id"],
                cmd["merchant_id"],
                cmd["amount_minor"],
                cmd["currency"],
                to_ms(cmd["occurred_at"]) - CRYPTOGRAM_LEAD_MS,
            )
            issued[key] = issue_cryptogram(claims, signer)
        cmd["wallet"] = wallet | {"cryptogram": issued[key]}
        signed += 1
    return signed


def wallet_liability(events: Mapping[str, list[dict[str, Any]]]) -> tuple[int, int]:
    """(wallet payments, those whose events record the liability shift)."""
    wallets = [evs for evs in events.values() if evs and evs[0].get("method") == "wallet"]
    return len(wallets), sum(1 for evs in wallets if any(e.get("liability_shift") for e in evs))


def wallet_summary(events: Mapping[str, list[dict[str, Any]]]) -> str:
    wallets, shifted = wallet_liability(events)
    return f"wallet liability shift: {shifted} of {wallets} wallet payments (cryptograms signed by the wallet provider)"
