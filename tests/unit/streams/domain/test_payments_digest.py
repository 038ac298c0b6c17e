"""`request_digest`: the payments stage's dedup value is what the client asked.

Properties over ValidatedCommand records as the wire gives them: the digest does not
move when a stage adds or changes its enrichment (or the attempt's command_id and
time), and moves when any field of the request does, nested ones included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from schemas.codec import Codec
from streams.domain.payments import fingerprint, request_digest, request_of

VALIDATED = Codec("ValidatedCommand")
KINDS = VALIDATED.schema.parsed["fields"][1]["type"]["symbols"]
FRAUD_ACTIONS = ("approve", "review", "decline", "requires_action")

text = st.text(max_size=6)
maybe_text = st.none() | text
money = st.integers(0, 10**12)
at_ms = st.integers(0, 4_102_444_800_000).map(lambda ms: datetime.fromtimestamp(ms / 1000, UTC))

# The request's nested records, leaf by leaf. A card's BIN, last four and brand come
# from the same PAN as its token, so they are held fixed here (no request changes them
# alone); a wallet's cryptogram_verified is ingest's finding: enrichment, below.
RECORDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "card": {"token": text, "exp_month": st.integers(1, 12), "exp_year": st.integers(2000, 2100)},
    "wallet": {"provider": st.sampled_from(("apple_pay", "google_pay")), "token": text},
    "bank_account": {"scheme": st.sampled_from(("ach", "sepa")), "mandate_id": text, "account_last4": text},
    "crypto": {"asset": st.sampled_from(("USDC", "BTC")), "refund_address": text},
    "dispute": {
        "reason": maybe_text,
        "evidence_due_at": st.none() | at_ms,
        "evidence": maybe_text,
        "outcome": st.none() | st.sampled_from(("won", "lost")),
    },
    "three_ds": {
        "trans_status": st.sampled_from(("Y", "A", "N", "U", "R")),
        "eci": maybe_text,
        "ds_trans_id": maybe_text,
        "authentication_value": maybe_text,
    },
}
FIXED = {
    "card": {"bin": "424242", "last4": "4242", "brand": "visa"},
    "wallet": {"cryptogram_verified": False},
}


def record(name: str) -> st.SearchStrategy[dict[str, Any] | None]:
    return st.none() | st.fixed_dictionaries(RECORDS[name]).map(lambda r: r | FIXED.get(name, {}))


REQUEST: dict[str, st.SearchStrategy[Any]] = {
    "kind": st.sampled_from(KINDS),
    "merchant_id": text,
    "idempotency_key": text,
    "payment_id": maybe_text,
    "amount_minor": st.none() | money,
    "currency": st.none() | st.sampled_from(("USD", "EUR", "JPY")),
    "capture_method": st.none() | st.sampled_from(("automatic", "manual")),
    "metadata": st.dictionaries(text, text, max_size=3),
    "splits": st.none()
    | st.lists(st.fixed_dictionaries({"merchant_id": text, "amount_minor": money}), min_size=1, max_size=3),
    "platform_fee_minor": st.none() | money,  # part of a split: asked only with one
    "method": st.none() | st.sampled_from(("card", "wallet", "bank_transfer", "bnpl", "crypto")),
    "bnpl_provider": maybe_text,
    "return_code": maybe_text,
    "merchant_initiated": st.booleans(),
    "fraud_action": st.none() | st.sampled_from(FRAUD_ACTIONS),  # a review_resolve's decision
    **{name: record(name) for name in RECORDS},
}


def enrichment(cmd: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """What the stages add (keys: merchant features; risk: its decision; ingest or keys:
    a refusal; ingest: a wallet cryptogram's check) and the attempt's own id and time."""
    fields: dict[str, st.SearchStrategy[Any]] = {
        "command_id": text,
        "occurred_at": at_ms,
        "rejection_reason": maybe_text,
        "rejection_detail": maybe_text,
        "fraud_score_ppm": st.none() | st.integers(0, 1_000_000),
        "fraud_reasons": st.lists(text, max_size=3),
        "fraud_model": maybe_text,
        "fraud_fallback": st.booleans(),
        "merchant_features": st.none()
        | st.fixed_dictionaries(
            {
                f: st.integers(0, 10**6)
                for f in ("cnt_1h", "cnt_1d", "cnt_7d", "cnt_30d", "labeled_7d", "labeled_30d", "fraud_7d", "fraud_30d")
            }
        ),
    }
    if cmd["kind"] != "review_resolve":  # on every other kind the risk stage's decision
        fields["fraud_action"] = st.none() | st.sampled_from(FRAUD_ACTIONS)
    if cmd["wallet"] is not None:
        fields["wallet"] = st.booleans().map(lambda verified: cmd["wallet"] | {"cryptogram_verified": verified})
    return st.fixed_dictionaries({}, optional=fields)


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    """A ValidatedCommand as decoded from the wire (checked against the schema)."""
    cmd = draw(st.fixed_dictionaries(REQUEST)) | {"command_id": "cmd-1", "occurred_at": draw(at_ms)}
    return VALIDATED.decode(VALIDATED.encode(cmd, check=True))


@given(cmd=commands(), data=st.data())
def test_the_digest_ignores_what_the_stages_add_and_the_attempt(cmd: dict[str, Any], data: st.DataObject) -> None:
    changed = cmd | data.draw(enrichment(cmd))
    assert request_digest(changed) == request_digest(cmd)


@given(cmd=commands())
def test_one_request_hashed_twice_is_the_same_as_each_making_its_own(cmd: dict[str, Any]) -> None:
    """The payments stage makes `request_of` once per command for both hashes."""
    asked = request_of(cmd)
    assert fingerprint(cmd, asked) == fingerprint(cmd) and request_digest(cmd, asked) == request_digest(cmd)
    assert asked == request_of(cmd)  # neither hash changed it


@given(cmd=commands(), data=st.data())
def test_the_digest_changes_with_any_field_of_the_request(cmd: dict[str, Any], data: st.DataObject) -> None:
    paths = [(f, None) for f in REQUEST] + [(f, leaf) for f, leaves in RECORDS.items() for leaf in leaves]
    name, leaf = data.draw(st.sampled_from(paths))
    if name == "platform_fee_minor":
        assume(cmd["splits"])
    if name == "fraud_action":
        assume(cmd["kind"] == "review_resolve")
    if leaf is None:
        new = data.draw(REQUEST[name].filter(lambda v: v != cmd[name]))
    else:
        assume(cmd[name] is not None)
        value = data.draw(RECORDS[name][leaf].filter(lambda v: v != cmd[name][leaf]))
        new = cmd[name] | {leaf: value}
    changed = VALIDATED.decode(VALIDATED.encode(cmd | {name: new}, check=True))
    assert request_digest(changed) != request_digest(cmd)


def test_stored_values_keep_their_meaning(cmds) -> None:
    """Both hashes are stored (the dedup table, each payment's keys): pinned, so a change
    of what they cover is a decision (and a migration), not an accident."""
    assert request_digest(cmds.create()) == b"41d07a60eaaf40b8f32a63195ba4ff17"
    # Unchanged by the split into `_asked`: the value the code before it stored.
    assert fingerprint(cmds.create()) == "f03642d133f54229f65f7c47233061e9485025c8af7962221189e8c0deb1be80"
