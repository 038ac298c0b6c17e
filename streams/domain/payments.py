"""The payment aggregate, its transition function and the saga. Pure: no Kafka, no clock.

`decide(payment, command, saga, policy) -> Decision` is the whole state machine.
Every path returns exactly one outcome; an illegal command is a rejection with a
stable reason code and leaves the payment untouched. A change also yields the
payment events the ledger posts, internal commands the stage sends itself (resolve)
and event-time timers (automatic expiry).

The saga of a create: fraud decision -> route -> authorize at the provider ->
(automatic capture). Each step's result is recorded in the aggregate; each provider
call carries a provider idempotency key derived from the payment, so a call repeated
after a crash or redelivery is the same call to the provider, never a second charge.
A payment the fraud decision paused for 3DS (`requires_action`) is continued by a
confirm carrying the cardholder's EMV 3DS result: Y/A authorize, N/R decline
(`authentication_failed`), U as the policy says (`Policy.three_ds_unavailable`). A Y/A
shifts liability to the issuer (recorded on the events) only with the ACS's signed
authentication value, verified against the issuer's keys and this payment
(streams/domain/authentication.py); a bad one refuses the confirm with its reason, and a
result without one authorizes without a shift. A wallet create whose cryptogram ingest
verified against the wallet provider's key shifts it the same way (no 3DS on a wallet).
A timed-out authorization leaves the payment `pending`; a `resolve` command asks the
provider's status under the same key.
A capture the provider refuses after approving the authorization is compensated by a
void at the provider (the hold is released).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from connectors.providers.chain import SimChain
from connectors.providers.router import Routed, Router, RoutingState, card_of
from connectors.providers.simulated import Call, ProviderResult
from connectors.vault.vault import VaultError
from schemas.ids import (
    derive_command_id,
    derive_event_id,
    derive_label_id,
    derive_outcome_id,
    derive_provider_key,
)
from schemas.state import canonical_json, evolved, state_json, state_loads
from schemas.times import from_ms, span_ms
from schemas.times import to_ms as event_ms
from streams.domain.authentication import Refusal, verify_cavv
from streams.domain.crypto import (
    CryptoPayment,
    CryptoPolicy,
    Move,
    observe,
    quote,
    watching,
)
from streams.domain.methods import DISPUTABLE, NO_STEP_UP, instrument_label, method_of
from streams.domain.outcomes import outcome, rejection
from streams.domain.splits import (
    SPLIT_KINDS,
    Share,
    SplitError,
    allocate,
    checked_splits,
)
from streams.domain.subscriptions import is_merchant_initiated
from streams.domain.timers import Timer

# A payment carries the idempotency records of its follow-ups; bound them
# (the default of Policy.max_follow_ups, PAYSTREAM_PAYMENT_MAX_FOLLOW_UPS).
MAX_FOLLOW_UPS = 100
# Status queries for one pending authorization before it is left to ops.
MAX_RESOLVE_ATTEMPTS = 5
# Evidence submissions kept per open dispute (each at most ingest.EVIDENCE_MAX_CHARS).
MAX_EVIDENCE = 10
# What the network charges per dispute, in minor units of the payment's currency.
DISPUTE_FEE_MINOR = 1_500
# A lost dispute with this reason is a chargeback for fraud: a fraud label.
FRAUD_DISPUTE_REASONS = frozenset({"fraudulent"})

STATUSES = frozenset(
    {
        "pending",
        "authorized",
        "partially_captured",
        "captured",
        "partially_refunded",
        "refunded",
        "voided",
        "expired",
        "declined",
        "failed",
        "requires_review",
        "requires_action",
        # a bank transfer's own: submitted to the bank, settled (funds arrived), returned
        "submitted",
        "settled",
        "returned",
        # a crypto payment's own (streams/domain/crypto.py): quoted, paid in full (not deep yet), final
        "awaiting_payment",
        "confirming",
        "confirmed",
    }
)
CRYPTO_STATUSES = frozenset({"awaiting_payment", "confirming", "confirmed"})
# Statuses a capture may still happen in (within the window, with hold left).
CAPTURABLE = frozenset({"authorized", "partially_captured"})
# A create the fraud decision paused before authorization: the one command that
# continues it, and the reason code of the pause and of its timeout.
AWAITING = {
    "requires_review": ("review_resolve", "fraud_review"),
    "requires_action": ("confirm", "requires_action"),
}
# EMV 3DS 2.x final transStatus values a confirm carries (ValidatedCommand.three_ds):
# authenticated and attempted shift fraud-chargeback liability to the issuer; not
# authenticated and rejected fail the step-up; unavailable is the policy's call.
THREE_DS_SHIFTS_LIABILITY = frozenset({"Y", "A"})
THREE_DS_FAILED = frozenset({"N", "R"})
THREE_DS_UNAVAILABLE = "U"
# What a U (authentication could not be performed) does: authorize without a
# liability shift (fail open, as the rules' fallback does) or decline.
THREE_DS_UNAVAILABLE_ACTIONS = ("authorize", "decline")


@dataclass(frozen=True)
class Policy:
    auth_window: timedelta = timedelta(days=7)
    max_follow_ups: int = MAX_FOLLOW_UPS
    dispute_fee_minor: int = DISPUTE_FEE_MINOR
    three_ds_unavailable: str = "authorize"  # one of THREE_DS_UNAVAILABLE_ACTIONS
    crypto: CryptoPolicy = field(default_factory=CryptoPolicy)

    def __post_init__(self) -> None:
        assert 1 <= self.max_follow_ups <= 1_000, self.max_follow_ups
        assert 0 <= self.dispute_fee_minor <= 10**9, self.dispute_fee_minor
        assert self.three_ds_unavailable in THREE_DS_UNAVAILABLE_ACTIONS, self.three_ds_unavailable

    @property
    def auth_window_ms(self) -> int:
        return span_ms(self.auth_window)


class Provider(Protocol):
    """A payment provider as the saga sees it; every call is idempotent by `key`.
    `call` carries the payment, currency and event time (settlement reports, schedules)."""

    name: str

    def authorize(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, currency: str, call: Call | None = None
    ) -> ProviderResult: ...
    def status(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, call: Call | None = None
    ) -> ProviderResult: ...
    def capture(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, call: Call | None = None
    ) -> ProviderResult: ...
    def void(self, key: str, call: Call | None = None) -> ProviderResult: ...
    def refund(self, key: str, amount_minor: int, call: Call | None = None) -> ProviderResult: ...


class CardVault(Protocol):
    """The vault as the saga sees it (connectors/vault/topic.py behind the worker's audit):
    the PAN of a token, for one provider call, recorded as revealed for `purpose`.
    Raises VaultError when the card cannot be had (unknown token, unreadable topic)."""

    def reveal(self, token: str, merchant_id: str, payment_id: str, purpose: str, at_ms: int) -> str: ...


# Why a PAN is revealed: the one call that needs it (docs/security.md, The vault).
REVEAL_MIT = "merchant_initiated_charge"


def needs_pan(cmd: Mapping[str, Any]) -> bool:
    """A merchant-initiated charge on a saved card (a subscription's or an API off-session
    one: `merchant_initiated`, the card a vault token): no cardholder is present to give the
    number, so the provider gets it from the vault. Every other authorization goes by BIN
    and last 4."""
    card = cmd.get("card")
    return bool(card and card.get("token")) and is_merchant_initiated(cmd)


FRAUD_ACTIONS = ("approve", "requires_action", "review", "decline")


@dataclass(frozen=True)
class FraudVerdict:
    action: str  # one of FRAUD_ACTIONS
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.action in FRAUD_ACTIONS, self.action


APPROVE = FraudVerdict("approve")


def pass_through(cmd: dict[str, Any]) -> FraudVerdict:
    """Approve everything (tests that exercise the rest of the saga)."""
    return APPROVE


def attached(cmd: dict[str, Any]) -> FraudVerdict:
    """The fraud hook: the decision the risk stage attached to the create
    (streams/stages/risk.py). A create without one (written before ValidatedCommand v2,
    or a topology without the risk stage) is approved, as before the risk stage."""
    action = cmd.get("fraud_action")
    if action is None:
        return APPROVE
    return FraudVerdict(action, tuple(cmd.get("fraud_reasons") or ()))


@dataclass(frozen=True)
class Saga:
    """The outside world of the payments stage: the providers, the router over them
    and the fraud hook."""

    providers: dict[str, Provider]
    # (create command) -> the name of the provider to authorize at; or a Router, which
    # scores the routes, retries and fails over over its state (connectors/providers/router.py)
    route: Callable[[dict[str, Any]], str] | Router
    fraud: Callable[[dict[str, Any]], FraudVerdict] = attached
    # asset -> the simulated chain crypto payments in it are paid on
    chains: Mapping[str, SimChain] = field(default_factory=dict)
    # The issuers' ACS public keys (key kind acs-signing) by key id: a confirm's
    # authentication value must verify under one of them to shift liability.
    acs_keys: Mapping[str, bytes] = field(default_factory=dict)
    # The vault, for the authorizations that need the PAN (`needs_pan`); None: none revealed.
    cards: CardVault | None = None

    @classmethod
    def single(cls, provider: Provider, fraud: Callable[[dict[str, Any]], FraudVerdict] = attached) -> Saga:
        """One provider takes every payment (until the providers issue brings routing)."""
        return cls({provider.name: provider}, lambda cmd: provider.name, fraud)

    def provider(self, name: str) -> Provider:
        return self.providers[name]

    def authorize(
        self, cmd: dict[str, Any], key: str, call: Call, routing: RoutingState | None, soft_key: str | None = None
    ) -> Routed:
        """Authorize a create at the route's provider (one call), or through the router
        (which may send a soft decline on to another route under `soft_key`).
        A charge that needs the PAN reveals it first, into this call only; a card the
        vault cannot give is declined `card_unavailable` before any provider sees it."""
        if self.cards is not None and needs_pan(cmd):
            try:
                pan = self.cards.reveal(
                    cmd["card"]["token"], cmd["merchant_id"], call.payment_id, REVEAL_MIT, call.at_ms
                )
            except VaultError:
                return Routed(None, ProviderResult("declined", "card_unavailable"), routing or RoutingState())
            call = replace(call, card_number=pan)
        if isinstance(self.route, Router):
            return self.route.authorize(routing or RoutingState(), self.providers, cmd, key, call, soft_key)
        name = self.route(cmd)
        card_bin, card_last4 = card_of(cmd)
        result = self.provider(name).authorize(key, card_bin, card_last4, cmd["amount_minor"], cmd["currency"], call)
        return Routed(name, result, routing or RoutingState())


@dataclass(frozen=True)
class Payment:
    payment_id: str
    merchant_id: str
    currency: str
    amount_minor: int
    capture_method: str
    status: str
    authorized_minor: int
    captured_minor: int
    refunded_minor: int
    card_bin: str | None
    card_last4: str | None
    created_at_ms: int
    version: int  # the number of payment events so far
    card_token: str | None = None
    # The saga's record: who authorized, under which provider key, what fraud said.
    provider: str | None = None
    provider_ref: str | None = None
    fraud_action: str | None = None
    # The create's metadata["payment_method"] (the convention before ValidatedCommand v5),
    # kept while the payment awaits a review or a 3DS confirm: the router needs it when
    # the authorization finally happens.
    payment_method: str | None = None
    resolve_attempts: int = 0
    # The 3DS result that answered the step-up (None: no step-up), and whether it moved
    # fraud-chargeback liability to the issuer (a Y or A with a verified authentication
    # value; a merchant-reported result without one does not); both go on every later event.
    # A wallet payment whose cryptogram ingest verified has liability_shift True and no 3DS.
    three_ds_status: str | None = None
    liability_shift: bool | None = None
    # Hold given back without a capture (void, expiry, failed capture).
    released_minor: int = 0
    # The open dispute (amount 0: none): withdrawn from the merchant until it closes.
    dispute_minor: int = 0
    dispute_reason: str | None = None
    dispute_due_ms: int | None = None
    dispute_evidence: tuple[str, ...] = ()
    # The open dispute's dispute_opened event: its close names it (the dispute's id).
    # None for a dispute opened before this field was kept.
    dispute_event_id: str | None = None
    # Charged back for good by lost disputes: neither refundable nor disputable again.
    dispute_lost_minor: int = 0
    # The payment method (streams/domain/methods.py) and, for a non-card one, what names its
    # instrument (wallet, masked mandate, BNPL provider).
    method: str = "card"
    instrument: str | None = None
    # A bank transfer returned by the customer's bank: the amount taken back, and why.
    returned_minor: int = 0
    return_code: str | None = None
    # idempotency_key -> {"fingerprint": str, "outcome": {...}}; the create's key included
    idempotency: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A split payment's accounts (streams/domain/splits.py), the platform's fee last; () unsplit.
    splits: tuple[Share, ...] = ()
    # A crypto payment's quote and what the chain showed of its deposit address.
    crypto: CryptoPayment | None = None
    # A merchant-initiated charge on a saved card (`needs_pan`), kept so an authorization
    # after a review still gets the card from the vault.
    merchant_initiated: bool = False

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status
        assert 0 <= self.captured_minor <= self.authorized_minor <= self.amount_minor, self
        assert 0 <= self.refunded_minor <= self.captured_minor, self
        assert 0 <= self.released_minor <= self.authorized_minor - self.captured_minor, self
        assert self.resolve_attempts <= MAX_RESOLVE_ATTEMPTS, self
        assert self.dispute_minor >= 0 and self.dispute_lost_minor >= 0, self
        assert (
            self.refunded_minor + self.dispute_minor + self.dispute_lost_minor + self.returned_minor
            <= self.captured_minor
        ), self
        assert (self.returned_minor > 0) == (self.status == "returned") == (self.return_code is not None), self
        assert self.status not in ("submitted", "settled", "returned") or self.method == "bank_transfer", self
        assert self.crypto is None or self.method == "crypto", self
        assert self.status not in CRYPTO_STATUSES or self.crypto is not None, self
        assert (self.dispute_minor > 0) == (self.dispute_reason is not None), self
        assert len(self.dispute_evidence) <= MAX_EVIDENCE, self
        # A 3DS result always says whether liability shifted; without one, only a wallet's
        # verified cryptogram shifts it (and there is no 3DS on a wallet: NO_STEP_UP).
        assert self.three_ds_status is None or self.liability_shift is not None, self
        assert (
            self.three_ds_status is not None
            or self.liability_shift is None
            or (self.method == "wallet" and self.liability_shift)
        ), self
        # Liability shifts on a verified authentication value only: a CAVV with Y or A, or
        # (no 3DS, so a wallet's, above) the wallet provider's signed cryptogram.
        assert (
            not self.liability_shift
            or self.three_ds_status in THREE_DS_SHIFTS_LIABILITY
            or self.three_ds_status is None
        ), self
        if self.status in ("voided", "expired", "failed"):
            assert self.captured_minor + self.released_minor == self.authorized_minor, self

    @property
    def disputable_minor(self) -> int:
        """Captured and still with the merchant: not refunded, lost in a dispute or returned."""
        return self.captured_minor - self.refunded_minor - self.dispute_lost_minor - self.returned_minor

    @property
    def hold_minor(self) -> int:
        """Authorized, neither captured nor released: what the card still has on hold."""
        return self.authorized_minor - self.captured_minor - self.released_minor

    def evolve(self, **changes: Any) -> Payment:
        """`dataclasses.replace` without the frozen constructor's cost (schemas/state.py)."""
        return evolved(self, **changes)

    @classmethod
    def new(cls, **values: Any) -> Payment:
        """`Payment(**values)` (the others their defaults) without the constructor's
        per-field __setattr__, as `evolve`: ~40 fields, one new payment per create."""
        unknown, missing = values.keys() - _PAYMENT_FIELDS, _PAYMENT_REQUIRED - values.keys()
        if unknown or missing:
            raise TypeError(f"Payment fields unknown {sorted(unknown)}, missing {sorted(missing)}")
        fresh = dict(_PAYMENT_TEMPLATE)  # in declaration order, as state_json writes a payment's fields
        fresh.update({name: factory() for name, factory in _PAYMENT_FACTORIES.items() if name not in values})
        fresh.update(values)
        new = object.__new__(Payment)
        new.__dict__.update(fresh)
        new.__post_init__()
        return new

    def to_json(self) -> bytes:
        return state_json(self)

    @classmethod
    def from_json(cls, data: bytes) -> Payment:
        values = state_loads(data)
        values["dispute_evidence"] = tuple(values.get("dispute_evidence", ()))
        values["splits"] = tuple(Share(**share) for share in values.get("splits", ()))
        if values.get("crypto") is not None:
            values["crypto"] = CryptoPayment.from_dict(values["crypto"])
        if values.keys() != _PAYMENT_FIELDS:  # written before a field was added: its default
            return cls(**values)
        new = object.__new__(Payment)  # every field stored: as in `evolve`
        new.__dict__.update(values)
        new.__post_init__()
        return new


_PAYMENT_FIELDS = frozenset(f.name for f in fields(Payment))
_PAYMENT_REQUIRED = frozenset(f.name for f in fields(Payment) if f.default is MISSING and f.default_factory is MISSING)
# Every field in declaration order, a default's value or None until filled in.
_PAYMENT_TEMPLATE = {f.name: None if f.default is MISSING else f.default for f in fields(Payment)}
_PAYMENT_FACTORIES = {f.name: f.default_factory for f in fields(Payment) if f.default_factory is not MISSING}


@dataclass(frozen=True)
class Decision:
    payment: Payment | None  # the new state; None only when there is none
    outcome: dict[str, Any] | None  # a PaymentOutcome record; None for timers only
    changed: bool  # False for rejections and replays
    events: tuple[dict[str, Any], ...] = ()  # PaymentEvent records, in order
    commands: tuple[dict[str, Any], ...] = ()  # ValidatedCommand records to itself
    timers: tuple[Timer, ...] = ()
    # The router's state after this command (the one passed in when nothing routed),
    # and what routing did for a create: attempts, failovers, breaker transitions.
    routing: RoutingState | None = None
    routed: Routed | None = None
    labels: tuple[dict[str, Any], ...] = ()  # FraudLabel records (a lost fraud dispute)

    def evolve(self, **changes: Any) -> Decision:
        """`dataclasses.replace` without the frozen constructor's cost (schemas/state.py):
        every command's decision is re-made once or twice with its routing."""
        return evolved(self, **changes)


def fingerprint(cmd: dict[str, Any], asked: dict[str, Any] | None = None) -> str:
    """Canonical hash of what the command asks for.

    command_id and occurred_at identify the attempt, not the request, so a
    retry that regenerates them is still the same request.
    """
    return hashlib.sha256(canonical_json(request_of(cmd) if asked is None else asked)).hexdigest()


def request_digest(cmd: dict[str, Any], asked: dict[str, Any] | None = None) -> bytes:
    """What the client asked under one command_id, as the payments stage's dedup value
    (32 hex chars): the same request again is a redelivery, another one reuses the id.

    The fingerprint's request plus what it leaves to its key: the idempotency key and
    the merchant-initiated mark. Not the bytes: the schema header and what the stages
    add on the way (merchant features, the risk decision, ingest's rejection, a wallet
    cryptogram's check) change with an upgrade or a replay, the request does not.
    Not occurred_at either: the API stamps each publish attempt (`now()`), so a publish
    retried after a lost ack is the same command_id at another time, and a skipped
    message changes nothing, whatever time it carries. A field added to the request
    later goes in only when set, as in `request_of`, so stored digests stay valid.
    """
    body = (request_of(cmd) if asked is None else asked) | {"idempotency_key": cmd["idempotency_key"]}
    if cmd.get("merchant_initiated"):
        body["merchant_initiated"] = True
    return hashlib.sha256(canonical_json(body)).hexdigest()[:32].encode()


def request_of(cmd: dict[str, Any]) -> dict[str, Any]:
    """What the command asks for, as canonical JSON values (its key aside): what
    `fingerprint` and `request_digest` hash (`asked`: this, when the caller made it
    already; both hash it every command). Enrichment by the stages stays out."""
    card = cmd.get("card")
    body = {
        "kind": cmd["kind"],
        "merchant_id": cmd["merchant_id"],
        "payment_id": cmd["payment_id"],
        "amount_minor": cmd["amount_minor"],
        "currency": cmd["currency"],
        "capture_method": cmd["capture_method"],
        "card": None if card is None else [card["token"], card["exp_month"], card["exp_year"]],
        "metadata": cmd["metadata"],
    }
    if cmd.get("splits"):  # only then: the fingerprints of unsplit creates stay as they were
        body["splits"] = [[x["merchant_id"], x["amount_minor"]] for x in cmd["splits"]]
        body["platform_fee_minor"] = cmd.get("platform_fee_minor")
    instrument = {
        f: cmd.get(f)
        for f in ("method", "wallet", "bank_account", "bnpl_provider", "return_code", "crypto")
        if cmd.get(f) is not None
    }
    wallet = cmd.get("wallet")
    if wallet is not None:  # what ingest found of the cryptogram is no part of the request (v8)
        instrument["wallet"] = {k: v for k, v in wallet.items() if k != "cryptogram_verified"}
    if instrument:  # only then: the fingerprints of card payments stay as they were
        body["instrument"] = instrument
    if cmd["kind"] == "review_resolve":  # the reviewer's decision is the request
        body["decision"] = cmd.get("fraud_action")
    three_ds = cmd.get("three_ds")
    if three_ds is not None:  # the 3DS result is the confirm's request; other fingerprints stay as they were
        body["three_ds"] = three_ds
    dispute = cmd.get("dispute")
    if dispute is not None:  # only then: the fingerprints of other commands stay as they were
        due = dispute["evidence_due_at"]
        body["dispute"] = dispute | {"evidence_due_at": None if due is None else event_ms(due)}
    return body


def decide(
    payment: Payment | None,
    cmd: dict[str, Any],
    saga: Saga,
    policy: Policy,
    routing: RoutingState | None = None,
    *,
    asked: dict[str, Any] | None = None,
) -> Decision:
    """`routing` is the partition's router state; the decision carries the next one.
    `asked`: `request_of(cmd)`, when the caller has it."""
    decision = _decide(payment, cmd, saga, policy, routing, asked)
    return decision if decision.routed is not None else decision.evolve(routing=routing)


def _decide(
    payment: Payment | None,
    cmd: dict[str, Any],
    saga: Saga,
    policy: Policy,
    routing: RoutingState | None,
    asked: dict[str, Any] | None,
) -> Decision:
    if cmd["kind"] == "resolve":
        return _resolve(payment, cmd, saga, policy)
    key = cmd["idempotency_key"]
    fp = fingerprint(cmd, asked)
    if payment is not None and payment.merchant_id != cmd["merchant_id"]:
        # Another merchant's payment: answer as if it did not exist, leak nothing.
        return _reject(payment, cmd, "payment_not_found", "no such payment for this merchant", keep=None)
    if payment is not None and key in payment.idempotency:
        prior = payment.idempotency[key]
        if prior["fingerprint"] != fp:
            return _reject(
                payment, cmd, "idempotency_conflict", "idempotency_key reused with a different request", keep=payment
            )
        return Decision(payment, _replayed(prior["outcome"], cmd), changed=False)

    if cmd["kind"] == "create":
        assert payment is None, "a create with a new key cannot find an existing payment"
        return _create(cmd, fp, saga, policy, routing)
    if payment is None:
        return _reject(None, cmd, "payment_not_found", "no such payment for this merchant", keep=None)
    if len(payment.idempotency) >= policy.max_follow_ups:
        return _reject(
            payment, cmd, "too_many_operations", f"at most {policy.max_follow_ups} operations per payment", keep=payment
        )
    if cmd["currency"] is not None and cmd["currency"] != payment.currency:
        return _reject(payment, cmd, "currency_mismatch", f"payment is in {payment.currency}", keep=payment)
    if payment.status == "pending":
        return _reject(
            payment, cmd, "payment_pending", "the authorization outcome is not known yet; retry later", keep=payment
        )
    if payment.status in AWAITING or cmd["kind"] in ("review_resolve", "confirm"):
        return _continue(payment, cmd, fp, saga, policy, routing)
    step = _FOLLOW_UPS[cmd["kind"]]
    result = step(_Step(payment, cmd, saga, policy))
    if isinstance(result, tuple):
        reason, detail = result
        return _reject(payment, cmd, reason, detail, keep=payment)
    return _finish(result, cmd, fp, "succeeded", None)


def expire_due(payment: Payment, timer: Timer, saga: Saga, policy: Policy) -> Decision | None:
    """An expiry timer fired (event time reached created + window): release the hold
    of an authorization nobody captured in full. None when there is nothing to do."""
    assert timer.kind == "expire" and timer.ref == payment.payment_id
    at = from_ms(timer.due_ms)
    step = _Step(
        payment, {"command_id": None, "occurred_at": at}, saga, policy, source=f"timer:expire:{payment.payment_id}"
    )
    if payment.status in AWAITING:
        # Nobody reviewed or confirmed it within the window: it never reached a provider.
        step.event("declined", 0, reason=AWAITING[payment.status][1] + "_timeout", status="declined")
        return Decision(step.payment, None, changed=True, events=tuple(step.events))
    if payment.status not in CAPTURABLE or payment.hold_minor == 0:
        return None
    assert timer.due_ms >= payment.created_at_ms + policy.auth_window_ms
    step.release("expired", "expired" if payment.status == "authorized" else payment.status)
    return Decision(step.payment, None, changed=True, events=tuple(step.events))


# --- the saga of one command, as a mutable scratchpad over immutable payments ---


class _Step:
    """Accumulates the payment changes and events of one command."""

    def __init__(
        self, payment: Payment, cmd: dict[str, Any], saga: Saga, policy: Policy, *, source: str | None = None
    ) -> None:
        self.payment = payment
        self.cmd = cmd
        self.saga = saga
        self.policy = policy
        self.source = source or cmd["command_id"]
        self.events: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.timers: list[Timer] = []
        self.labels: list[dict[str, Any]] = []

    @property
    def provider(self) -> Provider:
        assert self.payment.provider is not None
        return self.saga.provider(self.payment.provider)

    @property
    def call(self) -> Call:
        return Call(self.payment.payment_id, self.payment.currency, event_ms(self.cmd["occurred_at"]))

    def event(
        self,
        type_: str,
        amount_minor: int,
        *,
        fee_minor: int = 0,
        reason: str | None = None,
        provider_ref: str | None = None,
        crypto: dict[str, Any] | None = None,
        attempts: list[dict[str, Any]] | None = None,
        dispute_event_id: str | None = None,
        **changes: Any,
    ) -> None:
        split: dict[str, Any] = {}  # an unsplit payment's events stay as they were
        if crypto is not None:  # only then: other payments' events stay as they were
            split["crypto"] = crypto
        if attempts is not None:  # likewise: an authorization decided by one call stays as it was
            split["attempts"] = attempts
        if dispute_event_id is not None:  # a dispute's close: only then, as crypto
            split["dispute_event_id"] = dispute_event_id
        if self.payment.splits and type_ in SPLIT_KINDS:
            changes["splits"], allocation = allocate(self.payment.splits, type_, amount_minor)
            split = allocation.to_record()
        p = self.payment.evolve(version=self.payment.version + 1, **changes)
        self.payment = p
        self.events.append(
            split
            | {
                "event_id": derive_event_id(self.source, type_),
                "type": type_,
                "payment_id": p.payment_id,
                "merchant_id": p.merchant_id,
                "command_id": self.cmd["command_id"],
                "currency": p.currency,
                "amount_minor": amount_minor,
                "fee_minor": fee_minor,
                "payment_status": p.status,
                "authorized_minor": p.authorized_minor,
                "captured_minor": p.captured_minor,
                "refunded_minor": p.refunded_minor,
                "version": p.version,
                "provider": p.provider,
                "provider_ref": provider_ref or p.provider_ref,
                "reason_code": reason,
                "card_token": p.card_token,
                "card_bin": p.card_bin,
                "card_last4": p.card_last4,
                "three_ds_status": p.three_ds_status,
                "liability_shift": p.liability_shift,
                "method": None if p.method == "card" else p.method,  # null: a card, as before version 3
                "occurred_at": self.cmd["occurred_at"],
                "chain_seq": 0,
                "prev_hash": None,
                "key_id": None,
                "signature": None,
            }
        )

    def authorization(self, result: ProviderResult, attempts: list[dict[str, Any]] | None = None) -> None:
        """Record the provider's answer to the authorization (or to its status query);
        `attempts` (the router's calls, when several) go on the event that decides it."""
        p = self.payment
        if result.status == "unknown":
            attempt = p.resolve_attempts + 1
            if attempt > MAX_RESOLVE_ATTEMPTS:
                return  # stays pending: ops resolve it (docs/payments.md)
            if p.resolve_attempts == 0:  # the first time it is unknown
                self.event("authorization_pending", 0, reason=result.reason, status="pending", attempts=attempts)
            self.payment = self.payment.evolve(resolve_attempts=attempt)
            self.commands.append(_resolve_command(self.payment, attempt, self.cmd["occurred_at"]))
            return
        if result.status == "declined":
            self.event("declined", 0, reason=result.reason, status="declined", attempts=attempts)
            return
        if p.method == "bank_transfer":
            self.submit()
            return
        self.event(
            "authorized", p.amount_minor, status="authorized", authorized_minor=p.amount_minor, attempts=attempts
        )
        if p.capture_method == "automatic":
            if self.capture(p.amount_minor, derive_provider_key(p.payment_id, "auto-capture")) is not None:
                # The saga's compensation: the provider holds funds we will not capture.
                self.release("voided", "failed", reason="capture_failed")
        else:
            self.timers.append(Timer("expire", p.created_at_ms + self.policy.auth_window_ms, p.payment_id))

    def capture(self, amount_minor: int, key: str) -> str | None:
        """Capture at the provider; None on success, else the provider's reason."""
        p = self.payment
        result = self.provider.capture(key, p.card_bin or "", p.card_last4 or "", amount_minor, self.call)
        if result.status != "approved":
            return result.reason
        captured = p.captured_minor + amount_minor
        status = "captured" if captured == p.authorized_minor else "partially_captured"
        self.event(
            "captured",
            amount_minor,
            fee_minor=result.fee_minor,
            provider_ref=key,
            status=status,
            captured_minor=captured,
        )
        return None

    def submit(self) -> None:
        """A bank transfer the rail accepted (the mandate is good): the debit is
        submitted at once, no hold; the money is in flight until the bank's notice."""
        p = self.payment
        key = derive_provider_key(p.payment_id, "submit")
        result = self.provider.capture(key, "", "", p.amount_minor, self.call)
        if result.status != "approved":
            self.event("declined", 0, reason=result.reason or "submission_refused", status="declined")
            return
        self.event(
            "bank_submitted",
            p.amount_minor,
            fee_minor=result.fee_minor,
            provider_ref=key,
            status="submitted",
            authorized_minor=p.amount_minor,
            captured_minor=p.amount_minor,
        )

    def release(self, type_: str, status: str, *, reason: str | None = None) -> None:
        """Give the rest of the hold back: void it at the provider, record the release."""
        p = self.payment
        key = derive_provider_key(p.payment_id, "void")
        result = self.provider.void(key, self.call)
        assert result.status == "approved", "voiding an open authorization cannot be refused"
        self.event(
            type_,
            p.hold_minor,
            reason=reason,
            provider_ref=key,
            status=status,
            released_minor=p.released_minor + p.hold_minor,
        )


def _resolve_command(p: Payment, attempt: int, at: datetime) -> dict[str, Any]:
    """The status query the stage sends itself, keyed like the payment's commands."""
    return {
        "command_id": derive_command_id(p.payment_id, "resolve", str(attempt)),
        "kind": "resolve",
        "merchant_id": p.merchant_id,
        "idempotency_key": f"resolve-{attempt}",
        "payment_id": p.payment_id,
        "amount_minor": None,
        "currency": None,
        "capture_method": None,
        "card": None,
        "metadata": {},
        "dispute": None,
        "occurred_at": at,
        "rejection_reason": None,
        "rejection_detail": None,
    }


def _create(cmd: dict[str, Any], fp: str, saga: Saga, policy: Policy, routing: RoutingState | None) -> Decision:
    card = cmd.get("card") or {}
    method = method_of(cmd)
    try:  # ingest checked them; a command from elsewhere gets the same answer here
        splits = checked_splits(
            cmd.get("splits"),
            cmd.get("platform_fee_minor"),
            merchant_id=cmd["merchant_id"],
            amount_minor=cmd["amount_minor"],
        )
    except SplitError as e:
        return _reject(None, cmd, e.reason, e.detail, keep=None)
    verdict = saga.fraud(cmd)
    if verdict.action == "requires_action" and method in NO_STEP_UP:
        # No 3DS for this method (the wallet's device authenticated the customer; a bank
        # debit or a BNPL plan has no card to step up): it goes on as approved.
        verdict = FraudVerdict("approve", verdict.reasons)
    payment = Payment.new(
        payment_id=cmd["payment_id"],
        merchant_id=cmd["merchant_id"],
        currency=cmd["currency"],
        amount_minor=cmd["amount_minor"],
        capture_method=cmd["capture_method"],
        status="pending",
        authorized_minor=0,
        captured_minor=0,
        refunded_minor=0,
        card_bin=card.get("bin"),
        card_last4=card.get("last4"),
        card_token=card.get("token"),
        created_at_ms=event_ms(cmd["occurred_at"]),
        version=0,
        splits=splits,
        method=method,
        instrument=instrument_label(method, cmd),
        # The wallet provider's signed cryptogram, verified at ingest for this payment,
        # vouches for the customer as an issuer's CAVV does: the liability shifts.
        liability_shift=True if method == "wallet" and (cmd.get("wallet") or {}).get("cryptogram_verified") else None,
        merchant_initiated=needs_pan(cmd),
        fraud_action=verdict.action,
    )
    step = _Step(payment, cmd, saga, policy)
    routed = None
    if verdict.action == "decline":
        step.event("declined", 0, reason="fraud_suspected", status="declined")
    elif verdict.action in ("review", "requires_action"):
        # Paused before any provider call (no hold, no money): a review_resolve or a
        # confirm continues it, the expiry timer declines it if neither comes.
        status = "requires_review" if verdict.action == "review" else "requires_action"
        step.payment = step.payment.evolve(payment_method=(cmd["metadata"] or {}).get("payment_method"))
        step.event("authorization_pending", 0, reason=AWAITING[status][1], status=status)
        step.timers.append(Timer("expire", payment.created_at_ms + policy.auth_window_ms, payment.payment_id))
    else:
        routed = _authorize(step, cmd, routing)
    reason = step.events[-1]["reason_code"] if step.payment.status in ("declined", "failed") else None
    # A failure is the key's first outcome and is kept, as Stripe does.
    decision = _finish(step, cmd, fp, "rejected" if reason else "succeeded", reason)
    return decision.evolve(routing=routed.state if routed else routing, routed=routed)


def _authorize(step: _Step, create: dict[str, Any], routing: RoutingState | None) -> Routed | None:
    if step.payment.method == "crypto":
        _quote_crypto(step)  # no provider authorizes it: the payer's transfer does (None: nothing routed)
        return None
    # One provider key for the payment's authorization, whichever route takes it, and
    # one for its retry after a soft decline: a redelivered create repeats the same
    # calls, each applied once by its provider.
    key, soft_key = authorization_keys(step.payment.payment_id)
    routed = step.saga.authorize(create, key, step.call, routing, soft_key)
    step.payment = step.payment.evolve(provider=routed.provider, provider_ref=routed.key or key)
    step.authorization(routed.result, _attempts(routed))
    return routed


def authorization_keys(payment_id: str) -> tuple[str, str]:
    """(first key, soft-retry key) of a payment's authorization: derived from the
    payment and the attempt, so a redelivery sends each call under the key it had."""
    return derive_provider_key(payment_id, "authorize"), derive_provider_key(payment_id, "authorize", "2")


def _attempts(routed: Routed) -> list[dict[str, Any]] | None:
    """PaymentEvent v5 `attempts`: the provider answers behind the authorization's
    outcome, when there was more than one call (a failover or a soft-decline retry)."""
    if len(routed.attempts) < 2:
        return None  # one call: the event says it all, and stays as it was
    return [
        {"provider": a.provider, "status": a.status, "reason_code": a.reason, "retryable": a.retryable}
        for a in routed.attempts
    ]


def _quote_crypto(step: _Step) -> None:
    """A crypto payment's quote: its deposit address and the asset amount due, locked
    for the window; then the chain is watched (a `crypto` timer) until it is paid or expires."""
    p, policy = step.payment, step.policy.crypto
    asset, _, refund_address = (p.instrument or "").partition(":")
    chain = step.saga.chains.get(asset)
    at_ms = event_ms(step.cmd["occurred_at"])
    rate = chain.rate(p.currency, at_ms) if chain is not None else None
    if chain is None or rate is None:
        step.event("declined", 0, reason="currency_not_supported", status="declined")
        return
    cp = quote(asset, chain.deposit_address(p.payment_id), refund_address, p.amount_minor, rate, at_ms, policy)
    step.payment = p.evolve(provider=chain.name, provider_ref=cp.address, crypto=cp)
    step.event("crypto_quoted", 0, status="awaiting_payment", crypto=_crypto_record(cp, cp.due_minor, (), cp.address))
    step.timers.append(Timer("crypto", at_ms + policy.poll_ms, p.payment_id))


def _crypto_record(cp: CryptoPayment, amount_minor: int, tx_ids: tuple[str, ...], address: str) -> dict[str, Any]:
    """PaymentEvent v4 `crypto`: the asset side of the event (and the quote, for the payer)."""
    return {
        "asset": cp.asset,
        "amount_minor": amount_minor,
        "address": address,
        "tx_ids": list(tx_ids),
        "due_minor": cp.due_minor,
        "rate_asset_minor": cp.rate_asset_minor,
        "rate_fiat_minor": cp.rate_fiat_minor,
        "expires_at": from_ms(cp.expires_ms),
    }


def crypto_due(payment: Payment, timer: Timer, saga: Saga, policy: Policy) -> Decision | None:
    """A `crypto` timer fired: look at the payment's deposit address as of the timer's
    event time and record what changed (streams/domain/crypto.py `observe`); watch again a
    poll later while the address matters. None when there is nothing to do."""
    assert timer.kind == "crypto" and timer.ref == payment.payment_id
    cp = payment.crypto
    if cp is None:
        return None
    chain = saga.chains[cp.asset]
    view = chain.view(cp.address, cp.due_minor, cp.issued_ms, cp.expires_ms, timer.due_ms)
    after, moves = observe(cp, view, policy.crypto.depth(cp.asset))
    at = from_ms(timer.due_ms)
    step = _Step(
        payment,
        {"command_id": None, "occurred_at": at},
        saga,
        policy,
        source=f"timer:crypto:{payment.payment_id}:{timer.due_ms}",
    )
    sends = cp.sends
    for move in moves:
        sends = _crypto_event(step, chain, cp, move, sends)
    step.payment = step.payment.evolve(crypto=after)
    again: tuple[Timer, ...] = ()
    if watching(after, timer.due_ms, policy.crypto):
        again = (Timer("crypto", timer.due_ms + policy.crypto.poll_ms, payment.payment_id),)
    return Decision(step.payment, None, changed=True, events=tuple(step.events), timers=again)


def _crypto_event(step: _Step, chain: SimChain, cp: CryptoPayment, move: Move, sends: int) -> int:
    """One move as a payment event; a give-back is sent on the chain here. Returns the sends made so far."""
    p = step.payment
    changes: dict[str, Any] = {}
    address, tx_ids, fee_minor, provider_ref = cp.address, move.tx_ids, 0, None
    if move.type == "crypto_pending":
        changes = {"status": "confirming", "authorized_minor": p.amount_minor}
    elif move.type == "crypto_unpending":
        changes = {"status": "awaiting_payment", "authorized_minor": 0}
    elif move.type == "crypto_confirmed":
        changes = {"status": "confirmed", "captured_minor": p.amount_minor}
        fee_minor = p.amount_minor * chain.config.fee_bps // 10_000
    elif move.type == "crypto_expired":
        changes = {"status": "expired"}
    elif move.type == "crypto_refunded":
        provider_ref = derive_provider_key(p.payment_id, "crypto_send", str(sends))
        send = chain.send(provider_ref, cp.refund_address, move.asset_minor, event_ms(step.cmd["occurred_at"]))
        address, tx_ids, sends = cp.refund_address, (send.tx_id,), sends + 1
    step.event(
        move.type,
        move.fiat_minor,
        fee_minor=fee_minor,
        provider_ref=provider_ref,
        crypto=_crypto_record(cp, move.asset_minor, tx_ids, address),
        **changes,
    )
    return sends


def _as_create(p: Payment) -> dict[str, Any]:
    """What routing reads of the create, rebuilt from a paused payment."""
    return {
        "payment_id": p.payment_id,
        "merchant_id": p.merchant_id,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "card": {"token": p.card_token, "bin": p.card_bin or "", "last4": p.card_last4 or ""} if p.card_token else None,
        "metadata": {"payment_method": p.payment_method} if p.payment_method else {},
        "merchant_initiated": p.merchant_initiated,
        # A payment paused before it had a method field (stored before it) kept the metadata's.
        "method": p.payment_method or p.method,
    }


def _continue(
    payment: Payment, cmd: dict[str, Any], fp: str, saga: Saga, policy: Policy, routing: RoutingState | None
) -> Decision:
    """A payment paused by the fraud decision, and the command that may continue it:
    review_resolve (approve: authorize now; decline: declined) or confirm (its 3DS
    result decides: see `three_ds_verdict`). Anything else waits."""
    awaited = AWAITING.get(payment.status)
    if awaited is None or cmd["kind"] != awaited[0]:
        if awaited is None:
            detail = f"payment is {payment.status}"
            if cmd["kind"] == "confirm":
                detail += "; confirm answers a payment in requires_action only"
            return _reject(payment, cmd, "not_awaiting", detail, keep=payment)
        return _reject(
            payment, cmd, f"payment_{payment.status}", f"payment is {payment.status}: {awaited[0]} first", keep=payment
        )
    step = _Step(payment, cmd, saga, policy)
    routed = None
    if cmd["kind"] == "review_resolve" and cmd.get("fraud_action") not in ("approve", "decline"):
        return _reject(payment, cmd, "invalid_review_decision", "fraud_action must be approve or decline", keep=payment)
    three_ds: Any = cmd.get("three_ds")
    if cmd["kind"] == "confirm" and three_ds is None:
        # Ingest refuses these; a ValidatedCommand written before version 3 has none.
        return _reject(
            payment,
            cmd,
            "missing_three_ds",
            "confirm needs three_ds, the result of the 3DS authentication",
            keep=payment,
        )
    decline = None
    if cmd["kind"] == "review_resolve" and cmd["fraud_action"] == "decline":
        decline = "fraud_review_declined"
    elif cmd["kind"] == "confirm":
        status = three_ds["trans_status"]
        refused = cavv_refusal(payment, cmd, saga.acs_keys)
        if refused is not None:
            # Forged, altered, replayed or stale: the confirm is refused, the payment still
            # awaits a good one (the cardholder may authenticate again) until it expires.
            return _reject(payment, cmd, refused.reason, refused.detail, keep=payment)
        shifted = status in THREE_DS_SHIFTS_LIABILITY and three_ds.get("authentication_value") is not None
        step.payment = step.payment.evolve(three_ds_status=status, liability_shift=shifted)
        decline = three_ds_verdict(status, policy)
    if decline is not None:
        step.event("declined", 0, reason=decline, status="declined")
    else:
        step.payment = step.payment.evolve(payment_method=None)
        routed = _authorize(step, _as_create(payment), routing)
    # A review_resolve succeeded in continuing the payment, whatever came of it. A
    # confirm is the cardholder's attempt: a decline is its failure (as a create's is).
    reason = None
    if cmd["kind"] == "confirm" and step.payment.status in ("declined", "failed"):
        reason = step.events[-1]["reason_code"]
    decision = _finish(step, cmd, fp, "rejected" if reason else "succeeded", reason)
    return decision.evolve(routing=routed.state if routed else routing, routed=routed)


def cavv_refusal(payment: Payment, cmd: dict[str, Any], acs_keys: Mapping[str, bytes]) -> Refusal | None:
    """Why a confirm's authentication value does not vouch for this payment (None: it
    does, or there is none: a merchant-reported result, authorized without a shift)."""
    three_ds = cmd["three_ds"]
    value = three_ds.get("authentication_value")
    if value is None:
        return None
    checked = verify_cavv(
        value,
        acs_keys,
        payment_id=payment.payment_id,
        merchant_id=payment.merchant_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        trans_status=three_ds["trans_status"],
        eci=three_ds.get("eci"),
        ds_trans_id=three_ds.get("ds_trans_id"),
        at_ms=event_ms(cmd["occurred_at"]),
    )
    return checked if isinstance(checked, Refusal) else None


def three_ds_verdict(trans_status: str, policy: Policy) -> str | None:
    """What a step-up's 3DS result does: None to authorize, else the decline reason."""
    if trans_status in THREE_DS_SHIFTS_LIABILITY:
        return None
    if trans_status in THREE_DS_FAILED:
        return "authentication_failed"
    assert trans_status == THREE_DS_UNAVAILABLE, f"not an EMV 3DS final status: {trans_status!r}"
    return None if policy.three_ds_unavailable == "authorize" else "authentication_unavailable"


def _resolve(payment: Payment | None, cmd: dict[str, Any], saga: Saga, policy: Policy) -> Decision:
    if payment is None or payment.status != "pending":
        status = "missing" if payment is None else payment.status
        return _reject(payment, cmd, "not_pending", f"payment is {status}", keep=payment)
    step = _Step(payment, cmd, saga, policy)
    step.authorization(
        step.provider.status(
            payment.provider_ref or "",
            payment.card_bin or "",
            payment.card_last4 or "",
            payment.amount_minor,
            step.call,
        )
    )
    if step.payment == payment:
        return _reject(
            payment,
            cmd,
            "provider_unreachable",
            f"no answer after {MAX_RESOLVE_ATTEMPTS} status queries; left to ops",
            keep=payment,
        )
    return _decision(step, _outcome(step.payment, cmd, "succeeded", None))


def _take(done_minor: int, limit_minor: int, requested_minor: int | None) -> int | None:
    """The amount taken by `requested_minor` (None: all that is left) of what
    `limit_minor` leaves after `done_minor`; None if that is more than is left."""
    remaining = limit_minor - done_minor
    amount = remaining if requested_minor is None else requested_minor
    assert amount > 0 or requested_minor is None, "ingest admits positive amounts only"
    return amount if amount <= remaining else None


def _capture(s: _Step) -> _Step | tuple[str, str]:
    p, cmd = s.payment, s.cmd
    if p.method == "crypto":
        return "no_authorization_hold", "a crypto payment is paid by the payer's transfer: nothing to capture"
    if p.status in ("voided", "expired", "declined", "failed"):
        return _closed(p)
    if p.status not in CAPTURABLE:
        return "already_captured", f"payment is {p.status}"
    if p.dispute_minor:
        return "dispute_in_progress", "no capture while a dispute is open"
    if event_ms(cmd["occurred_at"]) >= p.created_at_ms + s.policy.auth_window_ms or p.released_minor:
        return "authorization_expired", "the authorization window has passed"
    amount = _take(p.captured_minor, p.authorized_minor, cmd["amount_minor"])
    if amount is None:
        return "amount_exceeds_authorized", f"at most {p.hold_minor} left to capture"
    refused = s.capture(amount, derive_provider_key(p.payment_id, "capture", cmd["idempotency_key"]))
    if refused is not None:
        return "provider_declined", f"the provider refused the capture: {refused}"
    return s


def _void(s: _Step) -> _Step | tuple[str, str]:
    p = s.payment
    if p.method == "crypto":
        return "no_authorization_hold", "a crypto payment has no hold to void; an unpaid quote expires by itself"
    if p.status == "authorized":
        s.release("voided", "voided")
        return s
    if p.status in ("voided", "expired", "declined", "failed"):
        return _closed(p)
    if p.method == "bank_transfer":
        return "already_submitted", "a submitted bank transfer cannot be voided; refund it once it settles"
    return "already_captured", "capture happened; refund instead"


def _refund(s: _Step) -> _Step | tuple[str, str]:
    p, cmd = s.payment, s.cmd
    if p.captured_minor == 0:
        return "not_captured", f"payment is {p.status}; nothing captured to refund"
    if p.status == "submitted":
        return "not_settled", "a bank transfer is refunded once its funds have arrived (settled)"
    if p.status == "returned":
        return "already_returned", f"the customer's bank returned it ({p.return_code})"
    if p.dispute_minor:
        # The disputed funds are already withdrawn; a refund could pay the customer twice.
        return "dispute_in_progress", "no refund while a dispute is open"
    if p.disputable_minor == 0:
        return "already_refunded", "everything captured is refunded or charged back"
    limit = p.captured_minor - p.dispute_lost_minor - p.returned_minor
    amount = _take(p.refunded_minor, limit, cmd["amount_minor"])
    if amount is None:
        return "amount_exceeds_captured", f"at most {p.disputable_minor} left to refund"
    key = derive_provider_key(p.payment_id, "refund", cmd["idempotency_key"])
    if p.crypto is not None:
        return _refund_crypto(s, p.crypto, amount, limit, key)
    result = s.provider.refund(key, amount, s.call)
    if result.status != "approved":
        return "provider_declined", f"the provider refused the refund: {result.reason}"
    refunded = p.refunded_minor + amount
    status = "refunded" if refunded == limit else "partially_refunded"
    s.event("refunded", amount, provider_ref=key, status=status, refunded_minor=refunded)
    return s


def _refund_crypto(s: _Step, cp: CryptoPayment, amount: int, limit: int, key: str) -> _Step | tuple[str, str]:
    """A merchant's refund of a confirmed crypto payment: the asset at the locked rate
    (rounded down) sent to the payer's address, from the house's coins."""
    asset_minor = cp.rate.refund_asset_minor(amount)
    if asset_minor == 0:
        return "amount_too_small", f"{amount} minor units of {s.payment.currency} buy no {cp.asset} at the quote's rate"
    send = s.saga.chains[cp.asset].send(key, cp.refund_address, asset_minor, event_ms(s.cmd["occurred_at"]))
    refunded = s.payment.refunded_minor + amount
    s.payment = s.payment.evolve(crypto=replace(cp, refunded_minor=cp.refunded_minor + asset_minor))
    s.event(
        "refunded",
        amount,
        provider_ref=key,
        status="refunded" if refunded == limit else "partially_refunded",
        refunded_minor=refunded,
        crypto=_crypto_record(cp, asset_minor, (send.tx_id,), cp.refund_address),
    )
    return s


def _expire(s: _Step) -> _Step | tuple[str, str]:
    p = s.payment
    if p.status not in CAPTURABLE or p.hold_minor == 0:
        return "not_expirable", f"payment is {p.status}"
    if event_ms(s.cmd["occurred_at"]) < p.created_at_ms + s.policy.auth_window_ms:
        return "authorization_window_open", "the authorization window has not passed yet"
    s.release("expired", "expired" if p.status == "authorized" else p.status)
    return s


def _dispute_open(s: _Step) -> _Step | tuple[str, str]:
    p, cmd = s.payment, s.cmd
    if p.method not in DISPUTABLE:
        return "not_disputable", f"a {p.method} payment is not disputed through the card networks"
    if p.dispute_minor:
        return "dispute_already_open", "one dispute at a time per payment"
    if p.disputable_minor == 0:
        return "not_disputable", f"payment is {p.status}; nothing captured left to dispute"
    amount = _take(p.refunded_minor + p.dispute_lost_minor, p.captured_minor, cmd["amount_minor"])
    if amount is None:
        return "amount_exceeds_disputable", f"at most {p.disputable_minor} can be disputed"
    reason = cmd["dispute"]["reason"]
    s.event(
        "dispute_opened",
        amount,
        fee_minor=s.policy.dispute_fee_minor,
        reason=reason,
        dispute_minor=amount,
        dispute_reason=reason,
        dispute_due_ms=event_ms(cmd["dispute"]["evidence_due_at"]),
        dispute_evidence=(),
    )
    s.payment = s.payment.evolve(dispute_event_id=s.events[-1]["event_id"])
    return s


def _dispute_evidence(s: _Step) -> _Step | tuple[str, str]:
    p = s.payment
    if not p.dispute_minor:
        return "no_open_dispute", "no dispute is open on this payment"
    assert p.dispute_due_ms is not None
    if event_ms(s.cmd["occurred_at"]) > p.dispute_due_ms:
        return "evidence_overdue", "the evidence due date has passed"
    if len(p.dispute_evidence) >= MAX_EVIDENCE:
        return "too_much_evidence", f"at most {MAX_EVIDENCE} evidence submissions per dispute"
    # Kept for the response to the network; no event: no money moves, nothing to post.
    s.payment = p.evolve(dispute_evidence=(*p.dispute_evidence, s.cmd["dispute"]["evidence"]))
    return s


def _dispute_close(s: _Step) -> _Step | tuple[str, str]:
    p = s.payment
    if not p.dispute_minor:
        return "no_open_dispute", "no dispute is open on this payment"
    closed: dict[str, Any] = {
        "dispute_minor": 0,
        "dispute_reason": None,
        "dispute_due_ms": None,
        "dispute_evidence": (),
    }
    opening = p.dispute_event_id  # the close's event names the dispute it ends
    if s.cmd["dispute"]["outcome"] == "won":
        s.event("dispute_won", p.dispute_minor, reason=p.dispute_reason, dispute_event_id=opening, **closed)
    else:
        s.event(
            "dispute_lost",
            p.dispute_minor,
            reason=p.dispute_reason,
            dispute_event_id=opening,
            dispute_lost_minor=p.dispute_lost_minor + p.dispute_minor,
            **closed,
        )
        if p.dispute_reason in FRAUD_DISPUTE_REASONS and p.card_token is not None:
            s.labels.append(_fraud_label(p, s.cmd, s.events[-1]["event_id"]))
    s.payment = s.payment.evolve(dispute_event_id=None)
    return s


def _fraud_label(p: Payment, cmd: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The chargeback as a FraudLabel, known when the dispute was lost (delayed feedback)."""
    return {
        "label_id": derive_label_id(event_id),
        "payment_id": p.payment_id,
        "card_token": p.card_token,
        "merchant_id": p.merchant_id,
        "fraud": True,
        "source": "chargeback",
        "tx_occurred_at": from_ms(p.created_at_ms),
        "occurred_at": cmd["occurred_at"],
        "amount_minor": p.dispute_minor,
        "currency": p.currency,
        "reason_code": p.dispute_reason,
    }


def _bank_settle(s: _Step) -> _Step | tuple[str, str]:
    """The bank's notice that a submitted transfer's funds arrived: the merchant is owed them."""
    p = s.payment
    if p.method != "bank_transfer":
        return "not_bank_transfer", f"a {p.method} payment gets no bank notices"
    if p.status == "returned":
        return "already_returned", f"the customer's bank returned it ({p.return_code})"
    if p.status != "submitted":
        return "already_settled", f"payment is {p.status}"
    s.event("bank_settled", p.captured_minor, status="settled")
    return s


def _bank_return(s: _Step) -> _Step | tuple[str, str]:
    """The customer's bank returned the debit (days later, by event time). Before the
    settlement it unwinds the submission; after it, the merchant gives back what it
    still holds of the payment (refunds already went back to the customer)."""
    p, code = s.payment, s.cmd.get("return_code")
    if p.method != "bank_transfer":
        return "not_bank_transfer", f"a {p.method} payment gets no bank notices"
    if code is None:  # ingest refuses these; a record written before ValidatedCommand v5 has none
        return "missing_return_code", "bank_return needs bank_notice.return_code"
    if p.status == "returned":
        return "already_returned", f"returned before ({p.return_code})"
    if p.status == "submitted":
        s.event(
            "bank_returned",
            p.captured_minor,
            reason=code,
            status="returned",
            returned_minor=p.captured_minor,
            return_code=code,
        )
        return s
    amount = p.disputable_minor
    if amount == 0:
        return "not_returnable", f"payment is {p.status}: everything was refunded"
    s.event("bank_reversed", amount, reason=code, status="returned", returned_minor=amount, return_code=code)
    return s


_FOLLOW_UPS = {
    "capture": _capture,
    "void": _void,
    "refund": _refund,
    "expire": _expire,
    "dispute_open": _dispute_open,
    "dispute_evidence": _dispute_evidence,
    "dispute_close": _dispute_close,
    "bank_settle": _bank_settle,
    "bank_return": _bank_return,
}


def _closed(p: Payment) -> tuple[str, str]:
    reason = {"declined": "payment_declined", "failed": "payment_failed"}.get(p.status, f"already_{p.status}")
    return reason, f"payment is {p.status}"


def _finish(step: _Step, cmd: dict[str, Any], fp: str, status: str, reason: str | None) -> Decision:
    out = _outcome(step.payment, cmd, status, reason)
    step.payment = _remember(step.payment, cmd, fp, out)
    return _decision(step, out)


def _decision(step: _Step, out: dict[str, Any]) -> Decision:
    return Decision(
        step.payment,
        out,
        changed=True,
        events=tuple(step.events),
        commands=tuple(step.commands),
        timers=tuple(step.timers),
        labels=tuple(step.labels),
    )


def _remember(payment: Payment, cmd: dict[str, Any], fp: str, outcome: dict[str, Any]) -> Payment:
    # The evidence is in dispute_evidence while the dispute is open: not kept twice in the state.
    stored = {
        k: v for k, v in outcome.items() if k not in ("outcome_id", "command_id", "occurred_at", "dispute_evidence")
    }
    idem = dict(payment.idempotency)
    idem[cmd["idempotency_key"]] = {"fingerprint": fp, "outcome": stored}
    return payment.evolve(idempotency=idem)


def _reject(
    payment: Payment | None, cmd: dict[str, Any], reason: str, detail: str, *, keep: Payment | None
) -> Decision:
    """A rejection of an illegal command: not stored under the key, nothing changes."""
    outcome = rejection(cmd, reason, detail, payment_id=cmd["payment_id"])
    if keep is not None:
        outcome |= _amounts(keep)
    return Decision(payment, outcome, changed=False)


def _replayed(stored: dict[str, Any], cmd: dict[str, Any]) -> dict[str, Any]:
    return stored | {
        "outcome_id": derive_outcome_id(cmd["command_id"]),
        "command_id": cmd["command_id"],
        "status": "replayed",
        "occurred_at": cmd["occurred_at"],
        "dispute_evidence": None,  # the first answer carried it to the read model
    }


def _outcome(p: Payment, cmd: dict[str, Any], status: str, reason: str | None) -> dict[str, Any]:
    # Accepted evidence rides on its outcome into the read model: the state drops it at the close.
    evidence = cmd["dispute"]["evidence"] if cmd["kind"] == "dispute_evidence" and status == "succeeded" else None
    return outcome(
        cmd,
        status,
        payment_id=p.payment_id,
        currency=p.currency,
        reason=reason,
        amounts=_amounts(p),
        evidence=evidence,
    )


def _amounts(p: Payment) -> dict[str, Any]:
    return {
        "payment_status": p.status,
        "authorized_minor": p.authorized_minor,
        "captured_minor": p.captured_minor,
        "refunded_minor": p.refunded_minor,
        "card_bin": p.card_bin,
        "card_last4": p.card_last4,
    }
