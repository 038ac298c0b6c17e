"""The vault: envelope encryption, stable tokens, tamper detection, rotation and rewrap."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from connectors.vault.keys import TOKEN_HMAC, VAULT_MASTER, FileKeyStore
from connectors.vault.tokenizer import TOKEN_PATTERN, StoreTokenizer
from connectors.vault.vault import CardError, Vault, VaultCard, VaultError, check_pan, open_vault

PANS = {"4242424242424242": "visa", "5555555555554444": "mastercard", "378282246310005": "amex"}
PAN = "4242424242424242"
M = "m_acme"


@pytest.fixture
def keys(tmp_path: Path) -> FileKeyStore:
    store = FileKeyStore(tmp_path / "keys")
    store.init()
    return store


@pytest.fixture
def vault(tmp_path: Path, keys: FileKeyStore) -> Iterator[Vault]:
    with open_vault(tmp_path / "data", keys) as v:
        yield v


def raw_records(vault: Vault) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in vault._db.items()}


def put_raw(vault: Vault, token: str, record: dict) -> None:
    vault._db.put(token.encode(), json.dumps(record).encode())


def flip(b64: str, at: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --- tokenize ---


@pytest.mark.parametrize(("pan", "brand"), PANS.items())
def test_tokenize_returns_what_may_travel_and_reveal_gives_the_pan_back(vault: Vault, pan: str, brand: str) -> None:
    card = vault.tokenize(M, pan)
    assert card == VaultCard(card.token, pan[:6], pan[-4:], brand)
    assert TOKEN_PATTERN.match(card.token)
    assert vault.reveal(card.token) == pan
    assert vault.card(card.token) == card


def test_same_card_same_merchant_same_token_and_one_record(vault: Vault, keys: FileKeyStore) -> None:
    first = vault.tokenize(M, PAN)
    stored = raw_records(vault)
    assert vault.tokenize(M, "4242 4242 4242 4242") == first
    assert vault.tokenize(M, "4242-4242-4242-4242") == first
    assert raw_records(vault) == stored  # nothing rewritten
    other = vault.tokenize("m_other", PAN)
    assert other.token != first.token
    assert first.token == StoreTokenizer(keys).token(M, PAN)  # the token ingest computed before the vault
    assert vault.token(M, PAN) == first.token


def test_nothing_stored_holds_the_pan(vault: Vault) -> None:
    for pan in PANS:
        vault.tokenize(M, pan)
    vault.close()
    db = Rdict(str(vault.path), Options(raw_mode=True))
    blob = b"".join(k + v for k, v in db.items())
    db.close()
    for pan in PANS:
        for form in (pan.encode(), pan.encode().hex().encode(), base64.b64encode(pan.encode())):
            assert form not in blob
    assert b"424242" in blob  # the BIN is stored in the clear (it may travel); the PAN is not


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
def test_bad_cards_are_refused_with_a_reason_and_no_pan(vault: Vault, pan: str, reason: str) -> None:
    with pytest.raises(CardError) as e:
        vault.tokenize(M, pan)
    assert e.value.reason == reason
    assert pan not in str(e.value)
    assert raw_records(vault) == {}


def test_check_pan_accepts_a_13_digit_visa() -> None:
    assert check_pan("4222222222222") == ("4222222222222", "visa")


@pytest.mark.parametrize("merchant", ["", "m\x1fx", "m" * 65])
def test_bad_merchant_ids_are_refused(vault: Vault, merchant: str) -> None:
    with pytest.raises(CardError, match="invalid_merchant_id"):
        vault.tokenize(merchant, PAN)


# --- tampering ---


def test_tampered_ciphertext_is_a_clear_error_naming_the_token(vault: Vault) -> None:
    token = vault.tokenize(M, PAN).token
    record = raw_records(vault)[token]
    put_raw(vault, token, record | {"ciphertext": flip(record["ciphertext"], 3)})
    with pytest.raises(VaultError) as e:
        vault.reveal(token)
    assert e.value.token == token
    assert "ciphertext failed authentication" in str(e.value) and token in str(e.value)
    assert PAN not in str(e.value)


def test_tampered_wrapped_key_or_nonce_fails(vault: Vault) -> None:
    token = vault.tokenize(M, PAN).token
    record = raw_records(vault)[token]
    put_raw(vault, token, record | {"wrapped_key": flip(record["wrapped_key"], 30)})
    with pytest.raises(VaultError, match="data key cannot be unwrapped"):
        vault.reveal(token)
    put_raw(vault, token, record | {"nonce": flip(record["nonce"], 0)})
    with pytest.raises(VaultError, match="ciphertext failed authentication"):
        vault.reveal(token)


def test_a_record_moved_to_another_token_or_merchant_fails(vault: Vault) -> None:
    a = vault.tokenize(M, PAN).token
    b = vault.tokenize(M, "5555555555554444").token
    records = raw_records(vault)
    put_raw(vault, b, records[a])  # a's ciphertext under b's token
    with pytest.raises(VaultError, match=f"vault record {b}: data key cannot be unwrapped"):
        vault.reveal(b)
    put_raw(vault, a, records[a] | {"merchant_id": "m_evil"})
    with pytest.raises(VaultError, match="data key cannot be unwrapped"):
        vault.reveal(a)


def test_malformed_records_and_unknown_tokens(vault: Vault) -> None:
    token = vault.tokenize(M, PAN).token
    vault._db.put(token.encode(), b"{not json")
    with pytest.raises(VaultError, match="record is malformed"):
        vault.reveal(token)
    put_raw(vault, token, {"format": 1})
    with pytest.raises(VaultError, match="record is malformed"):
        vault.card(token)
    with pytest.raises(VaultError, match="no such token"):
        vault.reveal("tok_" + "a" * 32)
    with pytest.raises(VaultError, match="not a token"):
        vault.reveal(PAN)


# --- rotation ---


def test_rotation_keeps_old_records_readable_and_rewrap_moves_them(tmp_path: Path, keys: FileKeyStore) -> None:
    with open_vault(tmp_path / "data", keys) as vault:
        old = vault.tokenize(M, PAN).token
    keys.rotate(VAULT_MASTER)
    restarted = FileKeyStore(keys.keys_dir)
    with open_vault(tmp_path / "data", restarted) as vault:
        new = vault.tokenize(M, "5555555555554444").token
        assert vault.key_ids_in_use() == {"vault-master-v1": 1, "vault-master-v2": 1}
        assert vault.reveal(old) == PAN  # written under v1, read after rotation
        ciphertext_before = raw_records(vault)[old]["ciphertext"]

        report = vault.rewrap()
        assert (report.rewrapped, report.current, report.active_key_id) == (1, 1, "vault-master-v2")
        assert vault.key_ids_in_use() == {"vault-master-v2": 2}
        assert raw_records(vault)[old]["ciphertext"] == ciphertext_before  # only the data key was re-wrapped
        assert (vault.reveal(old), vault.reveal(new)) == (PAN, "5555555555554444")
        assert vault.rewrap().rewrapped == 0  # idempotent

    # After the rewrap the old master key is no longer needed: prove it by removing it.
    (keys.keys_dir / "vault-master-v1.json").unlink()
    with open_vault(tmp_path / "data", FileKeyStore(keys.keys_dir)) as vault:
        assert vault.reveal(old) == PAN


def test_a_missing_master_key_is_a_clear_error(tmp_path: Path, keys: FileKeyStore) -> None:
    with open_vault(tmp_path / "data", keys) as vault:
        token = vault.tokenize(M, PAN).token
    keys.rotate(VAULT_MASTER)
    (keys.keys_dir / "vault-master-v1.json").unlink()
    with open_vault(tmp_path / "data", FileKeyStore(keys.keys_dir)) as vault:
        with pytest.raises(VaultError, match="vault-master-v1 is not under"):
            vault.reveal(token)


def test_token_key_rotation_issues_new_tokens_and_old_ones_stay_revealable(tmp_path: Path, keys: FileKeyStore) -> None:
    with open_vault(tmp_path / "data", keys) as vault:
        old = vault.tokenize(M, PAN).token
    keys.rotate(TOKEN_HMAC)
    with open_vault(tmp_path / "data", FileKeyStore(keys.keys_dir)) as vault:
        new = vault.tokenize(M, PAN).token
        assert new != old
        assert vault.reveal(old) == vault.reveal(new) == PAN


def test_one_process_owns_a_vault(vault: Vault, keys: FileKeyStore) -> None:
    with pytest.raises(VaultError, match="cannot open .*one process at a time owns a vault"):
        Vault(vault.path, keys)


def test_repr_shows_no_secret(vault: Vault) -> None:
    assert repr(vault) == f"Vault({str(vault.path)!r}, token_key='token-hmac-v1')"


# --- group commit (ingest's batches) ---


class _SyncSpy:
    """The real RocksDB handle, counting WAL syncs."""

    def __init__(self, db: Rdict) -> None:
        self.db, self.syncs = db, 0

    def flush_wal(self, sync: bool) -> None:
        self.syncs += int(sync)
        self.db.flush_wal(sync)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.db, name)


def test_group_commit_syncs_once_at_the_outer_end_and_the_cards_survive_a_reopen(tmp_path: Path, keys: FileKeyStore) -> None:
    v = open_vault(tmp_path / "data", keys)
    spy = _SyncSpy(v._db)
    v._db = spy  # type: ignore[assignment]
    with v.group_commit():
        with v.group_commit():
            a = v.tokenize(M, "4242424242424242")
        assert spy.syncs == 0  # the inner block is part of the outer group
        b = v.tokenize(M, "5555555555554444")
        assert spy.syncs == 0
    assert spy.syncs == 1
    v.tokenize(M, "378282246310005")  # outside a group: synced by its own write
    assert spy.syncs == 1
    v._db = spy.db  # type: ignore[assignment]
    v.close()
    with open_vault(tmp_path / "data", keys) as again:
        assert again.reveal(a.token) == "4242424242424242"
        assert again.reveal(b.token) == "5555555555554444"


def test_group_commit_syncs_even_when_the_block_fails(tmp_path: Path, keys: FileKeyStore) -> None:
    v = open_vault(tmp_path / "data", keys)
    spy = _SyncSpy(v._db)
    v._db = spy  # type: ignore[assignment]
    with pytest.raises(RuntimeError), v.group_commit():
        v.tokenize(M, PAN)
        raise RuntimeError("a bug after the write")
    assert spy.syncs == 1
    v._db = spy.db  # type: ignore[assignment]
    v.close()
