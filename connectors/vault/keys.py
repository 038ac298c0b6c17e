"""Key management: every secret paystream holds, behind one interface.

Kinds (each key id is `<kind>-v<N>`; the highest N of a kind is its active key,
older ones stay for decrypt/verify only):

- `vault-master`: AES-256-GCM key that wraps the vault's per-record data keys;
- `token-hmac`:   HMAC-SHA256 key of card tokens (`connectors/vault/tokenizer.py`);
- `signing`:      Ed25519 private key of event signatures (public keys exportable);
- `webhook`:      HMAC-SHA256 root of the per-merchant webhook secrets;
- `card-intake`:  X25519 private key that opens the cards producers seal to its
                  public key (`connectors/vault/intake.py`; public keys exportable);
- `acs-signing`:  Ed25519 private key of the simulated issuer's access control server:
                  it signs 3-D Secure authentication values (`streams/domain/authentication.py`);
                  the pipeline verifies with the public keys only;
- `wallet-signing`: Ed25519 private key of the simulated wallet provider: it signs
                  wallet payment cryptograms; ingest verifies with the public keys only.

The last two belong to outside parties (an issuer, a wallet provider) that we simulate;
with real ones only their public keys would be here (docs/security.md).

`KeyStore` is written as operations (wrap, unwrap, mac, sign), not as "give me the
key", so a KMS or HSM can implement it without ever exporting material; the file
backend (`FileKeyStore`) is the one we ship. Material never appears in a repr, a
log line or an error message.

Files: `<keys_dir>/<key_id>.json` (format, kind, created, base64 material), 0600,
in a 0700 directory, created atomically (temp file + link, so a concurrent writer
can never leave a torn or overwritten key). A raw `<key_id>.key` file (the format
before key management, e.g. `token-hmac-v1.key`) is read as it is, so existing
tokens stay stable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VAULT_MASTER = "vault-master"
TOKEN_HMAC = "token-hmac"
SIGNING = "signing"
WEBHOOK = "webhook"
CARD_INTAKE = "card-intake"
ACS_SIGNING = "acs-signing"
WALLET_SIGNING = "wallet-signing"
KINDS = (VAULT_MASTER, TOKEN_HMAC, SIGNING, WEBHOOK, CARD_INTAKE, ACS_SIGNING, WALLET_SIGNING)
_MAC_KINDS = (TOKEN_HMAC, WEBHOOK)
SIGNING_KINDS = (SIGNING, ACS_SIGNING, WALLET_SIGNING)  # Ed25519
_EXACT_KINDS = (VAULT_MASTER, CARD_INTAKE, *SIGNING_KINDS)  # raw keys of exactly KEY_BYTES

KEY_BYTES = 32  # AES-256, HMAC-SHA256, Ed25519 seeds and X25519 private keys alike
NONCE_BYTES = 12
DATA_KEY_BYTES = 32
FILE_FORMAT = 1
MAX_VERSION = 999_999
MAX_KEY_FILES = 10_000  # bound on a directory scan
MAX_KEY_FILE_BYTES = 4096
_CREATE_ATTEMPTS = 3  # concurrent rotations: each attempt takes the next free version

_KEY_ID = re.compile(rf"^({'|'.join(map(re.escape, KINDS))})-v([1-9][0-9]{{0,5}})$")
_WEBHOOK_INFO = b"paystream-webhook-secret\x1f"


class KeyStoreError(Exception):
    """A key that is missing, unreadable, badly protected or of the wrong kind.
    Messages name key ids and paths, never material."""


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never its material."""

    key_id: str
    kind: str
    version: int
    created: datetime
    active: bool


@dataclass(frozen=True)
class Wrapped:
    """A data key encrypted under a vault-master key."""

    key_id: str
    blob: bytes = field(repr=False)


@dataclass(frozen=True)
class Mac:
    key_id: str
    digest: bytes = field(repr=False)


@dataclass(frozen=True)
class Signature:
    key_id: str
    signature: bytes


def parse_key_id(key_id: str) -> tuple[str, int]:
    m = _KEY_ID.match(key_id)
    if m is None:
        raise KeyStoreError(f"{key_id!r} is not a key id (<kind>-v<N>, kind one of {', '.join(KINDS)})")
    return m.group(1), int(m.group(2))


def key_id_of(kind: str, version: int) -> str:
    _check_kind(kind)
    if not 1 <= version <= MAX_VERSION:
        raise KeyStoreError(f"key version must be 1..{MAX_VERSION}, got {version}")
    return f"{kind}-v{version}"


