"""Signing release bundles with Ed25519: key pairs, detached signatures, fingerprints.

The release manager keeps the private key (PEM, PKCS#8, mode 0600); users trust the public key
(PEM, SubjectPublicKeyInfo) and name it by its fingerprint, ``ed25519:`` and the SHA-256 of the
32 raw public-key bytes in hex.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flagscale.core.errors import FlagScaleError
from flagscale.core.keyfiles import (
    KeyFileError,
    read_key_file,
    write_public_file,
    write_secret_file,
)

__all__ = [
    "FINGERPRINT_PREFIX",
    "SIGNATURE_SIZE",
    "BadSignatureError",
    "KeyFileError",
    "generate_signing_keypair",
    "public_key_fingerprint",
    "sign_bytes",
    "signer_fingerprint",
    "verify_bytes",
]

FINGERPRINT_PREFIX = "ed25519:"
SIGNATURE_SIZE = 64

_PRIVATE_WHAT = "signing private key"
_PUBLIC_WHAT = "trusted public key"


class BadSignatureError(FlagScaleError):
    """A signature does not verify against the trusted public key."""


def generate_signing_keypair(private_path: Path, public_path: Path, *, force: bool = False) -> str:
    """Write a new Ed25519 key pair; return the public key's fingerprint.

    The private key is written with mode 0600 from its first byte. Existing key files are never
    overwritten unless ``force`` is true (the old private key is then gone for good).
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if not force:
        for path in (private_path, public_path):
            if path.exists() or path.is_symlink():
                raise KeyFileError(
                    f"refusing to overwrite existing signing key {path}",
                    hint="use --force to replace the key pair; bundles signed with the old key "
                    "will no longer verify against the new public key",
                )
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not write_secret_file(private_path, private_pem, replace=force):
        raise KeyFileError(f"refusing to overwrite existing signing key {private_path}")
    public_key = private_key.public_key()
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_public_file(public_path, public_pem)
    return _fingerprint(public_key)


def sign_bytes(data: bytes, private_path: Path) -> bytes:
    """The detached 64-byte Ed25519 signature of ``data`` by the key in ``private_path``."""
    return _load_private_key(Path(private_path)).sign(data)


def verify_bytes(data: bytes, signature: bytes, public_path: Path, *, source: str) -> None:
    """Return if ``signature`` is a valid signature of ``data`` by the key in ``public_path``.

    ``source`` names what was signed (a bundle path) in the message of BadSignatureError.
    """
    public_path = Path(public_path)
    public_key = _load_public_key(public_path)
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        raise BadSignatureError(
            f"{source}: signature does not verify against trusted key {_fingerprint(public_key)} "
            f"({public_path})",
            hint="it was changed after signing or signed with another key; do not use it",
        ) from None


def public_key_fingerprint(public_path: Path) -> str:
    """The fingerprint (``ed25519:<64 hex>``) of the Ed25519 public key in ``public_path``."""
    return _fingerprint(_load_public_key(Path(public_path)))


def signer_fingerprint(private_path: Path) -> str:
    """The fingerprint of the public half of the private key in ``private_path``."""
    return _fingerprint(_load_private_key(Path(private_path)).public_key())


def _fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return FINGERPRINT_PREFIX + hashlib.sha256(raw).hexdigest()


def _load_public_key(path: Path) -> Ed25519PublicKey:
    data = read_key_file(
        path,
        _PUBLIC_WHAT,
        missing_hint="ask the release manager for the release public key",
        secret=False,
    )
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(
            f"{_PUBLIC_WHAT} {path} holds a private key; trust the public key instead",
            hint="a private key must never be handed out: if it was, make a new key pair",
        )
    if b"-----BEGIN " not in data:
        raise KeyFileError(f"{_PUBLIC_WHAT} {path} is not a PEM file")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{_PUBLIC_WHAT} {path} is not a valid PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            f"{_PUBLIC_WHAT} {path} holds an {_kind(key)} key; release signatures use Ed25519"
        )
    return key


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    data = read_key_file(
        path,
        _PRIVATE_WHAT,
        missing_hint="only the release manager holds it; a new pair comes from "
        "generate_signing_keypair",
        secret=True,
    )
    if b"PRIVATE KEY-----" not in data:
        what = "a public key" if b"PUBLIC KEY-----" in data else "not a PEM private key"
        raise KeyFileError(f"{_PRIVATE_WHAT} {path} is {what}; signing needs the private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # the library's way of saying the key is password-protected
        raise KeyFileError(
            f"{_PRIVATE_WHAT} {path} is password-protected, which is not supported",
            hint="keep it unencrypted with mode 0600 on a trusted machine",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{_PRIVATE_WHAT} {path} is not a valid PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"{_PRIVATE_WHAT} {path} holds an {_kind(key)} key; release signatures use Ed25519"
        )
    return key


def _kind(key: object) -> str:
    kinds = {
        "RSA": (rsa.RSAPublicKey, rsa.RSAPrivateKey),
        "EC": (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey),
        "DSA": (dsa.DSAPublicKey, dsa.DSAPrivateKey),
        "Ed448": (ed448.Ed448PublicKey, ed448.Ed448PrivateKey),
    }
    for kind, classes in kinds.items():
        if isinstance(key, classes):
            return kind
    return type(key).__name__
