"""3-D Secure 2 and wallet cryptograms: the directory server's rules, the challenge,
and signed values refused when forged, altered, replayed, expired or under an unknown key."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from connectors.vault.keys import ACS_SIGNING, SIGNING, WALLET_SIGNING, ActiveSigner, FileKeyStore
from streams.domain.authentication import (
    CLOCK_SKEW_MS,
    HIGH_RISK_PPM,
    MAX_OTP_ATTEMPTS,
    MIN_ACCOUNT_AGE_DAYS,
    VALIDITY_MS,
    AuthenticationValue,
    Refusal,
    RiskData,
    WalletCryptogram,
    challenge_answer,
    ds_decide,
    frictionless_limit_minor,
    issue_cavv,
    issue_cryptogram,
    token_digest,
    verify_cavv,
    verify_cryptogram,
)

AT = 1_700_000_000_000
PID, OTHER_PID = "pay_" + "a" * 32, "pay_" + "b" * 32
TID = "5c1d1ad4-0e8c-4a5e-9d0c-3a7c1f2b9e10"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FileKeyStore:
    s = FileKeyStore(tmp_path_factory.mktemp("keys"))
    s.init()
    return s


@dataclass(frozen=True)
class Impostor:
    """A signer with a key of its own, claiming the issuer's key id."""

    key_id: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


def av(**changes: object) -> AuthenticationValue:
    base = AuthenticationValue("acs-signing-v1", PID, "m1", 12_345, "EUR", "Y", "05", TID, AT)
    return replace(base, **changes)


def check(token: str, keys: dict[str, bytes], **changes: object) -> AuthenticationValue | Refusal:
    facts = (
        dict(
            payment_id=PID,
            merchant_id="m1",
            amount_minor=12_345,
            currency="EUR",
            trans_status="Y",
            eci="05",
            ds_trans_id=TID,
            at_ms=AT + 5_000,
        )
        | changes
    )
    return verify_cavv(token, keys, **facts)  # type: ignore[arg-type]


# --- directory server ---


def test_ds_rules_in_order() -> None:
    low = RiskData(10_000, "EUR", fraud_score_ppm=10_000, device_known=True, account_age_days=400)
    assert ds_decide(low) == (flow := ds_decide(low)) and not flow.challenge and flow.reason == "low_risk"
    assert (
        ds_decide(replace(low, challenge_mandated=True, fraud_score_ppm=HIGH_RISK_PPM)).reason == "challenge_mandated"
    )
    assert ds_decide(replace(low, fraud_score_ppm=HIGH_RISK_PPM, amount_minor=10**9)).reason == "high_risk_score"
    assert ds_decide(replace(low, amount_minor=25_001, device_known=False)).reason == "amount_over_frictionless_limit"
    assert not ds_decide(replace(low, amount_minor=25_000)).challenge  # the limit itself is frictionless
    assert ds_decide(replace(low, device_known=False)).reason == "unknown_device"
    assert ds_decide(replace(low, account_age_days=None)).reason == "new_account"
    assert ds_decide(replace(low, account_age_days=MIN_ACCOUNT_AGE_DAYS - 1)).reason == "new_account"
    assert frictionless_limit_minor("JPY") == 250 and frictionless_limit_minor("KWD") == 250_000


@given(
    st.integers(1, 10**9),
    st.sampled_from(["EUR", "JPY", "KWD"]),
    st.none() | st.integers(0, 1_000_000),
    st.booleans(),
    st.none() | st.integers(0, 5_000),
    st.booleans(),
)
def test_ds_is_frictionless_exactly_when_no_rule_asks_for_a_challenge(
    amount: int, currency: str, score: int | None, known: bool, age: int | None, mandated: bool
) -> None:
    risk = RiskData(amount, currency, score, known, age, mandated)
    flow = ds_decide(risk)
    low = (
        not mandated
        and (score is None or score < HIGH_RISK_PPM)
        and amount <= frictionless_limit_minor(currency)
        and known
        and age is not None
        and age >= MIN_ACCOUNT_AGE_DAYS
    )
    assert flow.challenge is not low
    assert ds_decide(risk) == flow  # deterministic
    # Raising the risk never turns a challenge frictionless.
    assert ds_decide(replace(risk, amount_minor=amount * 2, device_known=False)).challenge or not flow.challenge


def test_challenge_allows_a_few_tries() -> None:
    assert challenge_answer("123456", "123456", 0) == "Y"
    assert challenge_answer("123456", "000000", 0) == "retry"
    assert challenge_answer("123456", "000000", MAX_OTP_ATTEMPTS - 1) == "N"
    assert challenge_answer("123456", "12345", 1) == "retry"  # another length is just wrong


# --- the CAVV ---


def test_a_cavv_verifies_for_its_payment_and_under_a_rotated_key(tmp_path) -> None:
    s = FileKeyStore(tmp_path)
    s.init()
    old = issue_cavv(av(), ActiveSigner.of(s, ACS_SIGNING))
    s.rotate(ACS_SIGNING)
    new = issue_cavv(av(key_id="acs-signing-v2"), ActiveSigner.of(s, ACS_SIGNING))
    keys = s.public_keys(ACS_SIGNING)
    assert list(keys) == ["acs-signing-v1", "acs-signing-v2"]
    assert check(old, keys) == av() and check(new, keys) == av(key_id="acs-signing-v2")
    assert check(new, keys, eci=None, ds_trans_id=None) == av(key_id="acs-signing-v2")  # omitted: the cavv's