class KeyStore(Protocol):
    """What the vault, the tokenizer, event signing and webhooks need from a key holder."""

    def init(self) -> list[KeyInfo]:
        """Give every kind an active key if it has none; idempotent."""
        ...

    def rotate(self, kind: str) -> KeyInfo:
        """Add a new active key of `kind`; older ones stay for decrypt/verify."""
        ...

    def keys(self) -> list[KeyInfo]: ...

    def active(self, kind: str) -> KeyInfo: ...

    def wrap(self, data_key: bytes, aad: bytes) -> Wrapped:
        """Encrypt a data key under the active vault-master key, bound to `aad`."""
        ...

    def unwrap(self, wrapped: Wrapped, aad: bytes) -> bytes:
        """Decrypt a data key under the vault-master key it names (any version)."""
        ...

    def mac(self, kind: str, message: bytes, key_id: str | None = None) -> Mac:
        """HMAC-SHA256 under a token-hmac or webhook key (the active one by default)."""
        ...

    def sign(self, message: bytes, kind: str = SIGNING) -> Signature:
        """Ed25519 signature under the active key of `kind` (one of SIGNING_KINDS)."""
        ...

    def public_keys(self, kind: str = SIGNING) -> dict[str, bytes]:
        """Raw 32-byte Ed25519 public keys of every key of `kind` (SIGNING_KINDS), by key id."""
        ...

    def webhook_secret(self, merchant_id: str, key_id: str | None = None) -> Mac:
        """The merchant's webhook HMAC secret (to sign with, and to hand to the merchant)."""
        ...

    def intake_public_keys(self) -> dict[str, bytes]:
        """Raw 32-byte X25519 public keys of every card-intake key, by key id (oldest first)."""
        ...

    def intake_agree(self, key_id: str, peer_public: bytes) -> bytes:
        """X25519 shared secret of the named card-intake key (any version) and a
        sealer's ephemeral public key (KMS DeriveSharedSecret). Raises KeyStoreError
        for an unknown key or a public key that is not a usable X25519 point."""
        ...


@dataclass(frozen=True)
class ActiveSigner:
    """The key store's active signing key, as the event chain's signer: the key id
    goes into the sealed event before the signature is made. A key rotated while a
    worker runs is refused rather than mislabelled; the worker picks it up on restart."""

    store: KeyStore
    key_id: str
    kind: str = SIGNING  # or another of SIGNING_KINDS: the simulated issuer's, the wallet provider's

    @classmethod
    def of(cls, store: KeyStore, kind: str = SIGNING) -> ActiveSigner:
        return cls(store, store.active(kind).key_id, kind)

    def sign(self, digest: bytes) -> bytes:
        signature = self.store.sign(digest, self.kind)
        if signature.key_id != self.key_id:
            raise KeyStoreError(f"signing key changed from {self.key_id} to {signature.key_id} under a running signer")
        return signature.signature


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature with an exported raw public key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class _Key:
    key_id: str
    kind: str
    version: int
    created: datetime
    material: bytes = field(repr=False)


