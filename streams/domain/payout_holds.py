"""What holds a payout back (compliance), as plain values: the payout run
(streams/domain/payouts.py `run_payouts(hold=...)`) asks before it sends one.

  kyc_not_verified   the merchant is registered and its kyc_status is not verified
                     (pending, in review, rejected, or its re-verification is open)
  sanctions_hit      the beneficiary, the merchant's KYC legal name, is on the list
                     (entries a reviewer cleared for this merchant are skipped)

An unregistered merchant is paid as before unless registration is required
(`PAYSTREAM_MERCHANTS_REQUIRE_REGISTRATION`), as the keys stage admits its creates.
The reason is what the `payouts` read model's failure_reason shows for a held row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from streams.domain.payouts import Payout
from streams.domain.sanctions import SanctionsList


def payout_hold(
    registry: Mapping[str, Mapping[str, Any]], sanctions: SanctionsList, *, require_registration: bool = False
) -> Callable[[Payout], str | None]:
    def hold(payout: Payout) -> str | None:
        record = registry.get(payout.merchant_id)
        if record is None:
            return "merchant_unknown" if require_registration else None
        if record["kyc_status"] != "verified":
            return f"kyc_not_verified: {record['kyc_status']}"
        case = record.get("kyc")
        if case is None:
            return None
        hit = sanctions.screen(case["legal_name"], cleared=case.get("cleared") or ())
        return None if hit is None else f"{hit.reason()} ({hit.entry_name})"

    return hold
