"""No silent no-ops: a set records what it produces, and every build checks it.

The recorded blob ids are checked against plain git (``git hash-object`` of the vendor's files,
``git apply --numstat`` for which files a patch touches), the sealed ones against an HMAC
computed here from the key file with the cryptography library's HKDF.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flagscale.builds.builder import BuildRequest, build_devices
from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import SchemaError
from flagscale.upstream.workspace import find_workspace
from flagscale.vendor import crypto
from flagscale.vendor.patchset import parse_metadata
from tests.build_fixtures import (
    DEVICE,
    Origin,
    clone_user,
    make_origin,
    rewrite_set,
    set_patch,
    vendor_backend_files,
)
from tests.gitrepos import run_git
from tests.vendor_workspace import BACKEND

TARGET = f"build/{DEVICE}"


@pytest.fixture(scope="module")
def origin(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    return make_origin(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def encrypted_origin(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    return make_origin(tmp_path_factory.mktemp("encrypted"), encrypt=True)


def build(root: Path, lines: list[str] | None = None, **options) -> Path:
    report = lines.append if lines is not None else (lambda _line: None)
    request = BuildRequest(devices=(DEVICE,), report=report, **options)
    return build_devices(find_workspace(root), request)[DEVICE]


def metadata_of(root: Path, backend: str) -> dict:
    path = root / "hardware" / DEVICE / backend / "metadata.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def touched_paths(patch: bytes, cwd: Path) -> list[str]:
    """What plain ``git apply --numstat`` says the patch changes."""
    out = subprocess.run(
        ["git", "apply", "--numstat", "-z", "-"], cwd=cwd, input=patch, capture_output=True
    ).stdout.decode("utf-8", "surrogateescape")
    return sorted(field.split("\t", 2)[2] for field in out.split("\0") if field.count("\t") == 2)


def hash_object(content: bytes, cwd: Path) -> str:
    return run_git(cwd, "hash-object", "--stdin", stdin=content)


def expected_results(origin: Origin, cwd: Path) -> dict[str, str | None]:
    """Each file the backend's patch touches → the blob id of the vendor's file (None: gone)."""
    vendor = vendor_backend_files(origin.vendor)
    patch = set_patch(origin.root, DEVICE, BACKEND)
    if origin.key is not None:
        name = f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch"
        key = crypto.load_key(origin.key)
        patch = crypto.decrypt_file_bytes(patch, key, name=name, source=name, key_label="k")
    results: dict[str, str | None] = {}
    for path in touched_paths(patch, cwd):
        kind_content = vendor.get(path)
        results[path] = None if kind_content is None else hash_object(kind_content[1], cwd)
    return results


# --- recorded when a set is made -----------------------------------------------------------------


def test_a_set_records_the_blob_id_of_every_file_it_touches(origin: Origin, tmp_path) -> None:
    metadata = metadata_of(origin.root, BACKEND)
    expected = expected_results(origin, tmp_path)
    assert metadata["results"] == expected
    assert expected["megatron/core/old_name.py"] is None  # deleted by the vendor
    assert "docs/vendor-link" in expected  # a symlink: the blob of its target path
    text = (origin.root / "hardware" / DEVICE / BACKEND / "metadata.yaml").read_text()
    blob = expected["megatron/core/model.py"]
    assert f'megatron/core/model.py: "{blob}"' in text  # ids quoted: never read as numbers
    flagscale = metadata_of(origin.root, "FlagScale")["results"]
    assert set(flagscale) == set(
        touched_paths(set_patch(origin.root, DEVICE, "FlagScale"), tmp_path)
    )


def test_an_encrypted_set_seals_its_results(encrypted_origin: Origin, tmp_path) -> None:
    metadata = metadata_of(encrypted_origin.root, BACKEND)
    assert "results" not in metadata
    sealed = metadata["results_sealed"]
    text = (encrypted_origin.root / "hardware" / DEVICE / BACKEND / "metadata.yaml").read_text()
    assert "megatron" not in text and "kernel" not in text  # no path of the patch shows
    key = crypto.load_key(encrypted_origin.key)
    subkey = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"flagscale patch results v1: hmac key",
    ).derive(key)

    def digest(data: bytes) -> str:
        return hmac.new(subkey, data, hashlib.sha256).hexdigest()

    expected = expected_results(encrypted_origin, tmp_path)
    assert sealed == {
        digest(b"path\0" + path.encode()): digest(
            b"blob\0" + path.encode() + b"\0" + (blob or "deleted").encode()
        )
        for path, blob in expected.items()
    }


# --- checked on every build ----------------------------------------------------------------------


def test_a_set_that_builds_into_what_it_promises_builds(origin: Origin, tmp_path) -> None:
    user = clone_user(origin.root, tmp_path / "user")
    lines: list[str] = []
    built = build(user, lines)
    assert (built / "third_party" / BACKEND / "megatron/vendor/kernel.py").is_file()
    assert not [line for line in lines if line.startswith("note:")]


def test_a_patch_changed_after_the_set_was_made_is_one_error_naming_file_and_set(
    origin: Origin, tmp_path: Path
) -> None:
    user = clone_user(origin.root, tmp_path / "user")
    patch = set_patch(user, DEVICE, BACKEND).replace(b"metax'", b"metax v2'")
    commit = rewrite_set(user, DEVICE, BACKEND, patch=patch, keep_results=True)
    with pytest.raises(FlagScaleError) as caught:
        build(user)
    message = str(caught.value)
    assert message.startswith(
        f"third_party/{BACKEND}/megatron/vendor/kernel.py: the build does not have the content"
        f" hardware/{DEVICE}/{BACKEND}/metadata.yaml at {commit[:12]} was made to produce"
    )
    assert "\n" not in message
    assert not (user / TARGET).exists()  # nothing swapped in


def test_an_encrypted_patch_changed_after_the_set_was_made_is_named_too(
    encrypted_origin: Origin, tmp_path: Path
) -> None:
    user = clone_user(encrypted_origin.root, tmp_path / "user")
    key = crypto.load_key(encrypted_origin.key)
    name = f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch"
    plain = crypto.decrypt_file_bytes(
        set_patch(user, DEVICE, BACKEND), key, name=name, source=name, key_label="k"
    )
    changed = crypto.encrypt_file_bytes(plain.replace(b"metax'", b"metax v2'"), key, name=name)
    rewrite_set(user, DEVICE, BACKEND, patch=changed, keep_results=True)
    with pytest.raises(FlagScaleError) as caught:
        build(user, key_paths=(encrypted_origin.key,))
    assert str(caught.value).startswith(
        f"third_party/{BACKEND}/megatron/vendor/kernel.py: the build does not have the content"
    )


def test_an_older_set_has_its_results_computed_once_with_a_note(origin: Origin, tmp_path) -> None:
    user = clone_user(origin.root, tmp_path / "user")
    patch = set_patch(user, DEVICE, BACKEND).replace(b"metax'", b"metax v2'")
    rewrite_set(user, DEVICE, BACKEND, patch=patch)  # made "before results were recorded"
    lines: list[str] = []
    built = build(user, lines)
    notes = [line for line in lines if line.startswith("note:")]
    assert len(notes) == 1, lines
    assert (
        notes[0].startswith(f"note: hardware/{DEVICE}/{BACKEND}/metadata.yaml at ")
        and "records no resulting blob ids" in notes[0]
    )
    kept = sorted((user / ".git" / "flagscale" / "set-results").iterdir())
    assert len(kept) == 1
    kernel = built / "third_party" / BACKEND / "megatron/vendor/kernel.py"
    assert kernel.read_text() == "KERNEL = 'metax v2'\n"

    # once: a new build of the same set (the old tree moved away) checks, and says nothing
    (user / TARGET).rename(tmp_path / "old-build")
    again: list[str] = []
    build(user, again)
    assert not [line for line in again if line.startswith("note:")]


# --- the metadata format ------------------------------------------------------------------------


def _document(**changes: object) -> bytes:
    data = {
        "version": 1,
        "device_type": DEVICE,
        "backend": BACKEND,
        "flagscale_base": "a" * 40,
        "backend_pin": "b" * 40,
        "backend_version": "0.16.1",
        "models": ["m"],
        "tasks": ["train"],
        "contact": "",
        "tool_version": "0.1.0",
        "patches": [{"file": f"{BACKEND}.patch", "sha256": "c" * 64, "encrypted": False}],
        "encryption": None,
    }
    data.update(changes)
    return yaml.safe_dump(data).encode()


def test_older_metadata_without_results_stays_valid() -> None:
    assert parse_metadata(_document(), "m.yaml").results is None


def test_results_are_checked_against_the_schema() -> None:
    ok = parse_metadata(_document(results={"a.py": "d" * 40, "gone.py": None}), "m.yaml")
    assert ok.results == {"a.py": "d" * 40, "gone.py": None}
    with pytest.raises(SchemaError) as caught:
        parse_metadata(_document(results={"a.py": "not-a-blob"}), "m.yaml")
    assert str(caught.value).startswith("m.yaml: at results.a.py: 'not-a-blob'")


def test_plain_results_on_an_encrypted_set_are_refused() -> None:
    encrypted = {
        "patches": [{"file": f"{BACKEND}.patch.enc", "sha256": "c" * 64, "encrypted": True}],
        "encryption": {"algorithm": "AES-256-GCM", "key_id": "fsk1-" + "0" * 16},
    }
    with pytest.raises(FlagScaleError, match="an encrypted set records results_sealed"):
        parse_metadata(_document(results={"a.py": "d" * 40}, **encrypted), "m.yaml")
    with pytest.raises(FlagScaleError, match="results_sealed is for encrypted sets"):
        parse_metadata(_document(results_sealed={"e" * 64: "f" * 64}), "m.yaml")
