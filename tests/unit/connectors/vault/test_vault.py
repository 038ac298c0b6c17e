"""The vault's pure parts: the envelope of one record (seal, open, tamper detection,
rotation and rewrap), the per-batch sealer, and the bounded fold of the card-vault topic."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from connectors.vault.keys import TOKEN_HMAC, VAULT_MASTER, FileKeyStore
from connectors.vault.scan import PanScanner
from connectors.vault.tokenizer import TOKEN_PATTERN, StoreTokenizer
from connectors.vault.vault import (
    CardError,
    CardSealer,
    Revealed,
    SealedCards,
    VaultCard,
    VaultError,
    card_of,
    check_pan,
    master_key_id,
    open_record,
    rewrap,
    seal,
)

PANS = {"4242424242424242": "visa", "5555555555554444": "mastercard", "378282246310005": "amex"}
PAN = "4242424242424242"
M = "m_acme"


@pytest.fixture
def keys(tmp_path: Path) -> FileKeyStore:
    store = FileKeyStore(tmp_path / "keys")
    store.init()
    return store


def sealed(keys: FileKeyStore, pan: str = PAN, merchant: str = M) -> tuple[str, bytes]:
    card, blob = seal(keys, StoreTokenizer(keys), merchant, pan)
    assert blob is not None
    return card.token, blob


def edited(blob: bytes, **fields: str) -> bytes:
    return json.dumps(json.loads(blob) | fields).encode()


def flip(b64: str, at: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --- one record ---


@pytest.mark.parametrize(("pan", "brand"), PANS.items())
def test_seal_returns_what_may_travel_and_open_gives_the_pan_back(keys: FileKeyStore, pan: str, brand: str) -> None:
    card, blob = seal(keys, StoreTokenizer(keys), M, pan)
    assert card == VaultCard(card.token, pan[:6], pan[-4:], brand)
    assert TOKEN_PATTERN.match(card.token)
    assert card.token == StoreTokenizer(keys).token(M, pan)  # the token ingest computed before the vault
    assert open_record(keys, card.token, blob) == Revealed(pan, M, "vault-master-v1")
    assert card_of(card.token, blob) == card
    assert master_key_id(card.token, blob) == "vault-master-v1"


@hsettings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # keys: read only
@given(merchant=st.text(st.characters(codec="utf-8"), min_size=1, max_size=64).filter(str.isprintable))
def test_compact_and_spaced_records_read_the_same(keys: FileKeyStore, merchant: str) -> None:
    # seal writes compact sorted JSON; a record json.dumps wrote before (spaces, ASCII escapes) reads the same.
    card, blob = seal(keys, StoreTokenizer(keys), merchant, PAN)
    assert blob is not None
    doc = json.loads(blob)
    assert set(doc) == {
        "format",
        "merchant_id",
        "key_id",
        "wrapped_key",
        "nonce",
        "ciphertext",
        "bin",
        "last4",
        "brand",
    }
    spaced = json.dumps(doc).encode()
    for record in (blob, spaced):
        assert open_record(keys, card.token, record) == Revealed(PAN, merchant, "vault-master-v1")
        assert card_of(card.token, record) == card


def test_each_record_has_its_own_data_key(keys: FileKeyStore) -> None:
    (t1, a), (t2, b) = sealed(keys), sealed(keys, "4242 4242 4242 4242")
    assert t1 == t2  # same card, same merchant: same token
    assert json.loads(a)["wrapped_key"] != json.loads(b)["wrapped_key"]
    assert json.loads(a)["ciphertext"] != json.loads(b)["ciphertext"]


def test_no_record_holds_the_pan(keys: FileKeyStore) -> None:
    blob = b"".join(sealed(keys, pan)[1] for pan in PANS)
    assert PanScanner(PANS).scan(blob) == []
    assert b"424242" in blob  # the BIN is kept in the clear (it may travel); the PAN is not


def test_a_revealed_pan_never_shows_in_a_repr(keys: FileKeyStore) -> None:
    token, blob = sealed(keys)
    assert PAN not in repr(open_record(keys, token, blob))


@pytest.mark.parametrize(
    ("pan", "reason"),
    [
        ("4242424242424241", "invalid_card_number"),  # Luhn
        ("424242424242", "invalid_card_number"),  # 12 digits: too short
        ("42424242424242424242", "invalid_card_number"),  # 20 digits
        ("4242x24242424242", "invalid_card_number"),
        ("٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", "invalid_card_number"),  # non-ASCII digits
        ("9999999999999995", "unknown_card_brand"),  # Luhn-valid, no network
        ("4242424242424", "invalid_card_number"),  # 13 digits, Luhn fails
    ],
)
def test_bad_cards_are_refused_with_a_reason_and_no_pan(keys: FileKeyStore, pan: str, reason: str) -> None:
    sealer = CardSealer(keys, StoreTokenizer(keys), held=lambda token: False)
    with pytest.raises(CardError) as e:
        sealer.tokenize(M, pan)
    assert e.value.reason == reason
    assert pan not in str(e.value)
    assert sealer.sealed == {}


def test_check_pan_accepts_a_13_digit_visa() -> None:
    assert check_pan("4222222222222") == ("4222222222222", "visa")


@pytest.mark.parametrize("merchant", ["", "m\x1fx", "m" * 65])
def test_bad_merchant_ids_are_refused(keys: FileKeyStore, merchant: str) -> None:
    with pytest.raises(CardError, match="invalid_merchant_id"):
        seal(keys, StoreTokenizer(keys), merchant, PAN)


# --- the sealer of one ingest batch ---


def test_the_sealer_seals_each_card_not_held_once(keys: FileKeyStore) -> None:
    held_token = StoreTokenizer(keys).token(M, "5555555555554444")
    sealer = CardSealer(keys, StoreTokenizer(keys), held=lambda token: token == held_token)
    first = sealer.tokenize(M, PAN)
    assert sealer.tokenize(M, "4242-4242-4242-4242") == first
    assert sealer.token(M, "5555555555554444") == held_token  # held: the topic has it, nothing to write
    other = sealer.tokenize("m_other", PAN)
    assert other.token != first.token  # tokens are per merchant
    assert set(sealer.sealed) == {first.token, other.token}
    assert open_record(keys, first.token, sealer.sealed[first.token]).pan == PAN
    assert "sealed=2" in repr(sealer) and PAN not in repr(sealer)


# --- tampering ---


def test_tampered_ciphertext_is_a_clear_error_naming_the_token(keys: FileKeyStore) -> None:
    token, blob = sealed(keys)
    record = json.loads(blob)
    with pytest.raises(VaultError) as e:
        open_record(keys, token, edited(blob, ciphertext=flip(record["ciphertext"], 3)))
    assert e.value.token == token
    assert "ciphertext failed authentication" in str(e.value) and token in str(e.value)
    assert PAN not in str(e.value)


def test_tampered_wrapped_key_or_nonce_fails(keys: FileKeyStore) -> None:
    token, blob = sealed(keys)
    record = json.loads(blob)
    with pytest.raises(VaultError, match="data key cannot be unwrapped"):
        open_record(keys, token, edited(blob, wrapped_key=flip(record["wrapped_key"], 30)))
    with pytest.raises(VaultError, match="ciphertext failed authentication"):
        open_record(keys, token, edited(blob, nonce=flip(record["nonce"], 0)))


def test_a_record_moved_to_another_token_or_merchant_fails(keys: FileKeyStore) -> None:
    a, blob = sealed(keys)
    b, _ = sealed(keys, "5555555555554444")
    with pytest.raises(VaultError, match=f"vault record {b}: data key cannot be unwrapped"):
        open_record(keys, b, blob)  # a's record under b's token
    with pytest.raises(VaultError, match="data key cannot be unwrapped"):
        open_record(keys, a, edited(blob, merchant_id="m_evil"))


def test_malformed_records_and_bad_tokens(keys: FileKeyStore) -> None:
    token, blob = sealed(keys)
    for bad in (b"{not json", b'{"format": 1}', b"[1]", b"x" * 5000, edited(blob, format=2)):  # type: ignore[arg-type]
        with pytest.raises(VaultError, match="record is malformed|larger than"):
            open_record(keys, token, bad)
    with pytest.raises(VaultError, match="not base64"):
        open_record(keys, token, edited(blob, nonce="!!"))
    with pytest.raises(VaultError, match="not a token"):
        card_of(PAN, blob)


# --- rotation ---


def test_rotation_keeps_old_records_readable_and_rewrap_moves_them(keys: FileKeyStore) -> None:
    old_token, old = sealed(keys)
    keys.rotate(VAULT_MASTER)
    restarted = FileKeyStore(keys.keys_dir)
    new_token, new = sealed(restarted, "5555555555554444")
    assert (master_key_id(old_token, old), master_key_id(new_token, new)) == ("vault-master-v1", "vault-master-v2")
    assert open_record(restarted, old_token, old).pan == PAN  # written under v1, read after rotation

    moved = rewrap(restarted, old_token, old)
    assert moved is not None and master_key_id(old_token, moved) == "vault-master-v2"
    assert json.loads(moved)["ciphertext"] == json.loads(old)["ciphertext"]  # only the data key was re-wrapped
    assert rewrap(restarted, new_token, new) is None  # under the active key already
    # After the rewrap the old master key is no longer needed: prove it by removing it.
    (keys.keys_dir / "vault-master-v1.json").unlink()
    without_v1 = FileKeyStore(keys.keys_dir)
    assert open_record(without_v1, old_token, moved).pan == PAN
    with pytest.raises(VaultError, match="vault-master-v1 is not under"):
        open_record(without_v1, old_token, old)
    with pytest.raises(VaultError, match="cannot rewrap"):
        rewrap(without_v1, old_token, old)


def test_token_key_rotation_issues_new_tokens_and_old_ones_stay_revealable(keys: FileKeyStore) -> None:
    old_token, old = sealed(keys)
    keys.rotate(TOKEN_HMAC)
    new_token, new = sealed(FileKeyStore(keys.keys_dir))
    assert new_token != old_token
    assert open_record(keys, old_token, old).pan == open_record(keys, new_token, new).pan == PAN


# --- the fold of the card-vault topic ---


def test_the_latest_record_per_token_wins_and_a_tombstone_forgets() -> None:
    cards = SealedCards(max_cards=10)
    cards.fold("tok_a", b"1")
    cards.fold("tok_a", b"2")  # a rewrap republishes under the same token
    assert cards.get("tok_a") == b"2" and len(cards) == 1
    cards.fold("tok_a", None)
    assert cards.get("tok_a") is None and "tok_a" not in cards
    cards.fold("tok_gone", None)  # a tombstone of a card never held
    assert len(cards) == 0


def test_the_map_is_bounded_and_pushes_out_the_least_recently_used() -> None:
    cards = SealedCards(max_cards=2)
    cards.fold("tok_a", b"a")
    cards.fold("tok_b", b"b")
    assert cards.get("tok_a") == b"a"  # used: b is now the oldest
    cards.fold("tok_c", b"c")
    assert ("tok_a" in cards, "tok_b" in cards, "tok_c" in cards) == (True, False, True)
    assert (len(cards), cards.evicted) == (2, 1)


_TOKENS = st.sampled_from([f"tok_{c}" for c in "abcdefgh"])


@hsettings(max_examples=300, deadline=None)
@given(
    st.integers(1, 5),
    st.lists(st.tuples(_TOKENS, st.one_of(st.none(), st.binary(min_size=1, max_size=3))), max_size=60),
)
def test_the_fold_holds_the_latest_records_of_the_most_recent_cards(
    max_cards: int, log: list[tuple[str, bytes | None]]
) -> None:
    """Against a model (a list in write order): every record held is its token's latest,
    never more than `max_cards`, the latest write is always held, and what is pushed out
    is the card written longest ago."""
    cards = SealedCards(max_cards)
    latest: dict[str, bytes] = {}
    held: list[str] = []  # oldest write first
    for token, blob in log:
        cards.fold(token, blob)
        if token in held:
            held.remove(token)
        if blob is None:
            latest.pop(token, None)
        else:
            latest[token] = blob
            held = (held + [token])[-max_cards:]
            assert cards.get(token) == blob
        assert len(cards) == len(held) <= max_cards
    assert {t for t in latest if t in cards} == set(held)
    assert all(cards.get(t) == latest[t] for t in held)
