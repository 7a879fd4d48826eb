"""Release signing: Ed25519 key pairs, detached signatures, and every wrong trust key."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from flagscale.release.signing import (
    SIGNATURE_SIZE,
    BadSignatureError,
    KeyFileError,
    generate_signing_keypair,
    public_key_fingerprint,
    sign_bytes,
    signer_fingerprint,
    verify_bytes,
)

MANIFEST = b'{"bundle": "flagscale-2025.1", "files": {"a.patch": "00ff"}}\n'


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path, str]:
    private, public = tmp_path / "keys" / "release.pem", tmp_path / "release.pub.pem"
    fingerprint = generate_signing_keypair(private, public)
    return private, public, fingerprint


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keypair_files_and_modes(keypair: tuple[Path, Path, str]) -> None:
    private, public, _ = keypair
    assert mode_of(private) == 0o600
    assert mode_of(public) == 0o644
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert sorted(p.name for p in private.parent.iterdir()) == ["release.pem"]


def test_private_key_is_0600_under_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        generate_signing_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "k.pem") == 0o600


def test_fingerprint_is_sha256_of_raw_public_key(keypair: tuple[Path, Path, str]) -> None:
    _, public, fingerprint = keypair
    key = serialization.load_pem_public_key(public.read_bytes())
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fingerprint == "ed25519:" + hashlib.sha256(raw).hexdigest()
    assert public_key_fingerprint(public) == fingerprint
    assert signer_fingerprint(keypair[0]) == fingerprint


def test_sign_and_verify(keypair: tuple[Path, Path, str]) -> None:
    private, public, _ = keypair
    signature = sign_bytes(MANIFEST, private)
    assert len(signature) == SIGNATURE_SIZE
    assert sign_bytes(MANIFEST, private) == signature  # Ed25519 is deterministic
    verify_bytes(MANIFEST, signature, public, source="bundle.tar.gz")


def test_every_changed_byte_fails(keypair: tuple[Path, Path, str]) -> None:
    private, public, fingerprint = keypair
    signature = sign_bytes(MANIFEST, private)
    for index in range(len(MANIFEST)):
        changed = bytearray(MANIFEST)
        changed[index] ^= 0x01
        with pytest.raises(BadSignatureError) as info:
            verify_bytes(bytes(changed), signature, public, source="bundle.tar.gz")
        message = str(info.value)
        assert message.startswith("bundle.tar.gz: signature does not verify against trusted key")
        assert fingerprint in message and str(public) in message


def test_changed_or_short_signature_fails(keypair: tuple[Path, Path, str]) -> None:
    private, public, _ = keypair
    signature = sign_bytes(MANIFEST, private)
    for bad in (
        signature[:-1],
        signature + b"\0",
        bytes(64),
        bytes([signature[0] ^ 1]) + signature[1:],
    ):
        with pytest.raises(BadSignatureError):
            verify_bytes(MANIFEST, bad, public, source="b")


def test_signature_by_another_key_fails(keypair: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, public, fingerprint = keypair
    other_private = tmp_path / "other.pem"
    generate_signing_keypair(other_private, tmp_path / "other.pub.pem")
    signature = sign_bytes(MANIFEST, other_private)
    with pytest.raises(BadSignatureError, match=f"trusted key {fingerprint}"):
        verify_bytes(MANIFEST, signature, public, source="bundle.tar.gz")


def test_refuses_to_overwrite_without_force(keypair: tuple[Path, Path, str]) -> None:
    private, public, fingerprint = keypair
    before = private.read_bytes()
    with pytest.raises(KeyFileError) as info:
        generate_signing_keypair(private, public.with_name("new.pub.pem"))
    assert f"refusing to overwrite existing signing key {private}" in str(info.value)
    assert "--force" in str(info.value)
    with pytest.raises(KeyFileError, match=f"existing signing key {public}"):
        generate_signing_keypair(private.with_name("new.pem"), public)
    assert private.read_bytes() == before
    assert not public.with_name("new.pub.pem").exists()
    assert not private.with_name("new.pem").exists()
    new = generate_signing_keypair(private, public, force=True)
    assert new != fingerprint and public_key_fingerprint(public) == new
    assert private.read_bytes() != before and mode_of(private) == 0o600


def test_private_key_given_as_trust_key(keypair: tuple[Path, Path, str]) -> None:
    private, _, _ = keypair
    with pytest.raises(KeyFileError) as info:
        verify_bytes(MANIFEST, bytes(64), private, source="b")
    message = str(info.value)
    assert f"trusted public key {private} holds a private key" in message
    assert private.read_text().splitlines()[1] not in message


def test_missing_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"trusted public key .*absent.pem not found"):
        verify_bytes(MANIFEST, bytes(64), tmp_path / "absent.pem", source="b")
    with pytest.raises(KeyFileError, match=r"signing private key .*absent.pem not found"):
        sign_bytes(MANIFEST, tmp_path / "absent.pem")
    with pytest.raises(KeyFileError, match="not found"):
        public_key_fingerprint(tmp_path / "absent.pem")
    with pytest.raises(KeyFileError, match=r"signing private key .*absent.pem not found"):
        signer_fingerprint(tmp_path / "absent.pem")


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"hello", "is not a PEM file"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a valid PEM"),
    ],
)
def test_malformed_public_key(tmp_path: Path, content: bytes, expected: str) -> None:
    path = write(tmp_path / "bad.pub.pem", content, 0o644)
    with pytest.raises(KeyFileError, match=expected):
        verify_bytes(MANIFEST, bytes(64), path, source="b")


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pem_private(key: object, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def test_non_ed25519_keys_are_refused(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for kind, key in (("EC", ec_key), ("RSA", rsa_key)):
        expected = f"holds an {kind} key; release signatures use Ed25519"
        public = write(tmp_path / f"{kind}.pub.pem", pem_public(key), 0o644)
        with pytest.raises(KeyFileError, match=expected):
            verify_bytes(MANIFEST, bytes(64), public, source="b")
        private = write(tmp_path / f"{kind}.pem", pem_private(key))
        with pytest.raises(KeyFileError, match=expected):
            sign_bytes(MANIFEST, private)


def test_bad_private_keys(tmp_path: Path, keypair: tuple[Path, Path, str]) -> None:
    _, public, _ = keypair
    public_as_private = write(tmp_path / "pub.pem", public.read_bytes())
    with pytest.raises(KeyFileError, match="is a public key; signing needs the private key"):
        sign_bytes(MANIFEST, public_as_private)
    garbage = write(
        tmp_path / "garbage.pem", b"-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(KeyFileError, match="is not a valid PEM private key"):
        sign_bytes(MANIFEST, garbage)
    locked_key = ed25519.Ed25519PrivateKey.generate()
    locked = write(tmp_path / "locked.pem", pem_private(locked_key, b"secret-pass"))
    with pytest.raises(KeyFileError, match="is password-protected"):
        sign_bytes(MANIFEST, locked)


def test_private_key_open_to_others_is_refused(keypair: tuple[Path, Path, str]) -> None:
    private, _, _ = keypair
    private.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"accessible by other users \(mode 0644\).*chmod 600"):
        sign_bytes(MANIFEST, private)
