"""Redis storage (redis-py asyncio), shared by every replica and worker.

``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs, or Sentinel. Every command has a
short timeout; a failure raises :class:`StoreUnavailable` and the next command reconnects,
so the router recovers by itself when Redis returns.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from router.api import Counter
from router_plugins.sessions.backend import StoreUnavailable

T = TypeVar("T")

# Delete the lock only when it is still ours (it may have expired and been re-taken).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisBackend:
    __slots__ = ("_client", "_release", "_sentinel", "errors")

    def __init__(self, client: aioredis.Redis, sentinel: Sentinel | None = None) -> None:
        self.errors: Counter | None = None
        """Failed Redis commands, by error class (set by the plugin)."""
        self._client = client
        self._sentinel = sentinel
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, *, timeout: float, ca_file: str | None = None) -> RedisBackend:
        options: dict[str, Any] = {}
        if ca_file is not None and url.startswith("rediss://"):
            options["ssl_ca_certs"] = ca_file
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=15,
            **options,
        )
        return cls(client)

    @classmethod
    def from_sentinel(
        cls,
        hosts: list[tuple[str, int]],
        service: str,
        *,
        timeout: float,
        db: int = 0,
        password: str | None = None,
        sentinel_password: str | None = None,
        ssl: bool = False,
    ) -> RedisBackend:
        kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        sentinel = Sentinel(
            hosts,
            sentinel_kwargs={**kwargs, "password": sentinel_password, "ssl": ssl},
            **kwargs,
        )
        client = sentinel.master_for(service, db=db, password=password, ssl=ssl)
        return cls(client, sentinel)

    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except (RedisError, OSError) as exc:
            if self.errors is not None:
                self.errors.inc(exc.__class__.__name__)
            raise StoreUnavailable(f"Redis: {exc.__class__.__name__}: {exc}") from None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._call(self._client.set(key, value, px=max(1, int(ttl * 1000))))

    async def get(self, key: str, touch: float | None = None) -> bytes | None:
        if touch is None:
            value = await self._call(self._client.get(key))
        else:
            value = await self._call(self._client.getex(key, px=max(1, int(touch * 1000))))
        return value if isinstance(value, bytes) else None

    async def take(self, key: str) -> bytes | None:
        value = await self._call(self._client.getdel(key))
        return value if isinstance(value, bytes) else None

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._call(self._client.delete(*keys))

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        async def run() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.sadd(index, member)
                pipe.pexpire(index, max(1, int(ttl * 1000)), gt=True)
                pipe.pexpire(index, max(1, int(ttl * 1000)), nx=True)
                await pipe.execute()

        await self._call(run())

    async def index_pop(self, index: str) -> list[str]:
        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.smembers(index)
                pipe.delete(index)
                result: list[Any] = await pipe.execute()
                return result

        members = (await self._call(run()))[0]
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def acquire(self, key: str, token: str, ttl: float) -> bool:
        result = await self._call(
            self._client.set(key, token.encode(), px=max(1, int(ttl * 1000)), nx=True)
        )
        return bool(result)

    async def release(self, key: str, token: str) -> None:
        await self._call(self._release(keys=[key], args=[token.encode()]))

    async def ping(self) -> None:
        await self._call(self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()
