"""Public keys of one issuer, fetched from its JWKS URL and cached.

SECURITY: keys come only from the configured URL (never from a token's ``jku``/``x5u``);
an unknown ``kid`` refetches at most once per ``min_refetch`` so forged tokens cannot make
the router hammer the issuer; responses are size-capped and time-limited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout
from jwt import PyJWK
from jwt.exceptions import PyJWKError

logger = logging.getLogger("commons_router.auth")


_RETRY_AFTER_FAILURE = 1.0


class KeysUnavailable(Exception):
    """The issuer's keys could not be fetched (and none are cached)."""


class JwksCache:
    __slots__ = (
        "_attempted_at",
        "_error",
        "_http",
        "_keys",
        "_loaded_at",
        "_lock",
        "max_bytes",
        "min_refetch",
        "timeout",
        "ttl",
        "url",
    )

    def __init__(
        self,
        url: str,
        http: ClientSession,
        *,
        ttl: float = 600.0,
        min_refetch: float = 30.0,
        timeout: float = 5.0,
        max_bytes: int = 256 * 1024,
    ) -> None:
        self.url = url
        self._http = http
        self.ttl = ttl
        self.min_refetch = min_refetch
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._keys: dict[str, PyJWK] = {}
        self._loaded_at = -math.inf
        self._attempted_at = -math.inf
        self._error = ""
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key named ``kid`` (or the only key, for tokens without ``kid``)."""
        if self._lock.locked():
            async with self._lock:
                pass  # a fetch is in flight: its answer may hold the key
        now = time.monotonic()
        if now - self._loaded_at >= self.ttl:
            await self._refresh(now, stale_ok=bool(self._keys))
        found = self._find(kid)
        if found is None and time.monotonic() - self._attempted_at >= self.min_refetch:
            await self._refresh(time.monotonic(), stale_ok=True)
            found = self._find(kid)
        return found

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, asked_at: float, *, stale_ok: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            recent = self._attempted_at >= asked_at or (
                bool(self._error) and now - self._attempted_at < _RETRY_AFTER_FAILURE
            )
            if recent:
                # Someone fetched (or failed to) while this request waited: use that.
                if not self._keys and not stale_ok:
                    raise KeysUnavailable(self._error or f"{self.url}: no keys")
                return
            self._attempted_at = now  # failures count too: rate-limited
            try:
                self._keys = await self._fetch()
                self._loaded_at = time.monotonic()
                self._error = ""
            except KeysUnavailable as exc:
                self._error = str(exc)
                if not stale_ok:
                    raise
                logger.warning("keeping cached keys of %s: %s", self.url, exc)

    async def _fetch(self) -> dict[str, PyJWK]:
        try:
            async with self._http.get(
                self.url,
                timeout=ClientTimeout(total=self.timeout),
                headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise KeysUnavailable(f"{self.url} answered {response.status}")
                body = await response.content.read(self.max_bytes + 1)
        except (ClientError, TimeoutError, OSError) as exc:
            raise KeysUnavailable(f"{self.url}: {exc.__class__.__name__} {exc}") from None
        if len(body) > self.max_bytes:
            raise KeysUnavailable(f"{self.url}: key set larger than {self.max_bytes} bytes")
        try:
            data: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise KeysUnavailable(f"{self.url}: not JSON") from None
        raw_keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(raw_keys, list):
            raise KeysUnavailable(f"{self.url}: no 'keys' list")
        keys: dict[str, PyJWK] = {}
        for raw in raw_keys:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            if raw.get("kty") == "oct":
                continue  # SECURITY: never a shared secret from a key set
            try:
                keys[str(raw.get("kid", ""))] = PyJWK(raw)
            except (PyJWKError, ValueError, TypeError):
                continue
        return keys
