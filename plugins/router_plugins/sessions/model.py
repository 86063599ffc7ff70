"""The session record: who the user is and the tokens the router holds for them."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson


def digest(value: str) -> str:
    """A storage name for a secret (session id, flow state): the secret itself is never a key.

    SECURITY: a dump of the store (or its keyspace) must not hand out valid cookies.
    """
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(slots=True)
class Session:
    """One signed-in browser. ``id`` is the opaque cookie value (≥128 random bits)."""

    id: str
    claims: dict[str, Any]
    """The user's claims (``sub``, ``email``, ``groups``…) as verified at login."""
    created: float
    expires: float
    """Absolute end of the session, whatever the activity."""
    issuer: str = ""
    sid: str | None = None
    """The identity provider's session id (for back-channel logout)."""
    access_token: str | None = None
    refresh_token: str | None = None
    id_token: str | None = None
    access_expires: float | None = None
    access_lifetime: float | None = None
    """How long the current access token was valid when it was issued (``expires_in``)."""

    @property
    def key(self) -> str:
        return digest(self.id)

    @property
    def pseudonym(self) -> str:
        """A short name for this session in logs: it neither is nor leads to the cookie
        value or the store key."""
        return hashlib.sha256(b"commons-router session log\x00" + self.id.encode()).hexdigest()[:16]

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a session record is an object")
        # Fields written by a newer version are ignored (replicas upgrade one at a time).
        return cls(**{k: v for k, v in raw.items() if k in _FIELDS})


_FIELDS = frozenset(f.name for f in fields(Session))
