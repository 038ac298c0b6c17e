"""Tokens: stable per (merchant, PAN), unchanged by the move to the key store."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from connectors.vault.keys import TOKEN_HMAC, FileKeyStore
from connectors.vault.tokenizer import TOKEN_PATTERN, StoreTokenizer, Tokenizer, token_from_mac, tokenizer_from_dir

PAN = "4242424242424242"


def test_token_shape_and_stability() -> None:
    t = Tokenizer(b"k" * 32, "token-hmac-v1")
    token = t.token("m_acme", PAN)
    assert TOKEN_PATTERN.match(token)
    assert token == t.token("m_acme", PAN)
    assert token != t.token("m_other", PAN)
    assert token != Tokenizer(b"j" * 32, "token-hmac-v1").token("m_acme", PAN)
    assert "k" * 32 not in repr(t)


def test_the_legacy_key_file_yields_the_tokens_it_yielded_before(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    legacy = os.urandom(32)
    (keys_dir / "token-hmac-v1.key").write_bytes(legacy)
    (keys_dir / "token-hmac-v1.key").chmod(0o600)
    before = Tokenizer(legacy, "token-hmac-v1").token("m_acme", PAN)  # what the old code computed
    assert tokenizer_from_dir(keys_dir).token("m_acme", PAN) == before


def test_the_store_tokenizer_keeps_its_key_until_restart(tmp_path: Path) -> None:
    tokenizer = tokenizer_from_dir(tmp_path / "keys")  # creates the keys on first use
    before = tokenizer.token("m_acme", PAN)
    store = FileKeyStore(tmp_path / "keys")
    store.rotate(TOKEN_HMAC)
    assert tokenizer.token("m_acme", PAN) == before  # one process never mixes two token keys
    restarted = StoreTokenizer(store)
    assert restarted.key_id == "token-hmac-v2"
    assert restarted.token("m_acme", PAN) != before


@given(st.binary(min_size=20, max_size=64))
def test_a_token_is_the_lower_case_base32_of_the_macs_first_20_bytes(digest: bytes) -> None:
    token = token_from_mac(digest)
    assert token == "tok_" + base64.b32encode(digest[:20]).decode().lower()
    assert TOKEN_PATTERN.match(token)
