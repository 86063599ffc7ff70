"""In-process storage: the embedded default, for one worker (``commons-router dev``)."""

from __future__ import annotations

import time


class MemoryBackend:
    """A dict with expiry. Expired entries are dropped when read and by a periodic sweep."""

    __slots__ = ("_data", "_indexes", "_next_sweep")

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._indexes: dict[str, tuple[set[str], float]] = {}
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 30.0
        for key in [k for k, (_, until) in self._data.items() if until <= now]:
            del self._data[key]
        for key in [k for k, (_, until) in self._indexes.items() if until <= now]:
            del self._indexes[key]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        now = time.monotonic()
        self._sweep(now)
        self._data[key] = (value, now + ttl)

    async def get(self, key: str, touch: float | None = None) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        if entry[1] <= now:
            del self._data[key]
            return None
        if touch is not None:
            self._data[key] = (entry[0], now + touch)
        return entry[0]

    async def take(self, key: str) -> bytes | None:
        value = await self.get(key)
        self._data.pop(key, None)
        return value

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        now = time.monotonic()
        members, until = self._indexes.get(index, (set(), 0.0))
        if until <= now:
            members = set()
        members.add(member)
        self._indexes[index] = (members, max(until, now + ttl))

    async def index_pop(self, index: str) -> list[str]:
        members, until = self._indexes.pop(index, (set(), 0.0))
        return sorted(members) if until > time.monotonic() else []

    async def acquire(self, key: str, token: str, ttl: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.put(key, token.encode(), ttl)
        return True

    async def release(self, key: str, token: str) -> None:
        if await self.get(key) == token.encode():
            await self.delete(key)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self._indexes.clear()
