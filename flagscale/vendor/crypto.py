"""Encrypting vendor patch files: AES-256-GCM per file, a versioned header, deterministic bytes.

A file is encrypted under a 32-byte key kept in a key file (``load_or_create_key``). The header
names the key by its id (``key_id``), so a wrong key is told apart from a damaged file. The
header and the file's logical name are authenticated along with the contents: a file that was
changed, truncated, or moved to another name fails to decrypt.

The nonce is derived from the key, the name and the plaintext, so the same inputs always give the
same bytes (patch sets stay reproducible). The price: two equal files under the same name and key
are recognisable as equal; nothing else about the contents leaks. docs/encryption.md has the
byte layout.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flagscale.core.errors import FlagScaleError
from flagscale.core.keyfiles import KeyFileError, read_key_file, write_secret_file

__all__ = [
    "ALGORITHM",
    "ENCRYPTED_SUFFIX",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "AuthenticationError",
    "DecryptionError",
    "KeyFileError",
    "NotEncryptedError",
    "TruncatedError",
    "UnknownFormatError",
    "WrongKeyError",
    "decrypt_file_bytes",
    "encrypt_file_bytes",
    "encrypted_key_id",
    "is_encrypted",
    "key_id",
    "keyed_digest",
    "load_key",
    "load_or_create_key",
]

ALGORITHM = "AES-256-GCM"
ENCRYPTED_SUFFIX = ".enc"
KEY_SIZE = 32
KEY_FILE_TAG = "flagscale-aes256-key"
KEY_FILE_VERSION = "v1"
KEY_ID_PREFIX = "fsk1-"

# The NUL makes git treat every encrypted file as binary; CR LF shows line-ending damage.
MAGIC = b"FSENC\x00\r\n"
FORMAT_VERSION = 1
KNOWN_VERSIONS = (1,)
KEY_ID_SIZE = 8
NONCE_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = len(MAGIC) + 1 + KEY_ID_SIZE + NONCE_SIZE

_KEY_ID_DOMAIN = b"flagscale key id v1\x00"
_CIPHER_KEY_INFO = b"flagscale patch encryption v1: aes-256-gcm key"
_NONCE_KEY_INFO = b"flagscale patch encryption v1: nonce key"
_DIGEST_KEY_INFO = b"flagscale patch results v1: hmac key"


class DecryptionError(FlagScaleError):
    """An encrypted file could not be decrypted; the subclass says why."""


class NotEncryptedError(DecryptionError):
    """The bytes do not start with the encrypted-file header."""


class UnknownFormatError(DecryptionError):
    """The header carries a format version this tool does not know."""


class TruncatedError(DecryptionError):
    """The file ends before its header or its authentication tag is complete."""


class WrongKeyError(DecryptionError):
    """The file was encrypted under another key than the one given."""


class AuthenticationError(DecryptionError):
    """The authentication tag does not match: contents, header or name were changed."""


# --- key files -------------------------------------------------------------------------------


def load_or_create_key(path: Path) -> tuple[bytes, bool]:
    """The key in ``path``; if there is none, a new random key written there with mode 0600.

    Returns ``(key, created)``: when ``created`` is true the caller should tell the user where the
    new key is and that it must be kept secret. Parent folders are made (the last one 0700).
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        return load_key(path), False
    key = os.urandom(KEY_SIZE)
    if not write_secret_file(path, _format_key_file(key), replace=False):
        return load_key(path), False  # another process created it first: use theirs
    return key, True


def load_key(path: Path, *, contact: str | None = None) -> bytes:
    """The 32-byte key in key file ``path``.

    Raises KeyFileError when the file is missing (naming ``contact``, the vendor to ask, when
    given), unreadable, malformed, or readable by group or others.
    """
    path = Path(path)
    who = f"the vendor contact ({contact})" if contact else "the vendor contact of the patch set"
    data = read_key_file(
        path,
        "encryption key file",
        missing_hint=f"ask {who} for the key file and pass its path with --key-path",
        secret=True,
    )
    return _parse_key_file(data, path)


def key_id(key: bytes) -> str:
    """A short public name for ``key`` (``fsk1-`` and 16 hex digits); reveals nothing about it."""
    return KEY_ID_PREFIX + _key_id_bytes(key).hex()


def _key_id_bytes(key: bytes) -> bytes:
    _check_key(key)
    return hashlib.sha256(_KEY_ID_DOMAIN + key).digest()[:KEY_ID_SIZE]


