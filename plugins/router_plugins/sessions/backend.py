"""The storage contract session stores implement: a few atomic operations on bytes.

:class:`~router_plugins.sessions.store.SessionStore` builds sessions, login flows,
back-channel indexes and refresh locks on top of it, so every backend behaves the same and
one test suite covers them all.
"""

from __future__ import annotations

from typing import Protocol


class StoreUnavailable(Exception):
    """The backend cannot be reached (Redis down): callers fail closed with 503."""


class Backend(Protocol):
    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""

    async def get(self, key: str, touch: float | None = None) -> bytes | None:
        """Read ``key``; with ``touch``, its time to live becomes ``touch`` seconds."""

    async def take(self, key: str) -> bytes | None:
        """Read and delete ``key`` atomically (one-time values such as login flows)."""

    async def delete(self, *keys: str) -> None: ...

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        """Add ``member`` to the set ``index``; the set lives at least ``ttl`` seconds."""

    async def index_pop(self, index: str) -> list[str]:
        """Remove the set ``index`` and return its members."""

    async def acquire(self, key: str, token: str, ttl: float) -> bool:
        """Take the lock ``key`` unless someone holds it; it expires after ``ttl``."""

    async def release(self, key: str, token: str) -> None:
        """Free the lock ``key`` if ``token`` still holds it."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
