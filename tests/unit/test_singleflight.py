"""One piece of work per key, shared by concurrent callers."""

from __future__ import annotations

import asyncio

import pytest

from router_plugins.sessions.crypto import Sealer, new_key, parse_key
from router_plugins.sessions.memory import MemoryBackend
from router_plugins.sessions.singleflight import single_flight
from router_plugins.sessions.store import SessionStore


async def test_concurrent_callers_share_one_call() -> None:
    running: dict[str, asyncio.Future[int]] = {}
    calls = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(single_flight(running, "k", work)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [42] * 20
    assert calls == 1
    assert running == {}


async def test_failures_reach_every_caller() -> None:
    running: dict[str, asyncio.Future[int]] = {}

    async def work() -> int:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    results = await asyncio.gather(
        *(single_flight(running, "k", work) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results)


async def test_a_cancelled_worker_does_not_cancel_the_others() -> None:
    running: dict[str, asyncio.Future[str]] = {}
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "done"

    first = asyncio.create_task(single_flight(running, "k", work))
    await asyncio.sleep(0)
    second = asyncio.create_task(single_flight(running, "k", work))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "done"
    assert calls == 2


class CountingBackend(MemoryBackend):
    __slots__ = ("reads",)

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: str, touch: float | None = None) -> bytes | None:
        self.reads += 1
        await asyncio.sleep(0.01)  # a round trip
        return await super().get(key, touch)


async def test_cache_expiry_under_load_reads_the_store_once() -> None:
    backend = CountingBackend()
    store = SessionStore(
        backend, Sealer([parse_key(new_key())]), idle_timeout=60, lifetime=600, cache_ttl=60
    )
    session = await store.create({"sub": "a"})
    results = await asyncio.gather(*(store.get(session.id) for _ in range(50)))
    assert all(r is not None and r.id == session.id for r in results)
    assert backend.reads == 1
