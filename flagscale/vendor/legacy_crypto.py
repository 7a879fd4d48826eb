"""Reading patch files encrypted by FlagScale's older ``tools/patch`` (``*.patch.encrypted``).

That tool draws a random AES-256 key and a random 16-byte IV per file, encrypts the file with
AES-CBC after PKCS#7 padding, wraps the AES key with RSA-OAEP (SHA-256, MGF1-SHA-256, no label)
under the vendor's RSA-4096 public key, and stores ``IV | wrapped key | ciphertext``. The key
folder given as ``--key-path`` holds ``private_key.pem`` and ``public_key.pem``.

The format has no authentication: a changed byte in the ciphertext goes unnoticed unless it
breaks the padding. New patch sets use ``flagscale.vendor.crypto`` instead; this module only reads
old vendor data (``encrypt_legacy`` exists to make test fixtures).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from flagscale.core.errors import FlagScaleError
from flagscale.core.keyfiles import KeyFileError, read_key_file

__all__ = [
    "LEGACY_PRIVATE_KEY_NAME",
    "LEGACY_PUBLIC_KEY_NAME",
    "LEGACY_SUFFIX",
    "KeyFileError",
    "LegacyDecryptionError",
    "decrypt_legacy",
    "encrypt_legacy",
]

LEGACY_SUFFIX = ".encrypted"
LEGACY_PRIVATE_KEY_NAME = "private_key.pem"
LEGACY_PUBLIC_KEY_NAME = "public_key.pem"
IV_SIZE = 16
AES_KEY_SIZE = 32
BLOCK_SIZE = 16

_PRIVATE_WHAT = "legacy private key"
_PUBLIC_WHAT = "legacy public key"


class LegacyDecryptionError(FlagScaleError):
    """A ``.encrypted`` file could not be decrypted with the given RSA private key."""


def decrypt_legacy(blob: bytes, private_key_pem_path: Path, *, source: str) -> bytes:
    """The plaintext of a FlagScale ``.encrypted`` file.

    ``private_key_pem_path`` is the RSA private key PEM, or the old ``--key-path`` folder that
    holds ``private_key.pem``. ``source`` names the file in messages.
    """
    key_path = _key_file(Path(private_key_pem_path), LEGACY_PRIVATE_KEY_NAME)
    private_key = _load_private_key(key_path)
    wrapped_size = (private_key.key_size + 7) // 8
    if len(blob) < IV_SIZE + wrapped_size + BLOCK_SIZE:
        raise LegacyDecryptionError(
            f"{source}: too short for a FlagScale .encrypted file under a "
            f"{private_key.key_size}-bit key ({len(blob)} bytes, at least "
            f"{IV_SIZE + wrapped_size + BLOCK_SIZE} expected)",
            hint="the file is truncated, or it was not encrypted by FlagScale's tools/patch",
        )
    iv = blob[:IV_SIZE]
    wrapped_key = blob[IV_SIZE : IV_SIZE + wrapped_size]
    ciphertext = blob[IV_SIZE + wrapped_size :]
    if len(ciphertext) % BLOCK_SIZE:
        raise LegacyDecryptionError(
            f"{source}: corrupted: the encrypted body is not a whole number of AES blocks",
            hint="the file is truncated or damaged; restore it from git",
        )
    aes_key = _unwrap_key(private_key, wrapped_key, key_path, source)
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    return _strip_padding(padded, source)


def encrypt_legacy(
    plaintext: bytes,
    public_key_pem_path: Path,
    *,
    aes_key: bytes | None = None,
    iv: bytes | None = None,
) -> bytes:
    """``plaintext`` in FlagScale's old ``.encrypted`` layout; for test fixtures only.

    ``public_key_pem_path`` is the RSA public key PEM or a folder holding ``public_key.pem``.
    """
    key_path = _key_file(Path(public_key_pem_path), LEGACY_PUBLIC_KEY_NAME)
    public_key = _load_public_key(key_path)
    aes_key = os.urandom(AES_KEY_SIZE) if aes_key is None else aes_key
    iv = os.urandom(IV_SIZE) if iv is None else iv
    pad = BLOCK_SIZE - len(plaintext) % BLOCK_SIZE
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()
    return iv + public_key.encrypt(aes_key, _oaep()) + ciphertext


def _oaep() -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


def _unwrap_key(
    private_key: rsa.RSAPrivateKey, wrapped_key: bytes, key_path: Path, source: str
) -> bytes:
    try:
        aes_key = private_key.decrypt(wrapped_key, _oaep())
    except ValueError:
        raise LegacyDecryptionError(
            f"{source}: cannot unwrap the file key with {_PRIVATE_WHAT} {key_path}: "
            "it is not the key this file was encrypted for, or the file is damaged",
            hint="ask the vendor contact for the matching private_key.pem",
        ) from None
    if len(aes_key) != AES_KEY_SIZE:
        raise LegacyDecryptionError(
            f"{source}: the wrapped file key is {len(aes_key)} bytes, AES-256 needs {AES_KEY_SIZE}"
        )
    return aes_key


def _strip_padding(padded: bytes, source: str) -> bytes:
    count = padded[-1]
    if not 1 <= count <= BLOCK_SIZE or padded[-count:] != bytes([count]) * count:
        raise LegacyDecryptionError(
            f"{source}: corrupted: bad padding after decryption (the file was modified)",
            hint="restore the file from git or ask the vendor for an intact copy",
        )
    return padded[:-count]


def _key_file(path: Path, default_name: str) -> Path:
    return path / default_name if path.is_dir() else path


def _load_private_key(path: Path) -> rsa.RSAPrivateKey:
    data = read_key_file(
        path,
        _PRIVATE_WHAT,
        missing_hint="ask the vendor contact for the private_key.pem of this patch set",
        secret=True,
    )
    if b"PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{_PRIVATE_WHAT} {path} is not a PEM private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{_PRIVATE_WHAT} {path} is password-protected, not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{_PRIVATE_WHAT} {path} is not a valid PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{_PRIVATE_WHAT} {path} is not an RSA key")
    return key


def _load_public_key(path: Path) -> rsa.RSAPublicKey:
    data = read_key_file(path, _PUBLIC_WHAT, missing_hint="make an RSA key pair", secret=False)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{_PUBLIC_WHAT} {path} is not a valid PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError(f"{_PUBLIC_WHAT} {path} is not an RSA key")
    return key
