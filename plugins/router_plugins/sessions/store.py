"""Sessions, login flows, back-channel indexes and refresh locks over a :class:`Backend`.

Every record is sealed (AEAD) before it reaches the backend and stored under the SHA-256
of its secret name; a record that fails to open is treated as absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson

from router_plugins.sessions.backend import Backend, StoreUnavailable
from router_plugins.sessions.crypto import Sealer, SealError
from router_plugins.sessions.model import Session, digest
from router_plugins.sessions.singleflight import single_flight

logger = logging.getLogger("commons_router.sessions")

__all__ = ["SessionStore", "StoreUnavailable"]

_CACHE_LIMIT = 10_000

FlowKind = Literal["flow", "done", "logout"]
"""Short-lived records keyed by a secret: a login flow, a finished login (for a replayed
callback), a sign-out's return URL."""


class SessionStore:
    """The one session-store contract; ``backend`` decides where the bytes live."""

    def __init__(
        self,
        backend: Backend,
        sealer: Sealer,
        *,
        idle_timeout: float,
        lifetime: float,
        prefix: str = "commons-router:",
        cache_ttl: float = 0.0,
    ) -> None:
        self.backend = backend
        self._sealer = sealer
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime
        self._prefix = prefix
        self._cache_ttl = cache_ttl
        # Keyed by the cookie value itself (this process's memory already holds the ids of
        # the sessions it caches), so a hit costs one dict lookup and no SHA-256; the
        # reverse map lets back-channel logout, which knows only digests, evict entries.
        self._cache: dict[str, tuple[Session, float]] = {}
        self._cached_ids: dict[str, str] = {}
        self._loading: dict[str, asyncio.Future[Session | None]] = {}

    # --- names ------------------------------------------------------------------------
    def _session_key(self, hashed: str) -> str:
        return f"{self._prefix}session:{hashed}"

    def _index_key(self, issuer: str, kind: str, value: str) -> str:
        return f"{self._prefix}index:{digest(f'{issuer} {kind} {value}')}"

    # --- sealing ----------------------------------------------------------------------
    def _seal(self, key: str, data: bytes) -> bytes:
        return self._sealer.seal(data, key.encode())

    def _open(self, key: str, record: bytes) -> bytes | None:
        try:
            return self._sealer.open(record, key.encode())
        except SealError as exc:
            logger.warning("dropping an unreadable record (%s)", exc)
            return None

    # --- sessions ---------------------------------------------------------------------
    async def create(
        self,
        claims: dict[str, Any],
        *,
        issuer: str = "",
        sid: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        id_token: str | None = None,
        access_expires: float | None = None,
        access_lifetime: float | None = None,
    ) -> Session:
        """A new session with a fresh random id (256 bits)."""
        now = time.time()
        session = Session(
            id=secrets.token_urlsafe(32),
            claims=claims,
            created=now,
            expires=now + self.lifetime,
            issuer=issuer,
            sid=sid,
            access_token=access_token,
            refresh_token=refresh_token,
            id_token=id_token,
            access_expires=access_expires,
            access_lifetime=access_lifetime,
        )
        await self.save(session)
        hashed = session.key
        if sid:
            await self.backend.index_add(self._index_key(issuer, "sid", sid), hashed, self.lifetime)
        if claims.get("sub"):
            index = self._index_key(issuer, "sub", str(claims["sub"]))
            await self.backend.index_add(index, hashed, self.lifetime)
        return session

    async def save(self, session: Session) -> None:
        """Write ``session`` (new or updated); its idle timer restarts."""
        ttl = min(self.idle_timeout, session.expires - time.time())
        if ttl <= 0:
            await self.delete(session.id)
            return
        key = self._session_key(session.key)
        await self.backend.put(key, self._seal(key, session.to_bytes()), ttl)
        self._forget(session.key)

    async def get(self, session_id: str, *, cached: bool = True) -> Session | None:
        """The live session for a cookie value, or None (unknown, expired, unreadable).

        ``cached=False`` reads the backend even when this process saw the session lately.
        """
        if not session_id or len(session_id) > 128:
            return None
        if not cached:
            return await self._load(session_id, digest(session_id))
        session = self.cached(session_id)
        if session is not None:
            return session
        hashed = digest(session_id)
        # When a cached session runs out under load, one read serves every concurrent
        # request of that session: no herd of identical reads (and Redis connections).
        return await single_flight(self._loading, hashed, lambda: self._load(session_id, hashed))

    def cached(self, session_id: str) -> Session | None:
        """The session this process read for ``session_id`` less than ``cache_ttl`` ago and
        that has not ended since, or None: no backend read, no crypto (one dict lookup)."""
        hit = self._cache.get(session_id)
        if hit is None:
            return None
        session = hit[0]
        if hit[1] > time.monotonic() and time.time() < session.expires:
            return session
        self._forget(hit[0].key)
        return None

    async def _load(self, session_id: str, hashed: str) -> Session | None:
        key = self._session_key(hashed)
        record = await self.backend.get(key, touch=self.idle_timeout)
        if record is None:
            return None
        data = self._open(key, record)
        session = None
        if data is not None:
            try:
                session = Session.from_bytes(data)
            except (ValueError, TypeError):
                session = None
        if session is None or session.id != session_id or session.expired():
            await self.backend.delete(key)
            return None
        if self._cache_ttl > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
                self._cached_ids.clear()
            self._forget(hashed)
            self._cache[session_id] = (session, time.monotonic() + self._cache_ttl)
            self._cached_ids[hashed] = session_id
        return session

    async def delete(self, session_id: str) -> None:
        hashed = digest(session_id)
        self._forget(hashed)
        await self.backend.delete(self._session_key(hashed))

    async def delete_for(
        self, issuer: str, *, sid: str | None = None, sub: str | None = None
    ) -> int:
        """End every session of an identity-provider session ``sid`` or user ``sub``."""
        hashes: set[str] = set()
        if sid:
            hashes.update(await self.backend.index_pop(self._index_key(issuer, "sid", sid)))
        if sub:
            hashes.update(await self.backend.index_pop(self._index_key(issuer, "sub", sub)))
        for hashed in hashes:
            self._forget(hashed)
        await self.backend.delete(*(self._session_key(h) for h in sorted(hashes)))
        return len(hashes)

    def _forget(self, hashed: str) -> None:
        session_id = self._cached_ids.pop(hashed, None)
        if session_id is not None:
            self._cache.pop(session_id, None)

    # --- login flows ------------------------------------------------------------------
    def _flow_key(self, state: str, kind: FlowKind) -> str:
        return f"{self._prefix}{kind}:{digest(state)}"

    async def put_flow(
        self, state: str, data: dict[str, Any], ttl: float, *, kind: FlowKind = "flow"
    ) -> None:
        """Keep one login flow's secrets (PKCE verifier, nonce, return URL) server-side.

        ``kind`` names other short-lived records keyed by a secret (:data:`FlowKind`).
        """
        key = self._flow_key(state, kind)
        await self.backend.put(key, self._seal(key, orjson.dumps(data)), ttl)

    async def take_flow(self, state: str, *, kind: FlowKind = "flow") -> dict[str, Any] | None:
        """The flow for ``state``, at most once."""
        if not state or len(state) > 256:
            return None
        key = self._flow_key(state, kind)
        return self._flow_data(key, await self.backend.take(key))

    async def read_flow(self, state: str, *, kind: FlowKind) -> dict[str, Any] | None:
        """The record for ``state`` (it stays)."""
        if not state or len(state) > 256:
            return None
        key = self._flow_key(state, kind)
        return self._flow_data(key, await self.backend.get(key))

    def _flow_data(self, key: str, record: bytes | None) -> dict[str, Any] | None:
        data = self._open(key, record) if record is not None else None
        if data is None:
            return None
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    # --- locks ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lock(self, name: str, ttl: float, wait: float) -> AsyncIterator[bool]:
        """Hold the lock ``name`` (shared by all replicas) for at most ``ttl`` seconds.

        Yields True when acquired, False when someone else held it for ``wait`` seconds.
        """
        key = f"{self._prefix}lock:{digest(name)}"
        token = secrets.token_urlsafe(16)
        deadline = time.monotonic() + wait
        acquired = await self.backend.acquire(key, token, ttl)
        while not acquired and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            acquired = await self.backend.acquire(key, token, ttl)
        try:
            yield acquired
        finally:
            if acquired:
                with contextlib.suppress(StoreUnavailable):
                    await self.backend.release(key, token)

    async def ping(self) -> None:
        await self.backend.ping()

    async def close(self) -> None:
        await self.backend.close()
