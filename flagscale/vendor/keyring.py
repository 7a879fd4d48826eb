"""The decryption keys given with ``--key-path``, matched to each stored patch file.

A native encrypted set (``flagscale.vendor.crypto``) names its key by id; a file in FlagScale's
older layout (``flagscale.vendor.legacy_crypto``) does not, so each key path is tried in turn.
Keys are loaded once, on demand, and never printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.vendor.set_plan import SetPlan

__all__ = ["KeyRing", "MissingKeyError"]


class MissingKeyError(FlagScaleError):
    """An encrypted patch file and no key given (callers without ``--key-path`` reword it)."""

    def __init__(self, path: str, patch_set: SetPlan) -> None:
        self.path, self.key_id, self.contact = path, patch_set.key_id, patch_set.contact
        super().__init__(
            f"{path} is encrypted{self.with_key}: no --key-path given",
            hint=f"{self.ask}, then pass --key-path <key file>",
        )

    @property
    def with_key(self) -> str:
        return f" with key {self.key_id}" if self.key_id else ""

    @property
    def ask(self) -> str:
        return f"ask {self.contact} for it" if self.contact else "ask the vendor"


class KeyRing:
    """The ``--key-path`` files, loaded on demand and matched to a set by its key id."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(dict.fromkeys(Path(p) for p in paths))
        self._keys: dict[Path, bytes] = {}

    def decrypt(
        self, patch_set: SetPlan, path: str, name: str, scheme: str | None, data: bytes
    ) -> bytes:
        """The plaintext of stored file ``path`` of ``patch_set``; FlagScaleError names the key
        that is missing or wrong."""
        if not self.paths:
            raise MissingKeyError(path, patch_set)
        if scheme == "legacy":
            return self._decrypt_legacy(path, data)
        from flagscale.vendor import crypto

        key, label = self._fsenc_key(patch_set)
        return crypto.decrypt_file_bytes(data, key, name=name, source=path, key_label=label)

    def key_for(self, patch_set: SetPlan) -> bytes:
        """The key of an encrypted set (once its files were decrypted with it): builds check
        its sealed results with it (flagscale.builds.results_check)."""
        return self._fsenc_key(patch_set)[0]

    def _fsenc_key(self, patch_set: SetPlan) -> tuple[bytes, str]:
        from flagscale.vendor import crypto

        loaded: list[tuple[bytes, str]] = []
        failure: FlagScaleError | None = None
        for path in self.paths:
            try:
                key = self._keys.get(path) or crypto.load_key(
                    path, contact=patch_set.contact or None
                )
            except FlagScaleError as exc:
                failure = failure or exc
                continue
            self._keys[path] = key
            if crypto.key_id(key) == patch_set.key_id:
                return key, str(path)
            loaded.append((key, str(path)))
        if loaded:
            return loaded[0]  # the wrong key: decryption names the expected one
        assert failure is not None
        raise failure

    def _decrypt_legacy(self, path: str, data: bytes) -> bytes:
        from flagscale.vendor.legacy_crypto import decrypt_legacy

        failure: FlagScaleError | None = None
        for key_path in self.paths:
            try:
                return decrypt_legacy(data, key_path, source=path)
            except FlagScaleError as exc:
                failure = failure or exc
        assert failure is not None
        raise failure