def keyed_digest(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 (hex) of ``data`` under a key derived from ``key``: names things of an
    encrypted set (its files, their contents) without revealing them to whoever lacks the key."""
    return hmac.new(_subkey(key, _DIGEST_KEY_INFO), data, hashlib.sha256).hexdigest()


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise ValueError(f"an encryption key is {KEY_SIZE} bytes, got {size}")


def _format_key_file(key: bytes) -> bytes:
    encoded = base64.b64encode(key).decode("ascii")
    return f"{KEY_FILE_TAG} {KEY_FILE_VERSION}\n{encoded}\n".encode("ascii")


def _parse_key_file(data: bytes, path: Path) -> bytes:
    """Key file text: a tag line and a base64 line; blank lines and ``#`` comments are ignored."""
    where = f"encryption key file {path}"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{where} is not a FlagScale key file (not text)") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    expected = f"{KEY_FILE_TAG} {KEY_FILE_VERSION}"
    if not lines or not lines[0].startswith(KEY_FILE_TAG + " "):
        raise KeyFileError(f"{where} is not a FlagScale key file (first line must be {expected!r})")
    version = lines[0][len(KEY_FILE_TAG) + 1 :]
    if version != KEY_FILE_VERSION:
        raise KeyFileError(
            f"{where} has key file format {version!r}, known: {KEY_FILE_VERSION!r}",
            hint="update the FlagScale tools",
        )
    if len(lines) != 2:
        raise KeyFileError(f"{where} must hold exactly one base64 key line after {expected!r}")
    try:
        key = base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{where}: the key line is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise KeyFileError(f"{where} holds a {len(key)}-byte key, AES-256 needs {KEY_SIZE}")
    return key


# --- encrypted files -------------------------------------------------------------------------


def is_encrypted(blob: bytes) -> bool:
    """Whether ``blob`` starts like a file written by ``encrypt_file_bytes`` (any version)."""
    return blob.startswith(MAGIC)


def encrypt_file_bytes(plaintext: bytes, key: bytes, *, name: str) -> bytes:
    """``plaintext`` encrypted under ``key``, bound to the logical file name ``name``.

    Same plaintext, key and name give the same bytes. ``name`` must be given again, unchanged,
    to decrypt: use the file's path relative to the repository root, without ``.enc``.
    """
    name_bytes = _name_bytes(name)
    nonce = _derive_nonce(key, name_bytes, plaintext)
    header = MAGIC + bytes([FORMAT_VERSION]) + _key_id_bytes(key) + nonce
    body = AESGCM(_cipher_key(key)).encrypt(nonce, plaintext, header + name_bytes)
    return header + body


def decrypt_file_bytes(
    blob: bytes, key: bytes, *, name: str, source: str, key_label: str | None = None
) -> bytes:
    """The plaintext of ``blob`` (made by ``encrypt_file_bytes`` with the same ``name``).

    ``source`` names the file in messages; ``key_label`` names where the key came from (its
    path). Raises NotEncryptedError, UnknownFormatError, TruncatedError, WrongKeyError or
    AuthenticationError, each with one line that names ``source``.
    """
    name_bytes = _name_bytes(name)
    stored_id = _read_header(blob, source)
    given_id = _key_id_bytes(key)
    if stored_id != given_id:
        label = key_label or "the given key"
        raise WrongKeyError(
            f"{source}: encrypted with key {KEY_ID_PREFIX}{stored_id.hex()}, "
            f"but {label} is key {KEY_ID_PREFIX}{given_id.hex()}",
            hint=f"ask the vendor contact for key {KEY_ID_PREFIX}{stored_id.hex()}",
        )
    if len(blob) < HEADER_SIZE + TAG_SIZE:
        raise TruncatedError(
            f"{source}: truncated encrypted file ({len(blob)} bytes, "
            f"at least {HEADER_SIZE + TAG_SIZE} expected)",
            hint="restore the file from git or ask the vendor for an intact copy",
        )
    header = blob[:HEADER_SIZE]
    nonce = header[-NONCE_SIZE:]
    try:
        return AESGCM(_cipher_key(key)).decrypt(nonce, blob[HEADER_SIZE:], header + name_bytes)
    except InvalidTag:
        raise AuthenticationError(
            f"{source}: authentication failed for {name!r}: the file was modified or truncated, "
            "or it is not the file of that name",
            hint="restore the file from git or ask the vendor for an intact copy",
        ) from None


def encrypted_key_id(blob: bytes, *, source: str) -> str:
    """The id of the key ``blob`` was encrypted under, read from its header (no key needed)."""
    return KEY_ID_PREFIX + _read_header(blob, source).hex()


def _read_header(blob: bytes, source: str) -> bytes:
    """Check magic, version and length of the header; return the stored key id bytes."""
    if not blob.startswith(MAGIC):
        if blob and MAGIC.startswith(blob):
            _raise_truncated_header(blob, source)
        raise NotEncryptedError(
            f"{source}: not a FlagScale encrypted file (it does not start with the FSENC header)"
        )
    if len(blob) <= len(MAGIC):
        _raise_truncated_header(blob, source)
    version = blob[len(MAGIC)]
    if version not in KNOWN_VERSIONS:
        known = ", ".join(str(v) for v in KNOWN_VERSIONS)
        raise UnknownFormatError(
            f"{source}: encrypted file format version {version} is unknown (known: {known})",
            hint="update the FlagScale tools",
        )
    if len(blob) < HEADER_SIZE:
        _raise_truncated_header(blob, source)
    start = len(MAGIC) + 1
    return blob[start : start + KEY_ID_SIZE]


def _raise_truncated_header(blob: bytes, source: str) -> NoReturn:
    raise TruncatedError(
        f"{source}: truncated header ({len(blob)} bytes, the header is {HEADER_SIZE})",
        hint="restore the file from git or ask the vendor for an intact copy",
    )


def _name_bytes(name: str) -> bytes:
    if not isinstance(name, str) or not name:
        raise ValueError("an encrypted file needs a non-empty logical name")
    return name.encode("utf-8", "surrogateescape")


def _derive_nonce(key: bytes, name_bytes: bytes, plaintext: bytes) -> bytes:
    mac = hmac.new(_subkey(key, _NONCE_KEY_INFO), digestmod=hashlib.sha256)
    mac.update(struct.pack(">Q", len(name_bytes)))
    mac.update(name_bytes)
    mac.update(plaintext)
    return mac.digest()[:NONCE_SIZE]


def _cipher_key(key: bytes) -> bytes:
    return _subkey(key, _CIPHER_KEY_INFO)


def _subkey(key: bytes, info: bytes) -> bytes:
    _check_key(key)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(key)
