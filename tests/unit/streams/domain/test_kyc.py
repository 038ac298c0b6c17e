"""KYC onboarding (streams/domain/kyc.py): the state machine over any sequence of events, the
simulated provider's deterministic outcomes, and the record's kyc_status following the case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import Codec
from streams.domain import kyc, merchants
from streams.domain.kyc import Check, KycError, SimulatedKycProvider
from streams.domain.sanctions import load_list

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
DOCS = {"registration_certificate": "docs:rc/1", "owner_id": "docs:id/1", "proof_of_address": "docs:poa/1"}
PROVIDER = SimulatedKycProvider(load_list())
CODEC = Codec("MerchantRecord")


def app(
    reg: str = "GB-12345",
    owners: tuple[str, ...] = ("Ada Example",),
    legal: str = "Acme Trading Ltd",
    docs: dict[str, str] | None = None,
) -> dict:
    return kyc.application(legal, "GB", reg, owners, DOCS if docs is None else docs)


def run_checks(case: dict, at: datetime = T0) -> dict:
    return kyc.checked(case, PROVIDER.check(case), at)


@pytest.mark.parametrize(
    "application, state",
    [
        (app(), "verified"),
        (app(reg="FAIL-1"), "rejected"),
        (app(reg="MANUAL-1"), "manual_review"),
        (app(docs={"owner_id": "docs:id/1"}), "rejected"),
        (app(owners=("Ada Example", "Zsigmond Korvath")), "manual_review"),  # an owner on the list
        (app(legal="Crimson Lattice Logistics"), "manual_review"),
    ],
)
def test_the_simulated_provider_is_deterministic_by_input(application: dict, state: str) -> None:
    case = run_checks(kyc.apply(None, application, "kyc_1", T0))
    assert case["state"] == state and run_checks(kyc.apply(None, application, "kyc_1", T0)) == case


def test_a_sanctions_hit_shows_the_listed_party_to_the_reviewer_and_a_clearance_sticks() -> None:
    case = run_checks(kyc.apply(None, app(owners=("Zsigmond Korvath",)), "kyc_1", T0))
    detail = next(c["detail"] for c in case["checks"] if c["name"] == "sanctions")
    assert "sanctions_hit:PS-0004:100" in detail and "KORVATH Zsigmond Árpád" in detail
    case = kyc.reviewed(case, "approve", "ops-1", T0 + timedelta(hours=2), cleared=["PS-0004"])
    assert case["state"] == "verified" and case["cleared"] == ["PS-0004"]
    # A year on, re-verification skips the cleared entry: verified again without a person.
    later = T0 + kyc.REVERIFY_AFTER + timedelta(hours=2)
    assert run_checks(kyc.reverify(case, later), later)["state"] == "verified"


def test_verification_expires_by_event_time_and_is_checked_again() -> None:
    case = run_checks(kyc.apply(None, app(), "kyc_1", T0))
    until = case["verified_until"]
    assert until == T0 + kyc.REVERIFY_AFTER
    assert not kyc.reverify_due(case, until - timedelta(milliseconds=1)) and kyc.reverify_due(case, until)
    with pytest.raises(KycError, match="kyc_not_due"):
        kyc.reverify(case, until - timedelta(days=1))
    again = kyc.reverify(case, until)
    assert again["state"] == "submitted" and kyc.STATUS_OF[again["state"]] == "pending"


@pytest.mark.parametrize(
    "bad, why",
    [
        (dict(legal_name=" "), "legal_name"),
        (dict(country="gb"), "country"),
        (dict(registration_number="x"), "registration"),
        (dict(owners=[]), "owners"),
        (dict(documents={"selfie": "a"}), "document kinds"),
        (dict(documents={"owner_id": "has spaces"}), "reference"),
    ],
)
def test_a_bad_application_is_refused_with_a_reason(bad: dict, why: str) -> None:
    args = dict(legal_name="Acme", country="GB", registration_number="GB-1", owners=["A"], documents=DOCS) | bad
    with pytest.raises(KycError, match=why) as e:
        kyc.application(**args)
    assert e.value.reason == "invalid_application"


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["apply", "checks", "review", "reverify", "operator"]),
        st.sampled_from(["pass", "fail", "manual", "approve", "reject"]),
        st.integers(0, 400),
    ),
    max_size=12,
)


@given(events=EVENTS)
def test_any_event_sequence_keeps_the_machine_sound(events: list[tuple[str, str, int]]) -> None:
    """Verified only by a passing check or a reviewer's approval; an illegal event
    changes nothing; kyc_status always follows the state; the record stays encodable."""
    case, at = None, T0
    record = merchants.merchant_record("m_1", updated_at=T0)
    for kind, arg, days in events:
        at = at + timedelta(days=days)
        before = case
        try:
            if kind == "apply":
                case = kyc.apply(case, app(), f"kyc_{days}", at)
            elif kind == "checks" and case is not None:
                outcome = arg if arg in kyc.OUTCOMES else "pass"
                case = kyc.checked(case, [Check("registry", outcome, "")], at)
                assert case["state"] == {"pass": "verified", "fail": "rejected", "manual": "manual_review"}[outcome]
            elif kind == "review" and case is not None:
                decision = arg if arg in ("approve", "reject") else "approve"
                case = kyc.reviewed(case, decision, "ops", at)
                assert before["state"] == "manual_review"
            elif kind == "operator" and case is not None:
                status = "rejected" if arg in ("reject", "fail") else "verified"
                moved = kyc.operator_set(case, status, "ops", at)
                if moved is None:  # already so: nothing to write
                    assert kyc.STATUS_OF[case["state"]] == status
                    continue
                case = moved
                assert kyc.STATUS_OF[case["state"]] == status and case["reviewer"] == "ops"
                # an operator verifies only what a reviewer may approve, and rejects a case in review or verified
                assert before["state"] == "manual_review" or (before["state"], status) == ("verified", "rejected")
            elif kind == "reverify" and case is not None:
                case = kyc.reverify(case, at)
                assert before["state"] == "verified" and at >= before["verified_until"]
        except KycError:
            assert case is before  # refused: nothing changed
            continue
        if case is not None:
            record = merchants.with_case(record, case, at)
            assert record["kyc_status"] == kyc.STATUS_OF[case["state"]]
            assert (case["verified_until"] is not None) == (case["state"] == "verified")
            assert CODEC.decode(CODEC.encode(record, check=True)) == record


def test_applying_twice_is_refused_until_rejected() -> None:
    case = kyc.apply(None, app(), "kyc_1", T0)
    with pytest.raises(KycError, match="kyc_in_progress"):
        kyc.apply(case, app(), "kyc_2", T0)
    rejected = run_checks(kyc.apply(None, app(reg="FAIL-9"), "kyc_1", T0))
    assert kyc.apply(rejected, app(), "kyc_2", T0 + timedelta(days=1))["state"] == "submitted"


def test_an_operator_moves_the_case_as_the_workflow_does() -> None:
    review = run_checks(kyc.apply(None, app(reg="MANUAL-1"), "kyc_1", T0))
    assert review["state"] == "manual_review"
    verified = kyc.operator_set(review, "verified", "it-ops", T0)
    assert verified == kyc.reviewed(review, "approve", "it-ops", T0)  # the same transition as kyc-review
    assert kyc.operator_set(verified, "verified", "it-ops", T0) is None
    withdrawn = kyc.operator_set(verified, "rejected", "it-ops", T0 + timedelta(days=3))
    assert (withdrawn["state"], withdrawn["reviewer"], withdrawn["verified_until"]) == ("rejected", "it-ops", None)
    with pytest.raises(KycError, match="applies again") as e:
        kyc.operator_set(withdrawn, "verified", "it-ops", T0)
    assert e.value.reason == "kyc_not_in_review"
    with pytest.raises(KycError, match="checks have not answered"):
        kyc.operator_set(kyc.apply(None, app(), "kyc_2", T0), "verified", "it-ops", T0)
    with pytest.raises(KycError, match="reviewer"):
        kyc.operator_set(review, "rejected", "", T0)
