"""GET /v1/payments/{id} from the ClickHouse read model (`payments`, FINAL)."""

from __future__ import annotations

import threading
from typing import Any

_QUERY = """
SELECT payment_id, merchant_id, status AS payment_status, currency, authorized_minor, captured_minor,
       refunded_minor, card_bin, card_last4
FROM payments FINAL WHERE payment_id = {pid:String} LIMIT 1
"""


class ClickHousePayments:
    """One client, used by one thread at a time (the API calls it off the event loop)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def get(self, payment_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self._client.query(_QUERY, parameters={"pid": payment_id}).named_results())
        return rows[0] if rows else None