class FileKeyStore:
    """Keys in files under one directory; reads them all at construction.

    A running process keeps the keys it loaded: a rotation by another process
    (`paystream keys rotate`) takes effect in it at its next start (or `reload()`).
    """

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = Path(keys_dir)
        self._keys: dict[str, _Key] = {}
        # Parsed private keys by id (an id's material never changes): one parse per key,
        # not per signed event or opened card (a parse costs as much as the use, ~50 µs).
        self._signing: dict[str, Ed25519PrivateKey] = {}
        self._intake: dict[str, X25519PrivateKey] = {}
        # Keyed once per key id too: an HMAC keyed per token and an AES key schedule per
        # wrapped card were most of those calls.
        self._macs: dict[str, hmac.HMAC] = {}
        self._aead: dict[str, AESGCM] = {}
        self._active_keys: dict[str, _Key] = {}  # kind -> its active key, while `_keys` is unchanged
        self.reload()

    def __repr__(self) -> str:
        return f"FileKeyStore({str(self.keys_dir)!r}, keys={sorted(self._keys)})"

    def reload(self) -> None:
        keys: dict[str, _Key] = {}
        if self.keys_dir.exists():
            entries = sorted(self.keys_dir.iterdir())
            if len(entries) > MAX_KEY_FILES:
                raise KeyStoreError(f"{self.keys_dir} holds more than {MAX_KEY_FILES} files")
            for path in entries:
                if path.name.startswith(".") or path.suffix not in (".json", ".key"):
                    continue
                key = _read_key_file(path)
                if key.key_id in keys:
                    raise KeyStoreError(f"key {key.key_id} is in two files under {self.keys_dir}; keep one")
                keys[key.key_id] = key
        self._keys = keys
        self._active_keys = {}

    # --- administration ---

    def init(self) -> list[KeyInfo]:
        for kind in KINDS:
            if not self._versions(kind):
                self._create(kind, if_none=True)
        return self.keys()

    def rotate(self, kind: str) -> KeyInfo:
        _check_kind(kind)
        key = self._create(kind)
        return self._info(key)

    def keys(self) -> list[KeyInfo]:
        return sorted((self._info(k) for k in self._keys.values()), key=lambda i: (KINDS.index(i.kind), i.version))

    def active(self, kind: str) -> KeyInfo:
        return self._info(self._active(kind))

    # --- operations ---

    def wrap(self, data_key: bytes, aad: bytes) -> Wrapped:
        if len(data_key) != DATA_KEY_BYTES:
            raise KeyStoreError(f"a data key is {DATA_KEY_BYTES} bytes")
        master = self._active(VAULT_MASTER)
        # Random 96-bit nonces: at most 2**32 wraps per master key (NIST SP 800-38D);
        # only new cards are wrapped, and rotation starts a fresh key.
        nonce = os.urandom(NONCE_BYTES)
        return Wrapped(master.key_id, nonce + self._aead_of(master).encrypt(nonce, data_key, aad))

    def unwrap(self, wrapped: Wrapped, aad: bytes) -> bytes:
        master = self._get(wrapped.key_id, VAULT_MASTER)
        if len(wrapped.blob) != NONCE_BYTES + DATA_KEY_BYTES + 16:
            raise KeyStoreError(f"wrapped data key under {wrapped.key_id} has a bad length")
        nonce, body = wrapped.blob[:NONCE_BYTES], wrapped.blob[NONCE_BYTES:]
        try:
            return self._aead_of(master).decrypt(nonce, body, aad)
        except InvalidTag:
            raise KeyStoreError(f"wrapped data key failed authentication under {wrapped.key_id}") from None

    def mac(self, kind: str, message: bytes, key_id: str | None = None) -> Mac:
        if kind not in _MAC_KINDS:
            raise KeyStoreError(f"mac needs a {' or '.join(_MAC_KINDS)} key, not {kind}")
        key = self._get(key_id, kind) if key_id else self._active(kind)
        keyed = self._macs.get(key.key_id)
        if keyed is None:
            keyed = self._macs[key.key_id] = hmac.new(key.material, digestmod=hashlib.sha256)
        mac = keyed.copy()  # the keyed state copied: the same digest as hmac.new(key, message)
        mac.update(message)
        return Mac(key.key_id, mac.digest())

    def sign(self, message: bytes, kind: str = SIGNING) -> Signature:
        if kind not in SIGNING_KINDS:
            raise KeyStoreError(f"sign needs a {' or '.join(SIGNING_KINDS)} key, not {kind}")
        key = self._active(kind)
        private = self._signing.get(key.key_id)
        if private is None:
            private = self._signing[key.key_id] = Ed25519PrivateKey.from_private_bytes(key.material)
        return Signature(key.key_id, private.sign(message))

    def public_keys(self, kind: str = SIGNING) -> dict[str, bytes]:
        if kind not in SIGNING_KINDS:
            raise KeyStoreError(f"public_keys needs a {' or '.join(SIGNING_KINDS)} kind, not {kind}")
        return {
            k.key_id: Ed25519PrivateKey.from_private_bytes(k.material)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
            for k in self._versions(kind)
        }

    def webhook_secret(self, merchant_id: str, key_id: str | None = None) -> Mac:
        # Derived per merchant (HMAC of the merchant id): no per-merchant key files,
        # and a KMS can derive the same with its GenerateMac operation.
        if not merchant_id:
            raise KeyStoreError("webhook secrets are per merchant: merchant_id is empty")
        return self.mac(WEBHOOK, _WEBHOOK_INFO + merchant_id.encode(), key_id)

    def intake_public_keys(self) -> dict[str, bytes]:
        return {
            k.key_id: X25519PrivateKey.from_private_bytes(k.material)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
            for k in self._versions(CARD_INTAKE)
        }

    def intake_agree(self, key_id: str, peer_public: bytes) -> bytes:
        key = self._get(key_id, CARD_INTAKE)
        if len(peer_public) != KEY_BYTES:
            raise KeyStoreError(f"an X25519 public key is {KEY_BYTES} bytes, got {len(peer_public)}")
        private = self._intake.get(key.key_id)
        if private is None:
            private = self._intake[key.key_id] = X25519PrivateKey.from_private_bytes(key.material)
        try:
            return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:  # a low-order point: the shared secret would be all zeros
            raise KeyStoreError(f"the peer public key is not a usable X25519 point (with {key_id})") from None

    # --- internals ---

    def _versions(self, kind: str) -> list[_Key]:
        return sorted((k for k in self._keys.values() if k.kind == kind), key=lambda k: k.version)

    def _active(self, kind: str) -> _Key:
        key = self._active_keys.get(kind)  # a sort of every key per wrapped card, else
        if key is not None:
            return key
        _check_kind(kind)
        versions = self._versions(kind)
        if not versions:
            raise KeyStoreError(f"no {kind} key under {self.keys_dir}: run `paystream keys init`")
        key = self._active_keys[kind] = versions[-1]
        return key

    def _aead_of(self, master: _Key) -> AESGCM:
        aead = self._aead.get(master.key_id)
        if aead is None:
            aead = self._aead[master.key_id] = AESGCM(master.material)
        return aead

    def _get(self, key_id: str, kind: str) -> _Key:
        key = self._keys.get(key_id)
        if key is not None and key.kind == kind:  # a held key's id is its kind's: no parse per card
            return key
        found_kind, _ = parse_key_id(key_id)
        if found_kind != kind:
            raise KeyStoreError(f"{key_id} is a {found_kind} key, a {kind} key is needed")
        raise KeyStoreError(f"key {key_id} is not under {self.keys_dir}")

    def _info(self, key: _Key) -> KeyInfo:
        return KeyInfo(key.key_id, key.kind, key.version, key.created, key.version == self._active(key.kind).version)

    def _create(self, kind: str, if_none: bool = False) -> _Key:
        """A new key of `kind`; with `if_none`, the existing one if another process
        created one since we loaded (two processes starting at once both `init`)."""
        _ensure_private_dir(self.keys_dir)
        for _ in range(_CREATE_ATTEMPTS):
            self.reload()  # another process may have rotated since we loaded
            versions = self._versions(kind)
            if if_none and versions:
                return versions[-1]
            version = versions[-1].version + 1 if versions else 1
            key = _Key(key_id_of(kind, version), kind, version, datetime.now(UTC), os.urandom(KEY_BYTES))
            if _write_new(self.keys_dir / f"{key.key_id}.json", _encode(key)):
                self._keys[key.key_id] = key
                self._active_keys.pop(kind, None)
                return key
        raise KeyStoreError(f"could not create a {kind} key: {_CREATE_ATTEMPTS} concurrent rotations raced")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise KeyStoreError(f"unknown key kind {kind!r}; one of {', '.join(KINDS)}")


