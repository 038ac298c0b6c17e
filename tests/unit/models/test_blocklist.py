"""Blocklists as pure state: block/unblock per key, latest by event time wins, expiry
by event time, every kind matches the right transaction field, bad entries refused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from models.blocklist import BlockEntry, Blocklist, BlocklistError, email_digest
from schemas.codec import Codec

T = datetime(2026, 11, 25, 10, tzinfo=timezone.utc)
TX = {"card_token": "tok_abc", "bin": "42424299", "ip": "10.1.2.3", "device": "dev-1",
      "email": "Alice@Example.com "}


def entry(kind, value, action="block", at=T, **kw):
    return BlockEntry.make(kind, value, action, "test", at, **kw)


@pytest.mark.parametrize(
    "kind, value",
    [("card", "tok_abc"), ("bin", "424242"), ("bin", "42424299"), ("ip", "10.1.2.3"),
     ("device", "dev-1"), ("email", "alice@example.com")],
)
def test_each_kind_matches_its_field(kind, value):
    bl = Blocklist()
    bl.apply(entry(kind, value))
    assert bl.hits(TX, T) == (f"blocklist_{kind}",)
    assert bl.hits(TX | {"card_token": "tok_x", "bin": "511111", "ip": "10.9.9.9",
                         "device": "d2", "email": "bob@example.com"}, T) == ()


def test_unblock_and_late_older_entries():
    bl = Blocklist()
    bl.apply(entry("card", "tok_abc", at=T))
    bl.apply(entry("card", "tok_abc", "unblock", at=T + timedelta(minutes=1)))
    assert bl.hits(TX, T) == () and len(bl) == 0
    bl.apply(entry("card", "tok_abc", "block", at=T))  # older than the unblock: ignored
    assert bl.hits(TX, T) == ()
    bl.apply(entry("card", "tok_abc", "block", at=T + timedelta(minutes=2)))
    assert bl.hits(TX, T) == ("blocklist_card",)
    assert [e.key for e in bl.entries()] == ["card:tok_abc"]


def test_expiry_is_by_event_time():
    bl = Blocklist()
    bl.apply(entry("device", "dev-1", expires_at=T + timedelta(hours=1)))
    assert bl.hits(TX, T + timedelta(minutes=59)) == ("blocklist_device",)
    assert bl.hits(TX, T + timedelta(hours=1)) == ()


def test_email_is_stored_as_digest_only():
    e = entry("email", " Alice@Example.com")
    assert e.value == email_digest("alice@example.com") and "@" not in e.value


@pytest.mark.parametrize(
    "kind, value",
    [("card", "4242424242424242"), ("bin", "42"), ("ip", "999.1.1.1"), ("email", "not-an-email"),
     ("device", ""), ("phone", "123"), ("device", "x" * 200)],
)
def test_bad_entries_are_refused(kind, value):
    with pytest.raises(BlocklistError):
        entry(kind, value)


def test_avro_round_trip():
    codec = Codec("FraudBlockEntry")
    e = entry("ip", "2001:db8::1", expires_at=T + timedelta(days=1), actor="ops:bob")
    back = BlockEntry.from_record(codec.decode(codec.encode(e.to_record(), check=True)))
    assert back == e
    with pytest.raises(BlocklistError, match="lacks"):
        BlockEntry.from_record({"kind": "ip"})
