"""Encryption at rest: AES-256-GCM over every creds document and key value.

Optional: ``pip install 'wa-session-store[crypto]'`` (the ``cryptography``
package). A sealed value is an envelope::

    MAGIC (5 bytes) | key id length (1) | key id (ASCII) | nonce (12) | ciphertext + tag

``MAGIC`` starts with a NUL byte, which no UTF-8 JSON document starts with, so
a store always knows whether a row is sealed. The associated data binds each
ciphertext to its session, and for keys to its category and key id: a row
copied to another session or key does not decrypt.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from ..errors import DecryptionError, InvalidInputError, InvalidTypeError

__all__ = ["MAGIC", "AESGCMCipher", "Cipher", "associated_data", "sealed_key_id"]

#: The first bytes of every sealed value.
MAGIC = b"\x00wae\x01"
_NONCE_SIZE = 12
_KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@runtime_checkable
class Cipher(Protocol):
    """What a store's ``cipher=`` accepts. :class:`AESGCMCipher` is the implementation."""

    @property
    def active(self) -> str:
        """The id of the key new values are sealed with."""

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt ``plaintext`` under the active key into an envelope."""

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        """Decrypt an envelope; raise :class:`DecryptionError` if it does not authenticate."""


def associated_data(
    session_id: str, category: str | None = None, key_id: str | None = None
) -> bytes:
    """What a value is bound to: its session, and for a key its category and id.

    Ids never contain NUL (validation refuses control characters), so joining
    with NUL is unambiguous.
    """
    parts = (
        ("creds", session_id) if category is None else ("key", session_id, category, key_id or "")
    )
    return "\x00".join(("wa_session_store/1", *parts)).encode()


def sealed_key_id(data: bytes) -> str | None:
    """The id of the key that sealed ``data``, or None if it is not sealed."""
    if not data.startswith(MAGIC) or len(data) <= len(MAGIC):
        return None
    length = data[len(MAGIC)]
    start = len(MAGIC) + 1
    try:
        return data[start : start + length].decode("ascii")
    except UnicodeDecodeError:
        return None


class AESGCMCipher:
    """AES-256-GCM with a fresh random 96-bit nonce per value, and key rotation.

    Args:
        keys: key id -> 32-byte key. Ids are 1 to 64 characters of
            ``A-Z a-z 0-9 . _ : -``. Keep old keys here while rows sealed with
            them remain (``await store.reencrypt()`` rewrites them).
        active: the id of the key that seals new values.

    Raises:
        InvalidInputError: no keys, a key that is not 32 bytes, a bad id, or
            ``active`` not among the keys. Messages never show key bytes, nor
            a refused id or ``active`` value (either may be a misplaced key).
        ImportError: the ``cryptography`` package is missing.

    Generate a key with ``os.urandom(32)`` (or ``AESGCMCipher.generate_key()``)
    and keep it outside the database: an environment variable or a secret manager.
    """

    __slots__ = ("_active", "_aead")

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "AESGCMCipher needs the 'cryptography' package: "
                "pip install 'wa-session-store[crypto]'"
            ) from exc
        if not isinstance(keys, Mapping):
            raise InvalidTypeError(
                f"keys must be a mapping {{key_id: 32 bytes}}, not {type(keys).__name__}"
            )
        if not keys:
            raise InvalidInputError("keys must hold at least one key")
        aead = {}
        for number, (key_id, key) in enumerate(keys.items(), 1):
            # A refused id is never shown: it may be a key pasted in the wrong place.
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                what = (
                    f"a {len(key_id)}-character str"
                    if isinstance(key_id, str)
                    else f"a {type(key_id).__name__}"
                )
                raise InvalidInputError(
                    f"key id number {number} ({what}) is not allowed: use 1 to 64 of "
                    "A-Z a-z 0-9 . _ : -"
                )
            if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
                size = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
                raise InvalidInputError(
                    f"key number {number} must be 32 bytes (AES-256), not {size}"
                )
            aead[key_id] = AESGCM(bytes(key))
        if not isinstance(active, str) or active not in aead:
            raise InvalidInputError(
                "active is not among the keys: it must be one of "
                f"{sorted(aead)} (the value given is not shown)"
            )
        self._aead = aead
        self._active = active

    @staticmethod
    def generate_key() -> bytes:
        """A new random 32-byte key."""
        return os.urandom(32)

    @property
    def active(self) -> str:
        """The id of the key that seals new values."""
        return self._active

    @property
    def key_ids(self) -> list[str]:
        """The ids of every key this cipher can open."""
        return sorted(self._aead)

    def __repr__(self) -> str:
        return f"<AESGCMCipher active={self._active!r} keys={self.key_ids}>"

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt under the active key with a fresh nonce."""
        nonce = os.urandom(_NONCE_SIZE)
        key_id = self._active.encode("ascii")
        body = self._aead[self._active].encrypt(nonce, plaintext, associated_data)
        return b"".join((MAGIC, bytes((len(key_id),)), key_id, nonce, body))

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        """Decrypt an envelope sealed by any of the keys.

        Raises:
            DecryptionError: not an envelope, an unknown key, a tampered
                ciphertext, or associated data that differs (a moved row).
        """
        from cryptography.exceptions import InvalidTag

        key_id = sealed_key_id(sealed)
        if key_id is None:
            raise DecryptionError("value is not a sealed envelope")
        aead = self._aead.get(key_id)
        if aead is None:
            raise DecryptionError(
                f"value is sealed with key {key_id!r}, which this cipher does not hold "
                f"(it holds {self.key_ids})"
            )
        start = len(MAGIC) + 1 + len(key_id)
        nonce, body = sealed[start : start + _NONCE_SIZE], sealed[start + _NONCE_SIZE :]
        try:
            return aead.decrypt(nonce, body, associated_data)
        except (InvalidTag, ValueError):
            raise DecryptionError(
                f"value sealed with key {key_id!r} does not authenticate: wrong key, "
                "tampered data, or a row copied from another session or key"
            ) from None