def _encode(key: _Key) -> bytes:
    return json.dumps(
        {
            "format": FILE_FORMAT,
            "key_id": key.key_id,
            "kind": key.kind,
            "created": key.created.isoformat(),
            "material": base64.b64encode(key.material).decode(),
        }
    ).encode()


def _read_key_file(path: Path) -> _Key:
    key_id = path.stem
    kind, version = parse_key_id(key_id)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise KeyStoreError(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyStoreError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): chmod 600 it")
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise KeyStoreError(f"{path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    data = path.read_bytes()
    if path.suffix == ".key":  # raw material, the format before key management
        created, material = datetime.fromtimestamp(st.st_mtime, tz=UTC), data
    else:
        try:
            doc = json.loads(data)
            if doc["format"] != FILE_FORMAT or doc["key_id"] != key_id or doc["kind"] != kind:
                raise ValueError("format, key_id or kind does not match the file name")
            created = datetime.fromisoformat(doc["created"])
            material = base64.b64decode(doc["material"], validate=True)
        except (ValueError, KeyError, TypeError) as e:
            # The error names the file and the problem, not the content.
            raise KeyStoreError(f"{path} is not a key file: {type(e).__name__}") from None
    if len(material) < KEY_BYTES or (kind in _EXACT_KINDS and len(material) != KEY_BYTES):
        raise KeyStoreError(f"{path}: a {kind} key is {KEY_BYTES} bytes, the file holds {len(material)}")
    return _Key(key_id, kind, version, created, material)


def _ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)


def _write_new(path: Path, data: bytes) -> bool:
    """Create `path` with `data`, 0600, atomically; False if it exists already."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if a concurrent writer got there first: never overwrite a key
        except FileExistsError:
            return False
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    finally:
        tmp.unlink(missing_ok=True)
