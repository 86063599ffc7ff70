"""Authenticated encryption of session records at rest (AES-256-GCM, rotating keys).

The first configured key encrypts; every configured key decrypts, so keys rotate by
putting a new key first and dropping the old one after the longest session lifetime.
Each record names its key by a 4-byte key id and binds its storage name as associated
data, so a record cannot be moved to another session's name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"
_NONCE = 12


class SealError(ValueError):
    """A record that cannot be decrypted: unknown key, tampered or truncated."""


def parse_key(text: str) -> bytes:
    """A key is 32 random bytes in (url-safe) base64, e.g. ``openssl rand -base64 32``."""
    try:
        raw = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_")
    except (binascii.Error, ValueError):
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("an encryption key must be base64") from None
    if len(raw) != 32:
        raise ValueError(f"an encryption key must be 32 bytes (got {len(raw)})")
    return raw


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class Sealer:
    __slots__ = ("_keys", "_primary")

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._keys = {hashlib.sha256(k).digest()[:4]: AESGCM(k) for k in keys}
        self._primary = hashlib.sha256(keys[0]).digest()[:4]

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = self._keys[self._primary].encrypt(nonce, plaintext, associated)
        return _VERSION + self._primary + nonce + sealed

    def open(self, record: bytes, associated: bytes) -> bytes:
        if len(record) < 1 + 4 + _NONCE + 16 or record[:1] != _VERSION:
            raise SealError("not a sealed record")
        aead = self._keys.get(record[1:5])
        if aead is None:
            raise SealError("sealed with a key that is no longer configured")
        try:
            return aead.decrypt(record[5 : 5 + _NONCE], record[5 + _NONCE :], associated)
        except InvalidTag:
            raise SealError("record failed authentication") from None
