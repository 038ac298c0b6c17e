"""The API's own objects on the real broker: a write is read back at once by the
process that made it, by another process, and after a restart (the compacted
api-objects topic is the store)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from streams.api.objects import KafkaObjects
from tests.integration.support import Pipeline

pytestmark = pytest.mark.integration


def test_objects_are_shared_by_instances_and_survive_a_restart(pipeline: Pipeline) -> None:
    merchant, other = f"m_obj_{uuid.uuid4().hex[:6]}", f"m_obj_{uuid.uuid4().hex[:6]}"
    cus = "cus_" + uuid.uuid4().hex

    async def write_and_read() -> None:
        first = KafkaObjects(pipeline.settings)
        try:
            await first.put({"id": cus, "object": "customer", "merchant_id": merchant, "email": "a@example.com"})
            assert (await first.get(merchant, cus))["email"] == "a@example.com"  # read-your-writes
            assert await first.get(other, cus) is None  # another merchant's is unknown
            await first.put({"id": cus, "object": "customer", "merchant_id": merchant, "email": "b@example.com"})
        finally:
            first.close()
        second = KafkaObjects(pipeline.settings)  # a restart, or another instance
        try:
            assert (await second.get(merchant, cus))["email"] == "b@example.com"
            assert [d["id"] for d in await second.list(merchant, "customer")] == [cus]
            await second.delete(merchant, cus)
            assert await second.get(merchant, cus) is None and await second.list(merchant, "customer") == []
        finally:
            second.close()

    asyncio.run(write_and_read())
