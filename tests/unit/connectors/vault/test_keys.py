"""Key management: ids, rotation, old keys kept for decrypt/verify, file hygiene, no material shown."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from connectors.vault import keys
from connectors.vault.keys import (
    CARD_INTAKE,
    KINDS,
    SIGNING,
    TOKEN_HMAC,
    VAULT_MASTER,
    WEBHOOK,
    FileKeyStore,
    KeyStoreError,
    Wrapped,
    parse_key_id,
    verify_signature,
)

AAD = b"tok_x\x1fm_acme"


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    s = FileKeyStore(tmp_path / "keys")
    s.init()
    return s


def material_of(store: FileKeyStore, key_id: str) -> bytes:
    return store._keys[key_id].material


def test_init_creates_one_active_v1_key_per_kind(store: FileKeyStore) -> None:
    infos = store.keys()
    assert [(i.key_id, i.kind, i.version, i.active) for i in infos] == [(f"{k}-v1", k, 1, True) for k in KINDS]
    assert len({material_of(store, i.key_id) for i in infos}) == len(KINDS)  # independent random keys


def test_init_is_idempotent_and_a_new_store_reads_the_same_keys(store: FileKeyStore) -> None:
    before = {i.key_id: material_of(store, i.key_id) for i in store.keys()}
    store.init()
    again = FileKeyStore(store.keys_dir)
    assert again.init() == store.keys()
    assert {i.key_id: material_of(again, i.key_id) for i in again.keys()} == before


def test_files_are_0600_in_a_0700_directory(store: FileKeyStore) -> None:
    assert stat.S_IMODE(store.keys_dir.stat().st_mode) == 0o700
    files = sorted(p.name for p in store.keys_dir.iterdir())
    assert files == sorted(f"{k}-v1.json" for k in KINDS)  # no temp files left behind
    for p in store.keys_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_a_group_readable_key_file_is_refused(store: FileKeyStore) -> None:
    path = store.keys_dir / "signing-v1.json"
    path.chmod(0o640)
    with pytest.raises(KeyStoreError, match=r"signing-v1.json is readable by others \(mode 640\): chmod 600"):
        FileKeyStore(store.keys_dir)


def test_rotation_adds_an_active_key_and_keeps_the_old_one(store: FileKeyStore) -> None:
    info = store.rotate(VAULT_MASTER)
    assert (info.key_id, info.version, info.active) == ("vault-master-v2", 2, True)
    by_id = {i.key_id: i.active for i in store.keys() if i.kind == VAULT_MASTER}
    assert by_id == {"vault-master-v1": False, "vault-master-v2": True}
    assert store.active(TOKEN_HMAC).key_id == "token-hmac-v1"  # other kinds untouched
    assert FileKeyStore(store.keys_dir).active(VAULT_MASTER).key_id == "vault-master-v2"


def test_data_wrapped_before_rotation_unwraps_after(store: FileKeyStore) -> None:
    data_key = os.urandom(32)
    old = store.wrap(data_key, AAD)
    store.rotate(VAULT_MASTER)
    new = store.wrap(data_key, AAD)
    assert (old.key_id, new.key_id) == ("vault-master-v1", "vault-master-v2")
    assert store.unwrap(old, AAD) == data_key
    assert FileKeyStore(store.keys_dir).unwrap(new, AAD) == data_key


def test_unwrap_fails_on_other_aad_or_tampering(store: FileKeyStore) -> None:
    wrapped = store.wrap(os.urandom(32), AAD)
    with pytest.raises(KeyStoreError, match="failed authentication under vault-master-v1"):
        store.unwrap(wrapped, b"tok_y\x1fm_acme")
    flipped = bytes([wrapped.blob[20] ^ 1])
    with pytest.raises(KeyStoreError, match="failed authentication"):
        store.unwrap(Wrapped(wrapped.key_id, wrapped.blob[:20] + flipped + wrapped.blob[21:]), AAD)
    with pytest.raises(KeyStoreError, match="vault-master-v7 is not under"):
        store.unwrap(Wrapped("vault-master-v7", wrapped.blob), AAD)
    with pytest.raises(KeyStoreError, match="token-hmac-v1 is a token-hmac key, a vault-master key is needed"):
        store.unwrap(Wrapped("token-hmac-v1", wrapped.blob), AAD)


def test_mac_uses_the_active_key_and_old_keys_still_verify(store: FileKeyStore) -> None:
    old = store.mac(WEBHOOK, b"payload")
    store.rotate(WEBHOOK)
    new = store.mac(WEBHOOK, b"payload")
    assert (old.key_id, new.key_id) == ("webhook-v1", "webhook-v2")
    assert old.digest != new.digest
    assert store.mac(WEBHOOK, b"payload", "webhook-v1") == old
    with pytest.raises(KeyStoreError, match="mac needs a token-hmac or webhook key, not signing"):
        store.mac(SIGNING, b"payload")


@given(messages=st.lists(st.binary(max_size=300), min_size=1, max_size=5), aad=st.binary(max_size=80))
def test_keyed_once_macs_and_wraps_are_the_plain_ones(
    tmp_path_factory: pytest.TempPathFactory, messages: list[bytes], aad: bytes
) -> None:
    # The store keeps an HMAC and an AES-GCM keyed per key id: each use must equal one keyed afresh.
    store = FileKeyStore(tmp_path_factory.mktemp("keys"))
    store.init()
    for message in messages:
        for kind in (TOKEN_HMAC, WEBHOOK):
            mac = store.mac(kind, message)
            assert mac.digest == hmac.new(material_of(store, mac.key_id), message, hashlib.sha256).digest()
        data_key = os.urandom(32)
        wrapped = store.wrap(data_key, aad)
        master = AESGCM(material_of(store, wrapped.key_id))
        assert master.decrypt(wrapped.blob[:12], wrapped.blob[12:], aad) == data_key
        assert store.unwrap(wrapped, aad) == data_key


def test_a_rotation_by_another_process_is_active_after_reload(store: FileKeyStore) -> None:
    assert store.wrap(os.urandom(32), AAD).key_id == "vault-master-v1"  # the active key now cached
    FileKeyStore(store.keys_dir).rotate(VAULT_MASTER)
    assert store.wrap(os.urandom(32), AAD).key_id == "vault-master-v1"  # loaded keys stay until reload
    store.reload()
    assert store.active(VAULT_MASTER).key_id == "vault-master-v2"
    assert store.wrap(os.urandom(32), AAD).key_id == "vault-master-v2"
    assert store.mac(TOKEN_HMAC, b"m").key_id == "token-hmac-v1"


def test_webhook_secrets_differ_per_merchant_and_rotate(store: FileKeyStore) -> None:
    a, b = store.webhook_secret("m_a"), store.webhook_secret("m_b")
    assert a.key_id == b.key_id == "webhook-v1"
    assert a.digest != b.digest and len(a.digest) == 32
    store.rotate(WEBHOOK)
    assert store.webhook_secret("m_a").digest != a.digest
    assert store.webhook_secret("m_a", "webhook-v1") == a  # still there to verify in-flight deliveries
    with pytest.raises(KeyStoreError, match="merchant_id is empty"):
        store.webhook_secret("")


def test_signatures_verify_with_exported_public_keys_across_rotation(store: FileKeyStore) -> None:
    old = store.sign(b"event-1")
    store.rotate(SIGNING)
    new = store.sign(b"event-2")
    public = store.public_keys()
    assert list(public) == ["signing-v1", "signing-v2"] and all(len(k) == 32 for k in public.values())
    assert verify_signature(public[old.key_id], b"event-1", old.signature)
    assert verify_signature(public[new.key_id], b"event-2", new.signature)
    assert not verify_signature(public[new.key_id], b"event-1", old.signature)
    assert not verify_signature(public[old.key_id], b"event-2", new.signature)
    assert not verify_signature(b"short", b"event-1", old.signature)


def test_two_processes_initialising_at_once_create_one_key_per_kind(tmp_path: Path) -> None:
    producer = FileKeyStore(tmp_path / "keys")  # loaded before the worker created anything
    FileKeyStore(tmp_path / "keys").init()  # the worker
    producer.init()
    assert [i.key_id for i in producer.keys()] == [f"{k}-v1" for k in KINDS]


def test_intake_keys_agree_with_a_sealer_across_rotation(store: FileKeyStore) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    store.rotate(CARD_INTAKE)
    public = store.intake_public_keys()
    assert list(public) == ["card-intake-v1", "card-intake-v2"] and len(set(public.values())) == 2
    ephemeral = X25519PrivateKey.generate()
    raw = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    for key_id, key in public.items():  # the old key still opens what was sealed to it
        assert store.intake_agree(key_id, raw) == ephemeral.exchange(X25519PublicKey.from_public_bytes(key))
    with pytest.raises(KeyStoreError, match="an X25519 public key is 32 bytes, got 5"):
        store.intake_agree("card-intake-v1", b"short")
    with pytest.raises(KeyStoreError, match="not a usable X25519 point"):
        store.intake_agree("card-intake-v1", bytes(32))  # the zero point: an all-zero secret
    with pytest.raises(KeyStoreError, match="key card-intake-v9 is not under"):
        store.intake_agree("card-intake-v9", raw)
    with pytest.raises(KeyStoreError, match="signing-v1 is a signing key, a card-intake key is needed"):
        store.intake_agree("signing-v1", raw)


def test_repr_and_errors_never_show_material(store: FileKeyStore, tmp_path: Path) -> None:
    shown = repr(store) + repr(store._keys) + repr(store.keys()) + repr(store.webhook_secret("m_a"))
    shown += repr(store.mac(TOKEN_HMAC, b"x")) + repr(store.wrap(os.urandom(32), AAD))
    for info in store.keys():
        material = material_of(store, info.key_id)
        for form in (
            material.hex(),
            repr(material)[2:-1],
            json.loads((store.keys_dir / f"{info.key_id}.json").read_text())["material"],
        ):
            assert form not in shown
    assert store.webhook_secret("m_a").digest.hex() not in shown

    bad = tmp_path / "bad"
    bad.mkdir(mode=0o700)
    secret = "c2VjcmV0LW1hdGVyaWFs"
    (bad / "signing-v1.json").write_text(f'{{"format": 1, "material": "{secret}"')
    (bad / "signing-v1.json").chmod(0o600)
    with pytest.raises(KeyStoreError) as e:
        FileKeyStore(bad)
    assert "is not a key file" in str(e.value) and secret not in str(e.value)


def test_the_legacy_token_key_file_keeps_existing_tokens(tmp_path: Path) -> None:
    legacy = os.urandom(32)
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    path = keys_dir / "token-hmac-v1.key"
    path.write_bytes(legacy)
    path.chmod(0o600)
    store = FileKeyStore(keys_dir)
    store.init()
    assert store.active(TOKEN_HMAC).key_id == "token-hmac-v1"
    assert not (keys_dir / "token-hmac-v1.json").exists()
    assert material_of(store, "token-hmac-v1") == legacy
    assert store.rotate(TOKEN_HMAC).key_id == "token-hmac-v2"  # rotation continues the numbering


def test_a_key_in_two_files_is_refused(store: FileKeyStore) -> None:
    dup = store.keys_dir / "webhook-v1.key"
    dup.write_bytes(os.urandom(32))
    dup.chmod(0o600)
    with pytest.raises(KeyStoreError, match="key webhook-v1 is in two files"):
        FileKeyStore(store.keys_dir)


def test_short_or_misnamed_key_files_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "k"
    d.mkdir(mode=0o700)
    (d / "vault-master-v1.key").write_bytes(b"x" * 16)
    (d / "vault-master-v1.key").chmod(0o600)
    with pytest.raises(KeyStoreError, match="a vault-master key is 32 bytes, the file holds 16"):
        FileKeyStore(d)
    (d / "vault-master-v1.key").unlink()
    (d / "master.key").write_bytes(b"x" * 32)
    with pytest.raises(KeyStoreError, match="'master' is not a key id"):
        FileKeyStore(d)


def test_missing_keys_and_unknown_kinds_are_clear_errors(tmp_path: Path) -> None:
    empty = FileKeyStore(tmp_path / "none")
    assert empty.keys() == []
    with pytest.raises(KeyStoreError, match="no vault-master key under .*run `paystream keys init`"):
        empty.wrap(os.urandom(32), AAD)
    with pytest.raises(KeyStoreError, match="unknown key kind 'pgp'"):
        empty.rotate("pgp")


def test_concurrent_creators_never_overwrite_a_key(store: FileKeyStore) -> None:
    # Another process rotated after we loaded: our rotation takes the next version.
    other = FileKeyStore(store.keys_dir)
    assert other.rotate(SIGNING).key_id == "signing-v2"
    assert store.rotate(SIGNING).key_id == "signing-v3"
    assert keys._write_new(store.keys_dir / "signing-v3.json", b"{}") is False
    assert FileKeyStore(store.keys_dir).public_keys().keys() == {"signing-v1", "signing-v2", "signing-v3"}


@pytest.mark.parametrize(
    ("key_id", "parsed"), [("vault-master-v1", ("vault-master", 1)), ("webhook-v12", ("webhook", 12))]
)
def test_parse_key_id(key_id: str, parsed: tuple[str, int]) -> None:
    assert parse_key_id(key_id) == parsed


@pytest.mark.parametrize("key_id", ["vault-master-v0", "signing-1", "signing-v01", "x-v1", "signing-v1.json"])
def test_parse_key_id_rejects(key_id: str) -> None:
    with pytest.raises(KeyStoreError):
        parse_key_id(key_id)
