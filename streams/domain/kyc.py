"""KYC onboarding as a workflow over a merchant's registry record. Pure: no Kafka, no
clock (every transition takes the event's time), no logging (owners' names are
personal data).

A merchant applies (its legal name, country, registration number, beneficial
owners, document references); the KYC provider's checks answer pass, fail or manual;
a reviewer decides a manual case; a verified merchant is checked again when its
verification expires (`reverify`, by event time: the scheduler's daily job). The case
lives in the merchant's record (MerchantRecord v3 `kyc`), and the record's
`kyc_status` follows the case's state (`STATUS_OF`), so the keys stage and the payout
run read one field as before.

  none --apply--> submitted --checks pass--> verified --reverify (due)--> submitted
                            --checks fail--> rejected --apply--> submitted (a new application)
                            --checks manual--> manual_review --review approve--> verified
                                                             --review reject--> rejected
  verified --withdraw (an operator off-boards it)--> rejected

Each transition is `(case, event) -> case` or a KycError with a reason code; an
illegal event changes nothing.

The provider here is simulated (`SimulatedKycProvider`), deterministic by input as a
payment provider's test mode is (docs/compliance.md lists its rules).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.errors import ReasonedError
from streams.domain.sanctions import SanctionsList

STATES = ("submitted", "manual_review", "verified", "rejected")
STATUS_OF = {"submitted": "pending", "manual_review": "pending", "verified": "verified", "rejected": "rejected"}
OUTCOMES = ("pass", "fail", "manual")
DOCUMENT_KINDS = ("registration_certificate", "owner_id", "proof_of_address", "bank_statement")
REQUIRED_DOCUMENTS = ("registration_certificate", "owner_id", "proof_of_address")
REVERIFY_AFTER = timedelta(days=365)  # a verification is good for a year, then checked again
MAX_OWNERS = 10
MAX_DOCUMENTS = 20
_REF = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")  # a document store's reference, never the document
_REGISTRATION = re.compile(r"[A-Za-z0-9-]{3,32}")
_COUNTRY = re.compile(r"[A-Z]{2}")


class KycError(ReasonedError, ValueError):
    """An application or a transition that cannot be made; `reason` is the code."""


@dataclass(frozen=True)
class Check:
    name: str
    outcome: str  # pass | fail | manual
    detail: str


def application(
    legal_name: str, country: str, registration_number: str, owners: Iterable[str], documents: Mapping[str, str]
) -> dict[str, Any]:
    """A checked application: what the merchant sends (the API's and the CLI's body)."""
    owners, documents = [o.strip() for o in owners], dict(documents)
    if not legal_name.strip() or len(legal_name) > 200:
        raise KycError("invalid_application", "legal_name must be 1..200 chars")
    if not _COUNTRY.fullmatch(country):
        raise KycError("invalid_application", "country must be ISO 3166-1 alpha-2")
    if not _REGISTRATION.fullmatch(registration_number):
        raise KycError("invalid_application", "registration_number must be 3..32 chars [A-Za-z0-9-]")
    if not 1 <= len(owners) <= MAX_OWNERS or not all(0 < len(o) <= 200 for o in owners):
        raise KycError("invalid_application", f"1..{MAX_OWNERS} beneficial owners, each named in 1..200 chars")
    if len(documents) > MAX_DOCUMENTS or not set(documents) <= set(DOCUMENT_KINDS):
        raise KycError("invalid_application", f"document kinds are among {', '.join(DOCUMENT_KINDS)}")
    if not all(_REF.fullmatch(r) for r in documents.values()):
        raise KycError(
            "invalid_application", "a document is named by its store reference, 1..128 chars [A-Za-z0-9_.:/-]"
        )
    return {
        "legal_name": legal_name.strip(),
        "country": country,
        "registration_number": registration_number,
        "owners": owners,
        "documents": [{"kind": k, "ref": documents[k]} for k in sorted(documents)],
    }


def apply(case: Mapping[str, Any] | None, app: Mapping[str, Any], application_id: str, at: datetime) -> dict[str, Any]:
    """A new application: from no case or a rejected one (a merchant may apply again)."""
    if case is not None and case["state"] != "rejected":
        raise KycError("kyc_in_progress", f"the merchant's KYC is {case['state']}")
    return {
        **app,
        "application_id": application_id,
        "state": "submitted",
        "checks": [],
        "submitted_at": at,
        "decided_at": None,
        "verified_until": None,
        "reviewer": None,
        "cleared": list(case.get("cleared") or ()) if case is not None else [],
    }


def checked(case: Mapping[str, Any], checks: Iterable[Check], at: datetime) -> dict[str, Any]:
    """The provider's answer to a submitted case: any fail rejects, else any manual
    sends it to a reviewer, else it is verified until REVERIFY_AFTER later."""
    if case["state"] != "submitted":
        raise KycError("kyc_not_submitted", f"checks answer a submitted case, not a {case['state']} one")
    checks = list(checks)
    outcomes = {c.outcome for c in checks}
    if not checks or not outcomes <= set(OUTCOMES):
        raise KycError("invalid_checks", f"checks answer {', '.join(OUTCOMES)}")
    state = "rejected" if "fail" in outcomes else "manual_review" if "manual" in outcomes else "verified"
    return {
        **case,
        "state": state,
        "checks": [c.__dict__ for c in checks],
        "decided_at": at,
        "verified_until": at + REVERIFY_AFTER if state == "verified" else None,
    }


def reviewed(
    case: Mapping[str, Any], decision: str, reviewer: str, at: datetime, cleared: Iterable[str] = ()
) -> dict[str, Any]:
    """A reviewer's decision on a manual case; `cleared`: sanctions entries they ruled
    out for this merchant (false positives), skipped when it is screened again."""
    if case["state"] != "manual_review":
        raise KycError("kyc_not_in_review", f"only a case in manual_review is reviewed, not a {case['state']} one")
    if decision not in ("approve", "reject"):
        raise KycError("invalid_review_decision", "decision must be approve or reject")
    if not reviewer or len(reviewer) > 64:
        raise KycError("invalid_review_decision", "reviewer must be 1..64 chars")
    verified = decision == "approve"
    return {
        **case,
        "state": "verified" if verified else "rejected",
        "decided_at": at,
        "reviewer": reviewer,
        "verified_until": at + REVERIFY_AFTER if verified else None,
        "cleared": sorted({*case.get("cleared", ()), *cleared}),
    }


def withdrawn(case: Mapping[str, Any], reviewer: str, at: datetime) -> dict[str, Any]:
    """An operator withdraws a verification (off-boarding: `paystream merchants reject`)."""
    if case["state"] != "verified":
        raise KycError("kyc_not_verified", f"only a verified case is withdrawn, not a {case['state']} one")
    if not reviewer or len(reviewer) > 64:
        raise KycError("invalid_review_decision", "reviewer must be 1..64 chars")
    return {**case, "state": "rejected", "decided_at": at, "reviewer": reviewer, "verified_until": None}


def operator_set(case: Mapping[str, Any], kyc_status: str, reviewer: str, at: datetime) -> dict[str, Any] | None:
    """An operator's `merchants verify|reject` on a merchant with a case, as the workflow
    moves it: a case in manual_review is approved or rejected (as `kyc-review`), a
    verified one is withdrawn by a reject. None: the case is there already (nothing to
    write). A submitted case waits for its checks, and a rejected merchant applies again."""
    if kyc_status not in ("verified", "rejected"):
        raise KycError("invalid_review_decision", "an operator sets verified or rejected")
    if STATUS_OF[case["state"]] == kyc_status:
        return None
    if case["state"] == "manual_review":
        return reviewed(case, "approve" if kyc_status == "verified" else "reject", reviewer, at)
    if case["state"] == "verified":
        return withdrawn(case, reviewer, at)
    why = "its checks have not answered" if case["state"] == "submitted" else "a rejected merchant applies again"
    raise KycError("kyc_not_in_review", f"a {case['state']} case cannot be {kyc_status}: {why}")


def reverify_due(case: Mapping[str, Any] | None, at: datetime) -> bool:
    return (
        case is not None
        and case["state"] == "verified"
        and case["verified_until"] is not None
        and at >= case["verified_until"]
    )


def reverify(case: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """A verified case past its verified_until, submitted again for checks."""
    if not reverify_due(case, at):
        raise KycError("kyc_not_due", "only a verified case past its verified_until is checked again")
    return {**case, "state": "submitted", "checks": [], "submitted_at": at, "decided_at": None, "verified_until": None}


class SimulatedKycProvider:
    """Checks deterministic by input, as a provider's test mode (docs/compliance.md):
    documents  fail if a required kind is missing
    registry   registration numbers starting FAIL fail, MANUAL need a person, others pass
    sanctions  the legal name and every owner screened: a hit needs a person (the
               reviewer sees the match), unless the reviewer cleared that entry before
    """

    def __init__(self, sanctions: SanctionsList) -> None:
        self.sanctions = sanctions

    def check(self, case: Mapping[str, Any]) -> list[Check]:
        kinds = {d["kind"] for d in case["documents"]}
        missing = [k for k in REQUIRED_DOCUMENTS if k not in kinds]
        checks = [
            Check(
                "documents",
                "fail" if missing else "pass",
                f"missing {', '.join(missing)}" if missing else "all required documents",
            )
        ]
        reg = case["registration_number"].upper()
        checks.append(
            Check(
                "registry",
                "fail" if reg.startswith("FAIL") else "manual" if reg.startswith("MANUAL") else "pass",
                f"{case['country']} business registry",
            )
        )
        hits = []
        for role, name in [("legal_name", case["legal_name"]), *(("owner", o) for o in case["owners"])]:
            hit = self.sanctions.screen(name, cleared=case.get("cleared") or ())
            if (
                hit is not None
            ):  # the listed party's name, not the applicant's: the match is shown, the name is not logged
                hits.append(f"{role} {hit.reason()} ({hit.entry_name})")
        checks.append(
            Check("sanctions", "manual" if hits else "pass", "; ".join(hits) or f"clear ({self.sanctions.version})")
        )
        return checks
