"""Blocklists as pure state: block/unblock per key, latest by event time wins, expiry
by event time, every kind matches the right transaction field, bad entries refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.blocklist import (
    BlockEntry,
    Blocklist,
    BlocklistError,
    account_digest,
    email_digest,
    shipped_blocklist,
    shipped_entries,
)
from schemas.codec import Codec

T = datetime(2026, 11, 25, 10, tzinfo=UTC)
TX = {"card_token": "tok_abc", "bin": "42424299", "ip": "10.1.2.3", "device": "dev-1", "email": "Alice@Example.com "}


def entry(kind, value, action="block", at=T, **kw):
    return BlockEntry.make(kind, value, action, "test", at, **kw)


@pytest.mark.parametrize(
    "kind, value",
    [
        ("card", "tok_abc"),
        ("bin", "424242"),
        ("bin", "42424299"),
        ("ip", "10.1.2.3"),
        ("device", "dev-1"),
        ("email", "alice@example.com"),
    ],
)
def test_each_kind_matches_its_field(kind, value):
    bl = Blocklist()
    bl.apply(entry(kind, value))
    assert bl.hits(TX, T) == (f"blocklist_{kind}",)
    assert (
        bl.hits(
            TX | {"card_token": "tok_x", "bin": "511111", "ip": "10.9.9.9", "device": "d2", "email": "bob@example.com"},
            T,
        )
        == ()
    )


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
    [
        ("card", "4242424242424242"),
        ("bin", "42"),
        ("ip", "999.1.1.1"),
        ("email", "not-an-email"),
        ("device", ""),
        ("phone", "123"),
        ("device", "x" * 200),
    ],
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


# --- the other methods' instruments (docs/fraud.md, "Every method") ---

DIGEST = account_digest("DE89 3704 0044 0532 0130 00")
METHOD_TX = {
    "card_token": "wallet:apple_pay:wtok_abcdefghijklmnop",
    "wallet_token": "wtok_abcdefghijklmnop",
    "bank_account_hash": DIGEST,
    "mandate": "m_1:MD-1",
    "bnpl_customer": "later:cust_9",
    "crypto_address": "0xabcdef0000000000000000000000000000000001",
}


@pytest.mark.parametrize(
    "kind, value",
    [
        ("wallet", "wtok_abcdefghijklmnop"),
        ("bank_account", "de89370400440532013000"),
        ("bank_account", DIGEST),
        ("mandate", "m_1:MD-1"),
        ("bnpl_customer", "later:cust_9"),
        ("crypto_address", "0xABCDEF0000000000000000000000000000000001"),
    ],
)
def test_each_method_kind_matches_its_field(kind, value):
    bl = Blocklist()
    bl.apply(entry(kind, value))
    assert bl.hits(METHOD_TX, T) == (f"blocklist_{kind}",)
    assert bl.hits({k: v + "x" if k != "crypto_address" else "bc1qother00000" for k, v in METHOD_TX.items()}, T) == ()


def test_a_bank_account_is_kept_as_its_digest_only_and_matches_however_it_is_written():
    e = entry("bank_account", "de89-3704-0044-0532-0130-00")
    assert e.value == DIGEST and "3704" not in e.value
    with pytest.raises(BlocklistError, match="account_digest"):
        BlockEntry("bank_account", "DE89370400440532013000", "block", "t", T)


def test_an_evm_address_matches_in_any_case_others_exactly():
    bl = Blocklist()
    bl.apply(entry("crypto_address", "0xAbCdEf0000000000000000000000000000000001"))
    bl.apply(entry("crypto_address", "bc1qCaseMatters0001"))
    assert bl.hits({"crypto_address": "0XABCDEF0000000000000000000000000000000001"}, T) == ("blocklist_crypto_address",)
    assert bl.hits({"crypto_address": "bc1qcasematters0001"}, T) == ()
    with pytest.raises(BlocklistError, match="crypto address"):
        entry("crypto_address", "not an address!")


def test_the_shipped_sanctioned_addresses_seed_a_list_an_operator_can_lift():
    shipped = shipped_entries()
    assert (
        shipped and {e.kind for e in shipped} == {"crypto_address"} and all(e.actor == "shipped-list" for e in shipped)
    )
    bl = shipped_blocklist()
    listed = shipped[0].value
    assert bl.hits({"crypto_address": listed}, T) == ("blocklist_crypto_address",)
    bl.apply(entry("crypto_address", listed, "unblock"))  # any operator entry is newer than the epoch
    assert bl.hits({"crypto_address": listed}, T) == ()


def test_an_unusable_shipped_list_is_a_clear_error(tmp_path):
    bad = tmp_path / "list.toml"
    bad.write_text('version = "x"\n[[address]]\nvalue = "no spaces allowed"\nprogram = "P"\n')
    with pytest.raises(BlocklistError, match="list.toml"):
        shipped_entries(bad)


def test_an_entry_written_before_the_new_kinds_still_decodes():
    import io

    import fastavro

    from schemas.codec import MAGIC, load_schema

    old = load_schema("history/FraudBlockEntry.1")
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    record = entry("device", "dev-1").to_record()
    fastavro.schemaless_writer(buf, old.parsed, record)
    assert BlockEntry.from_record(Codec("FraudBlockEntry").decode(buf.getvalue())) == entry("device", "dev-1")
    new = entry("crypto_address", "bc1qsomething01")
    assert (
        BlockEntry.from_record(Codec("FraudBlockEntry").decode(Codec("FraudBlockEntry").encode(new.to_record()))) == new
    )