@pytest.mark.parametrize(
    "facts, reason",
    [
        ({"payment_id": OTHER_PID}, "cavv_replayed"),
        ({"merchant_id": "m2"}, "cavv_merchant_mismatch"),
        ({"amount_minor": 12_346}, "cavv_amount_mismatch"),
        ({"currency": "USD"}, "cavv_amount_mismatch"),
        ({"trans_status": "A"}, "cavv_mismatch"),
        ({"eci": "07"}, "cavv_mismatch"),
        ({"at_ms": AT + VALIDITY_MS + 1}, "cavv_expired"),
        ({"at_ms": AT - CLOCK_SKEW_MS - 1}, "cavv_not_yet_valid"),
    ],
)
def test_a_cavv_for_other_facts_is_refused(store: FileKeyStore, facts: dict, reason: str) -> None:
    token = issue_cavv(av(), ActiveSigner.of(store, ACS_SIGNING))
    refused = check(token, store.public_keys(ACS_SIGNING), **facts)
    assert isinstance(refused, Refusal) and refused.reason == reason


def _altered(token: str, **claims: object) -> str:
    prefix, segment, sig = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))) | claims
    new = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{prefix}.{new}.{sig}"


def test_forged_and_altered_cavvs_are_refused(store: FileKeyStore) -> None:
    keys = store.public_keys(ACS_SIGNING)
    token = issue_cavv(av(), ActiveSigner.of(store, ACS_SIGNING))
    # Claims changed to fit another payment, the signature kept: the signature fails.
    for altered in (_altered(token, amount_minor=99), _altered(token, payment_id=OTHER_PID)):
        assert check(altered, keys, amount_minor=99) == Refusal(
            "cavv_invalid", "the cavv's signature does not verify: forged or altered"
        )
    # Signed by another key that names the issuer's key id: forged.
    forged = issue_cavv(av(), Impostor("acs-signing-v1"))
    assert check(forged, keys).reason == "cavv_invalid"  # type: ignore[union-attr]
    # The event-signing key vouches for no payment, even where its public key is at hand.
    events = issue_cavv(av(key_id="signing-v1"), ActiveSigner.of(store, SIGNING))
    assert check(events, keys).reason == "cavv_unknown_key"  # type: ignore[union-attr]
    assert check(events, keys | store.public_keys(SIGNING)).reason == "cavv_unknown_key"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "token", ["", "av1", "av1..", "wc1.e30.AA", "av1.e30.AA", "av1.!!!.AA", "x" * 5000, "av1.eyJrZXlfaWQiOjF9.AA"]
)
def test_malformed_cavvs_are_refused_not_raised(store: FileKeyStore, token: str) -> None:
    refused = check(token, store.public_keys(ACS_SIGNING))
    assert isinstance(refused, Refusal) and refused.reason == "cavv_malformed"


def test_a_cavv_with_a_boolean_amount_is_malformed(store: FileKeyStore) -> None:
    token = issue_cavv(av(), ActiveSigner.of(store, ACS_SIGNING))
    assert check(_altered(token, amount_minor=True), store.public_keys(ACS_SIGNING)).reason == "cavv_malformed"  # type: ignore[union-attr]


# --- wallet cryptograms ---


def test_wallet_cryptogram_binds_the_wallet_token_and_the_payment(store: FileKeyStore) -> None:
    keys = store.public_keys(WALLET_SIGNING)
    c = WalletCryptogram(
        "wallet-signing-v1", "apple_pay", token_digest("dev_token_0123456789"), PID, "m1", 500, "EUR", AT
    )
    token = issue_cryptogram(c, ActiveSigner.of(store, WALLET_SIGNING))
    facts = dict(
        provider="apple_pay",
        wallet_token="dev_token_0123456789",
        payment_id=PID,
        merchant_id="m1",
        amount_minor=500,
        currency="EUR",
        at_ms=AT,
    )
    assert verify_cryptogram(token, keys, **facts) == c  # type: ignore[arg-type]
    for changes, reason in [
        ({"payment_id": OTHER_PID}, "cryptogram_replayed"),
        ({"amount_minor": 501}, "cryptogram_amount_mismatch"),
        ({"wallet_token": "dev_token_other_0000"}, "cryptogram_mismatch"),
        ({"provider": "google_pay"}, "cryptogram_mismatch"),
    ]:
        assert verify_cryptogram(token, keys, **(facts | changes)).reason == reason  # type: ignore[arg-type, union-attr]
    # A CAVV is no cryptogram, and an issuer key signs none.
    cavv = issue_cavv(av(), ActiveSigner.of(store, ACS_SIGNING))
    assert verify_cryptogram(cavv, keys | store.public_keys(ACS_SIGNING), **facts).reason == "cryptogram_malformed"  # type: ignore[arg-type, union-attr]
