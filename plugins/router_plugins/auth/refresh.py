"""Refresh access tokens once, however many requests notice the expiry at the same time.

Within a process, concurrent requests for one session share one refresh (single flight);
across processes and replicas, a lock in the session store admits one refresher and the
others re-read the session it saved.
"""

from __future__ import annotations

import asyncio
import logging
import time

from router_plugins.auth.oidc import IdpRejected, IdpUnavailable, OidcClient
from router_plugins.sessions import Session, SessionStore
from router_plugins.sessions.singleflight import single_flight

logger = logging.getLogger("commons_router.auth")


class Refresher:
    def __init__(self, store: SessionStore, oidc: OidcClient, *, margin: float, timeout: float):
        self._store = store
        self._oidc = oidc
        self._margin = margin
        self._wait = max(3 * timeout, 5.0)
        self._inflight: dict[str, asyncio.Future[Session | None]] = {}

    def due(self, session: Session) -> bool:
        return (
            session.access_expires is not None
            and session.refresh_token is not None
            and time.time() >= session.access_expires - self._margin
        )

    async def fresh(self, session: Session) -> Session | None:
        """``session`` with a usable access token, or None when it can no longer be renewed."""
        if not self.due(session):
            return session
        return await single_flight(self._inflight, session.key, lambda: self._refresh(session))

    async def _refresh(self, session: Session) -> Session | None:
        async with self._store.lock(
            f"refresh {session.key}", ttl=self._wait, wait=self._wait
        ) as ok:
            if not ok:
                raise IdpUnavailable("another replica is still refreshing this session")
            current = await self._store.get(session.id, cached=False)
            if current is None:
                return None
            if not self.due(current):
                return current  # refreshed by someone else while we waited
            assert current.refresh_token is not None
            try:
                tokens = await self._oidc.refresh(current.refresh_token)
            except IdpRejected as exc:
                logger.info("refresh refused (%s): the session ends", exc)
                await self._store.delete(current.id)
                return None
            current.access_token = tokens.access_token
            current.refresh_token = tokens.refresh_token
            current.access_expires = tokens.access_expires
            if tokens.id_token:
                current.id_token = tokens.id_token
            await self._store.save(current)
            return current
