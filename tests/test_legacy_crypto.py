"""FlagScale's older ``.encrypted`` patch files: real RSA keys, the exact byte layout, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from flagscale.vendor.legacy_crypto import (
    KeyFileError,
    LegacyDecryptionError,
    decrypt_legacy,
    encrypt_legacy,
)

PATCH = b"diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n-x\n+y \xe4\xb8\xad\r\n"


def write_legacy_key_folder(folder: Path, key: rsa.RSAPrivateKey) -> Path:
    """A key folder as FlagScale's tools/patch writes it: traditional PEM private, SPKI public."""
    folder.mkdir(parents=True, exist_ok=True)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "private_key.pem").write_bytes(private)
    (folder / "private_key.pem").chmod(0o600)
    (folder / "public_key.pem").write_bytes(public)
    return folder


@pytest.fixture(scope="module")
def vendor_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


@pytest.fixture(scope="module")
def small_rsa() -> rsa.RSAPrivateKey:
    """A 2048-bit key: loading a 4096-bit key is checked for 0.5 s each time, too slow for many."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def vendor_keys(tmp_path: Path, vendor_rsa: rsa.RSAPrivateKey) -> Path:
    """Keys as FlagScale makes them: RSA-4096, so the wrapped key is 512 bytes."""
    return write_legacy_key_folder(tmp_path / "vendor_keys", vendor_rsa)


@pytest.fixture
def keys(tmp_path: Path, small_rsa: rsa.RSAPrivateKey) -> Path:
    return write_legacy_key_folder(tmp_path / "keys", small_rsa)


def layout_by_hand(plaintext: bytes, key: rsa.RSAPrivateKey, aes_key: bytes, iv: bytes) -> bytes:
    """The documented layout built from primitives, independent of encrypt_legacy."""
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    body = encryptor.update(plaintext + bytes([pad] * pad)) + encryptor.finalize()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return iv + key.public_key().encrypt(aes_key, oaep) + body


def test_reads_the_flagscale_layout(vendor_keys: Path, vendor_rsa: rsa.RSAPrivateKey) -> None:
    blob = layout_by_hand(PATCH, vendor_rsa, os.urandom(32), os.urandom(16))
    assert len(blob) == 16 + 512 + (len(PATCH) // 16 + 1) * 16
    assert decrypt_legacy(blob, vendor_keys / "private_key.pem", source="p") == PATCH
    assert decrypt_legacy(blob, vendor_keys, source="p") == PATCH  # the old --key-path folder


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096])
def test_round_trip(keys: Path, size: int) -> None:
    plaintext = os.urandom(size)
    blob = encrypt_legacy(plaintext, keys / "public_key.pem")
    assert len(blob) == 16 + 256 + (size // 16 + 1) * 16
    assert decrypt_legacy(blob, keys, source="p") == plaintext


def test_encrypt_legacy_matches_layout(vendor_keys: Path, vendor_rsa: rsa.RSAPrivateKey) -> None:
    aes_key, iv = os.urandom(32), os.urandom(16)
    ours = encrypt_legacy(PATCH, vendor_keys, aes_key=aes_key, iv=iv)
    theirs = layout_by_hand(PATCH, vendor_rsa, aes_key, iv)
    # OAEP is randomised: the IV and the body must match byte for byte, the wrapped key not.
    assert ours[:16] == theirs[:16] == iv
    assert ours[16 + 512 :] == theirs[16 + 512 :]


def test_wrong_private_key(keys: Path, tmp_path: Path, other_rsa: rsa.RSAPrivateKey) -> None:
    blob = encrypt_legacy(PATCH, keys)
    wrong = write_legacy_key_folder(tmp_path / "wrong", other_rsa)
    with pytest.raises(LegacyDecryptionError) as info:
        decrypt_legacy(blob, wrong, source="hardware/M_C/FlagScale/FlagScale.patch.encrypted")
    message = str(info.value)
    assert message.startswith(
        "hardware/M_C/FlagScale/FlagScale.patch.encrypted: cannot unwrap the file key with "
        f"legacy private key {wrong / 'private_key.pem'}: it is not the key"
    )
    assert "ask the vendor contact" in message


def test_missing_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        decrypt_legacy(b"x" * 1000, tmp_path, source="p")
    message = str(info.value)
    assert f"legacy private key {tmp_path / 'private_key.pem'} not found" in message
    assert "ask the vendor contact" in message


def test_key_open_to_others(keys: Path) -> None:
    (keys / "private_key.pem").chmod(0o644)
    with pytest.raises(KeyFileError, match=r"mode 0644.*chmod 600"):
        decrypt_legacy(b"x" * 1000, keys, source="p")


def test_bad_key_files(tmp_path: Path, keys: Path) -> None:
    def key_file(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    public_only = key_file("public.pem", (keys / "public_key.pem").read_bytes())
    with pytest.raises(KeyFileError, match="is not a PEM private key"):
        decrypt_legacy(b"x" * 1000, public_only, source="p")
    broken = key_file(
        "broken.pem", b"-----BEGIN RSA PRIVATE KEY-----\nAA\n-----END RSA PRIVATE KEY-----\n"
    )
    with pytest.raises(KeyFileError, match="is not a valid PEM private key"):
        decrypt_legacy(b"x" * 1000, broken, source="p")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="is not an RSA key"):
        decrypt_legacy(b"x" * 1000, key_file("ec.pem", ec_pem), source="p")


def test_truncated(keys: Path) -> None:
    blob = encrypt_legacy(PATCH, keys)
    for length in (0, 16, 16 + 256, 16 + 256 + 15):
        with pytest.raises(
            LegacyDecryptionError, match=r"^p: too short for a FlagScale \.encrypted"
        ):
            decrypt_legacy(blob[:length], keys, source="p")
    with pytest.raises(LegacyDecryptionError, match="not a whole number of AES blocks"):
        decrypt_legacy(blob[:-1], keys, source="p")


def test_damaged_wrapped_key(keys: Path) -> None:
    blob = bytearray(encrypt_legacy(PATCH, keys))
    blob[100] ^= 1
    with pytest.raises(LegacyDecryptionError, match="cannot unwrap the file key"):
        decrypt_legacy(bytes(blob), keys, source="p")


def test_bad_padding_is_reported(keys: Path) -> None:
    # The format has no authentication; a damaged last block shows only as bad padding.
    blob = bytearray(encrypt_legacy(PATCH, keys, iv=bytes(16)))
    blob[-17] ^= 0x80  # flips the high bit of the last padding byte after CBC decryption
    with pytest.raises(LegacyDecryptionError, match="corrupted: bad padding"):
        decrypt_legacy(bytes(blob), keys, source="p")
