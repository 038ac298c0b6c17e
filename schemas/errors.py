"""The one shape of a refusal: a stable reason code and a detail for people."""

from __future__ import annotations


class ReasonedError(Exception):
    """Raised with a stable `reason` code (what a rejection, a dead letter or an exit
    message carries) and a `detail` saying why; neither may hold card data. Mixed in
    before the builtin its callers catch: `class CardError(ReasonedError, ValueError)`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
