"""Card intake: sealed cards open only in the PCI zone, only for their command, never carry the CVC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from connectors.vault.intake import (
    SEALED_CIPHERTEXT_BYTES,
    CardOpener,
    OpenedCard,
    Sealer,
    SealError,
    active_sealer,
    load_sealer,
    public_key_doc,
)
from connectors.vault.keys import CARD_INTAKE, FileKeyStore, KeyStoreError
from connectors.vault.scan import PUBLIC_TEST_PANS, PanScanner
from schemas.cards import CardError

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FileKeyStore:
    s = FileKeyStore(tmp_path_factory.mktemp("intake") / "keys")
    s.init()
    return s


def foreign_sealer(key_id: str = "card-intake-v1") -> Sealer:
    """A sealer for a key pair this deployment does not hold."""
    return Sealer(key_id, X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def test_a_sealed_card_opens_to_number_and_expiry_and_never_holds_the_cvc(store: FileKeyStore) -> None:
    sealed = active_sealer(store).seal(CARD, "m_acme", "cmd_1")
    assert sealed["key_id"] == "card-intake-v1" and len(sealed["ciphertext"]) == SEALED_CIPHERTEXT_BYTES
    opened = CardOpener(store).open(sealed, "m_acme", "cmd_1")
    assert opened == OpenedCard("4242424242424242", 12, 2030, cvc_presented=True)
    assert "4242" not in repr(opened) and "4242" not in repr(CardOpener(store))
    without = active_sealer(store).seal(CARD | {"cvc": None}, "m_acme", "cmd_1")
    assert CardOpener(store).open(without, "m_acme", "cmd_1").cvc_presented is False


def test_sealing_is_randomized_and_hides_the_card_length(store: FileKeyStore) -> None:
    sealer = active_sealer(store)
    a, b = sealer.seal(CARD, "m", "c"), sealer.seal(CARD, "m", "c")
    assert a["ephemeral_public"] != b["ephemeral_public"] and a["ciphertext"] != b["ciphertext"]
    amex = sealer.seal(CARD | {"number": "378282246310005", "cvc": "1234"}, "m", "c")
    assert len(amex["ciphertext"]) == len(a["ciphertext"])


@pytest.mark.parametrize("where", ["merchant", "command"])
def test_a_sealed_card_replayed_into_another_command_does_not_open(store: FileKeyStore, where: str) -> None:
    sealed = active_sealer(store).seal(CARD, "m_acme", "cmd_1")
    merchant, command = ("m_evil", "cmd_1") if where == "merchant" else ("m_acme", "cmd_2")
    with pytest.raises(SealError) as e:
        CardOpener(store).open(sealed, merchant, command)
    assert e.value.reason == "sealed_card_tampered" and "another merchant or command" in e.value.detail


@pytest.mark.parametrize("field", ["ciphertext", "ephemeral_public"])
def test_a_flipped_bit_is_tampering(store: FileKeyStore, field: str) -> None:
    sealed = active_sealer(store).seal(CARD, "m", "c")
    flipped = bytearray(sealed[field])
    flipped[7] ^= 1
    with pytest.raises(SealError) as e:
        CardOpener(store).open(sealed | {field: bytes(flipped)}, "m", "c")
    assert e.value.reason in ("sealed_card_tampered", "sealed_card_malformed")


def test_foreign_and_unknown_keys_are_clear_errors(store: FileKeyStore) -> None:
    opener = CardOpener(store)
    with pytest.raises(SealError) as e:
        opener.open(foreign_sealer().seal(CARD, "m", "c"), "m", "c")
    assert e.value.reason == "sealed_card_tampered"
    with pytest.raises(SealError) as e:
        opener.open(foreign_sealer("card-intake-v77").seal(CARD, "m", "c"), "m", "c")
    assert (e.value.reason, e.value.detail) == (
        "unknown_intake_key",
        "'card-intake-v77' is not a card-intake key of this deployment",
    )
    relabelled = active_sealer(store).seal(CARD, "m", "c") | {"key_id": "signing-v1"}
    with pytest.raises(SealError) as e:
        opener.open(relabelled, "m", "c")
    assert e.value.reason == "unknown_intake_key"


@pytest.mark.parametrize(
    "change",
    [
        {"ephemeral_public": b"x" * 31},
        {"ciphertext": b"x" * 10},
        {"ciphertext": b"x" * 100_000},
        {"key_id": "k" * 1000},
        {"ephemeral_public": bytes(32)},  # the zero point
    ],
)
def test_malformed_sealed_cards_are_refused_before_any_decryption(store: FileKeyStore, change: dict) -> None:
    sealed = active_sealer(store).seal(CARD, "m", "c") | change
    with pytest.raises(SealError) as e:
        CardOpener(store).open(sealed, "m", "c")
    assert e.value.reason == "sealed_card_malformed"


def test_a_card_sealed_before_a_rotation_still_opens(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys")
    store.init()
    old = active_sealer(store).seal(CARD, "m", "c")
    store.rotate(CARD_INTAKE)
    new = active_sealer(store).seal(CARD, "m", "c")
    assert (old["key_id"], new["key_id"]) == ("card-intake-v1", "card-intake-v2")
    opener = CardOpener(FileKeyStore(store.keys_dir))  # the worker, restarted after the rotation
    assert opener.open(old, "m", "c") == opener.open(new, "m", "c")


@pytest.mark.parametrize(
    "card, reason",
    [
        (CARD | {"cvc": "12"}, "invalid_cvc"),
        (CARD | {"cvc": "12a4"}, "invalid_cvc"),
        (CARD | {"number": "4242" * 6}, "invalid_card_number"),
        (CARD | {"number": "4242\u00a04242"}, "invalid_card_number"),
        (CARD | {"exp_month": 10**12}, "invalid_expiry"),
    ],
)
def test_the_sealer_refuses_what_cannot_be_a_card(store: FileKeyStore, card: dict, reason: str) -> None:
    with pytest.raises(CardError) as e:
        active_sealer(store).seal(card, "m", "c")
    assert e.value.reason == reason and "4242" not in str(e.value)


def test_seal_command_moves_the_card_and_leaves_others_alone(store: FileKeyStore) -> None:
    sealer = active_sealer(store)
    cmd = {"command_id": "cmd_1", "merchant_id": "m_acme", "kind": "create", "card": CARD, "card_token": None}
    sealed = sealer.seal_command(cmd)
    assert sealed["card"] is None and sealed["sealed_card"]["key_id"] == sealer.key_id
    assert CardOpener(store).open(sealed["sealed_card"], "m_acme", "cmd_1").number == CARD["number"]
    follow_up = cmd | {"card": None}
    assert sealer.seal_command(follow_up) is follow_up


def test_a_public_key_file_round_trips_and_bad_files_are_clear_errors(store: FileKeyStore, tmp_path: Path) -> None:
    path = tmp_path / "intake.json"
    path.write_text(json.dumps(public_key_doc(active_sealer(store))))
    assert load_sealer(path) == active_sealer(store)
    path.write_text(
        json.dumps({"key_id": "signing-v1", "public_key": public_key_doc(active_sealer(store))["public_key"]})
    )
    with pytest.raises(KeyStoreError, match="is not a card-intake public key file"):
        load_sealer(path)
    with pytest.raises(KeyStoreError, match="is not a card-intake public key file"):
        load_sealer(tmp_path / "missing.json")


@given(
    pan=st.sampled_from(PUBLIC_TEST_PANS),
    merchant=st.text(min_size=1, max_size=20),
    cvc=st.sampled_from([None, "123", "9876"]),
)
def test_no_sealed_card_leaks_its_pan_in_any_encoding(
    store: FileKeyStore, pan: str, merchant: str, cvc: str | None
) -> None:
    sealed = active_sealer(store).seal(CARD | {"number": pan, "cvc": cvc}, merchant, "cmd_1")
    blob = sealed["key_id"].encode() + sealed["ephemeral_public"] + sealed["ciphertext"]
    assert PanScanner([pan]).scan(blob) == []
    assert CardOpener(store).open(sealed, merchant, "cmd_1").number == pan


def test_the_associated_data_cannot_be_shifted_between_ids() -> None:
    from connectors.vault.intake import seal_aad

    assert seal_aad("card-intake-v1", "m\x1fa", "c") != seal_aad("card-intake-v1", "m", "a\x1fc")
    assert seal_aad("card-intake-v1", "ma", "c") != seal_aad("card-intake-v1", "m", "ac")


@given(st.text(max_size=40), st.text(), st.text())
def test_the_associated_data_is_the_prefix_then_each_id_after_its_4_byte_length(
    key_id: str, merchant_id: str, command_id: str
) -> None:
    from connectors.vault.intake import seal_aad

    parts = [x.encode("utf-8", "surrogatepass") for x in (key_id, merchant_id, command_id)]
    # The format cards in flight were sealed under: a change would fail them all as tampered.
    expected = b"paystream-card-intake-v1\x1f" + b"".join(len(x).to_bytes(4, "big") + x for x in parts)
    assert seal_aad(key_id, merchant_id, command_id) == expected
