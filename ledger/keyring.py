"""The key hierarchy of an open ledger: master password -> KEK -> data keys.

The KEK is derived once, when the ledger is opened. Data keys are unwrapped on first use,
checked against the fingerprint their events recorded (so a key swapped in the key table
is refused), and kept in memory for the life of the :class:`KeyMaterial`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger import crypto, early
from ledger.errors import IntegrityError, InvalidCiphertext, VersionError, WrongPasswordError
from ledger.store import KdfRecord, LedgerMeta


def new_kdf(password: str, iterations: int) -> tuple[KdfRecord, bytes]:
    """Fresh KDF parameters (random salt) for ``password`` and the KEK they give."""
    salt = os.urandom(crypto.SALT_BYTES)
    kek = crypto.derive_kek(password, salt, iterations)
    return KdfRecord(crypto.KDF_ALGORITHM, iterations, salt, crypto.kek_check_value(kek)), kek


def unlock_kek(meta: LedgerMeta, password: str) -> bytes:
    """Derive the KEK and check it against the ledger before anything else happens.

    :raises WrongPasswordError: the password does not open this ledger.
    """
    if meta.kdf.algorithm != crypto.KDF_ALGORITHM:
        raise WrongPasswordError(f"unsupported KDF {meta.kdf.algorithm!r}")
    if not password:
        raise WrongPasswordError("the master password is empty")
    kek = early.derive_kek(password, meta.kdf.salt, meta.kdf.iterations)
    if not crypto.kek_matches(kek, meta.kdf.kek_check):
        raise WrongPasswordError("wrong master password for this ledger")
    return kek


class KeyMaterial:
    """Unwraps and caches data keys for one open ledger."""

    def __init__(
        self, kek: bytes, ledger_id: str, wrapped: Mapping[int, bytes | None],
        fingerprints: Mapping[int, str],
    ) -> None:
        self._kek = kek
        self._ledger_id = ledger_id
        self._wrapped = dict(wrapped)
        self._fingerprints = dict(fingerprints)
        self._cache: dict[int, bytes] = {}
        self._ciphers: dict[int, AESGCM] = {}

    def data_key(self, version: int) -> bytes:
        """The data key of ``version``.

        :raises VersionError: the ledger has no key for that version.
        :raises IntegrityError: the stored key does not open or does not match its event.
        """
        key = self._cache.get(version)
        if key is not None:
            return key
        wrapped = self._wrapped.get(version)
        if wrapped is None or version not in self._fingerprints:
            raise VersionError(f"the ledger holds no key for version {version}")
        try:
            key = crypto.unwrap_data_key(self._kek, wrapped, self._ledger_id, version)
        except InvalidCiphertext:
            raise IntegrityError(f"the stored key of version {version} does not open") from None
        if crypto.fingerprint(key) != self._fingerprints[version]:
            raise IntegrityError(
                f"the stored key of version {version} does not match its recorded fingerprint"
            )
        self._cache[version] = key
        return key

    def cipher(self, version: int) -> AESGCM:
        """:meth:`data_key` of ``version`` as the AES-GCM instance that seals and opens
        with it, built once per version for this ledger (:data:`ledger.crypto.Key`)."""
        found = self._ciphers.get(version)
        if found is None:
            found = self._ciphers[version] = crypto.cipher(self.data_key(version))
        return found

    def wrap(self, version: int, data_key: bytes) -> bytes:
        return crypto.wrap_data_key(self._kek, data_key, self._ledger_id, version)

    def rewrapped_under(self, new_kek: bytes) -> dict[int, bytes]:
        """Every live data key wrapped under ``new_kek`` (for ``rekey-master``)."""
        out = {}
        for version, wrapped in self._wrapped.items():
            if wrapped is not None:
                out[version] = crypto.wrap_data_key(
                    new_kek, self.data_key(version), self._ledger_id, version
                )
        return out

    def versions(self) -> list[int]:
        return sorted(v for v, w in self._wrapped.items() if w is not None)
