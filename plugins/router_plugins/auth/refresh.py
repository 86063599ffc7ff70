"""Refresh access tokens once, however many requests notice the expiry at the same time.

Within a process, concurrent requests for one session share one refresh (single flight);
across processes and replicas, a lock in the session store admits one refresher, and the
others, once they hold the lock, see that the tokens they started from were replaced and
use the new ones.

When: ``min(refresh_margin, REFRESH_FRACTION * lifetime)`` before the access token
expires, so a margin longer than a short-lived token never makes every request refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time

from router_plugins.auth.oidc import IdpRejected, IdpUnavailable, OidcClient
from router_plugins.sessions import Session, SessionStore, single_flight

logger = logging.getLogger("commons_router.auth")

REFRESH_FRACTION = 0.25
"""The effective margin is at most this part of the access token's lifetime."""


class Refresher:
    def __init__(self, store: SessionStore, oidc: OidcClient, *, margin: float, timeout: float):
        self._store = store
        self._oidc = oidc
        self._margin = margin
        self._wait = max(3 * timeout, 5.0)
        self._inflight: dict[str, asyncio.Future[Session | None]] = {}

    def margin(self, session: Session) -> float:
        lifetime = session.access_lifetime
        if lifetime is None or lifetime <= 0:
            return self._margin
        return min(self._margin, REFRESH_FRACTION * lifetime)

    def due(self, session: Session) -> bool:
        return (
            session.access_expires is not None
            and session.refresh_token is not None
            and time.time() >= session.access_expires - self.margin(session)
        )

    async def fresh(self, session: Session) -> Session | None:
        """``session`` with a usable access token, or None when it can no longer be renewed."""
        if not self.due(session):
            return session
        return await single_flight(self._inflight, session.key, lambda: self._refresh(session))

    async def _refresh(self, seen: Session) -> Session | None:
        async with self._store.lock(f"refresh {seen.key}", ttl=self._wait, wait=self._wait) as ok:
            if not ok:
                raise IdpUnavailable("another replica is still refreshing this session")
            current = await self._store.get(seen.id, cached=False)
            if current is None:
                return None
            replaced = (current.access_token, current.refresh_token) != (
                seen.access_token,
                seen.refresh_token,
            )
            if replaced or not self.due(current):
                # Refreshed by another worker or replica while we waited for the lock: its
                # tokens are the session's now (a second grant would be wasted, or refused
                # by a provider that rotates refresh tokens).
                return current
            assert current.refresh_token is not None
            started = time.monotonic()
            try:
                tokens = await self._oidc.refresh(current.refresh_token)
            except IdpRejected as exc:
                logger.info(
                    "session %s: token refresh refused, the session ends (%s)",
                    current.pseudonym,
                    exc,
                )
                await self._store.delete(current.id)
                return None
            current.access_token = tokens.access_token
            current.refresh_token = tokens.refresh_token
            current.access_expires = tokens.access_expires
            current.access_lifetime = tokens.lifetime
            if tokens.id_token:
                current.id_token = tokens.id_token
            await self._store.save(current)
            logger.info(
                "session %s: access token refreshed in %.0f ms (valid %s s)",
                current.pseudonym,
                (time.monotonic() - started) * 1000,
                f"{tokens.lifetime:.0f}" if tokens.lifetime is not None else "?",
            )
            return current
