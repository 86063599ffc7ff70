"""One contract, every store: the same tests run against memory and a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from router_plugins.sessions.backend import Backend, StoreUnavailable
from router_plugins.sessions.crypto import Sealer, new_key, parse_key
from router_plugins.sessions.memory import MemoryBackend
from router_plugins.sessions.model import digest
from router_plugins.sessions.redis_store import RedisBackend
from router_plugins.sessions.store import SessionStore
from tests.support.redis_server import RedisServer

KEY = new_key()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def make_backend(kind: str, server: RedisServer) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    return RedisBackend.from_url(server.url, timeout=1.0)


@pytest.fixture(params=["memory", "redis"])
async def backend(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[Backend]:
    made = make_backend(request.param, redis_server)
    try:
        yield made
    finally:
        await made.close()


def store_on(
    backend: Backend, *, idle: float = 60, lifetime: float = 600, key: str = KEY
) -> SessionStore:
    # A unique prefix per store keeps tests on the shared Redis apart.
    prefix = f"test:{digest(str(id(backend)))[:8]}:{idle}:{lifetime}:"
    return SessionStore(
        backend, Sealer([parse_key(key)]), idle_timeout=idle, lifetime=lifetime, prefix=prefix
    )


async def test_create_then_get_round_trips(backend: Backend) -> None:
    store = store_on(backend)
    session = await store.create(
        {"sub": "alice", "email": "alice@example.org"},
        issuer="https://idp",
        sid="s1",
        access_token="at",
        refresh_token="rt",
        access_expires=123.0,
    )
    loaded = await store.get(session.id)
    assert loaded is not None
    assert loaded.claims == {"sub": "alice", "email": "alice@example.org"}
    assert (loaded.access_token, loaded.refresh_token, loaded.sid) == ("at", "rt", "s1")


async def test_session_ids_are_new_and_long(backend: Backend) -> None:
    store = store_on(backend)
    ids = {(await store.create({"sub": "a"})).id for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) >= 43 for i in ids)  # 32 random bytes, base64url


async def test_unknown_empty_and_oversized_ids_are_no_session(backend: Backend) -> None:
    store = store_on(backend)
    assert await store.get("nope") is None
    assert await store.get("") is None
    assert await store.get("x" * 10_000) is None


async def test_delete_ends_the_session(backend: Backend) -> None:
    store = store_on(backend)
    session = await store.create({"sub": "a"})
    await store.delete(session.id)
    assert await store.get(session.id) is None


async def test_idle_timeout(backend: Backend) -> None:
    store = store_on(backend, idle=0.3)
    session = await store.create({"sub": "a"})
    # Activity keeps it alive past one idle period...
    for _ in range(4):
        await asyncio.sleep(0.1)
        assert await store.get(session.id) is not None
    # ...idleness ends it.
    await asyncio.sleep(0.6)
    assert await store.get(session.id) is None


async def test_absolute_lifetime_ends_an_active_session(backend: Backend) -> None:
    store = store_on(backend, idle=60, lifetime=0.4)
    session = await store.create({"sub": "a"})
    assert await store.get(session.id) is not None
    await asyncio.sleep(0.5)
    assert await store.get(session.id) is None


async def test_tokens_are_encrypted_at_rest(backend: Backend) -> None:
    store = store_on(backend)
    session = await store.create({"sub": "a"}, refresh_token="refresh-secret-123")
    raw = await backend.get(f"{store._prefix}session:{session.key}")
    assert raw is not None
    assert b"refresh-secret-123" not in raw
    assert session.id.encode() not in raw
    assert b'"sub"' not in raw


async def test_records_are_stored_under_a_hash_of_the_id(backend: Backend) -> None:
    store = store_on(backend)
    session = await store.create({"sub": "a"})
    assert await backend.get(f"{store._prefix}session:{session.id}") is None
    assert await backend.get(f"{store._prefix}session:{digest(session.id)}") is not None


async def test_key_rotation(backend: Backend) -> None:
    old, new = new_key(), new_key()
    before = store_on(backend, key=old)
    session = await before.create({"sub": "a"})
    prefix = before._prefix
    rotated = SessionStore(
        backend,
        Sealer([parse_key(new), parse_key(old)]),
        idle_timeout=60,
        lifetime=600,
        prefix=prefix,
    )
    loaded = await rotated.get(session.id)
    assert loaded is not None
    await rotated.save(loaded)  # re-sealed with the new key
    only_new = SessionStore(
        backend, Sealer([parse_key(new)]), idle_timeout=60, lifetime=600, prefix=prefix
    )
    assert await only_new.get(session.id) is not None
    only_old = SessionStore(
        backend, Sealer([parse_key(old)]), idle_timeout=60, lifetime=600, prefix=prefix
    )
    assert await only_old.get(session.id) is None  # unreadable: treated as no session


async def test_tampered_record_is_no_session(backend: Backend) -> None:
    store = store_on(backend)
    session = await store.create({"sub": "a"})
    key = f"{store._prefix}session:{session.key}"
    raw = await backend.get(key)
    assert raw is not None
    await backend.put(key, raw[:-1] + bytes([raw[-1] ^ 1]), 60)
    assert await store.get(session.id) is None


async def test_record_cannot_be_moved_to_another_id(backend: Backend) -> None:
    store = store_on(backend)
    a = await store.create({"sub": "a"})
    b = await store.create({"sub": "b"})
    raw = await backend.get(f"{store._prefix}session:{a.key}")
    assert raw is not None
    await backend.put(f"{store._prefix}session:{b.key}", raw, 60)
    assert await store.get(b.id) is None


async def test_save_updates_tokens(backend: Backend) -> None:
    store = store_on(backend)
    session = await store.create({"sub": "a"}, access_token="one")
    session.access_token = "two"
    await store.save(session)
    loaded = await store.get(session.id, cached=False)
    assert loaded is not None and loaded.access_token == "two"


async def test_delete_for_sid_and_sub(backend: Backend) -> None:
    store = store_on(backend)
    a1 = await store.create({"sub": "alice"}, issuer="https://idp", sid="browser-1")
    a2 = await store.create({"sub": "alice"}, issuer="https://idp", sid="browser-2")
    b = await store.create({"sub": "bob"}, issuer="https://idp", sid="browser-3")
    other_idp = await store.create({"sub": "alice"}, issuer="https://other", sid="browser-1")
    assert await store.delete_for("https://idp", sid="browser-1") == 1
    assert await store.get(a1.id) is None
    assert await store.get(a2.id) is not None
    assert await store.delete_for("https://idp", sub="alice") >= 1
    assert await store.get(a2.id) is None
    assert await store.get(b.id) is not None
    assert await store.get(other_idp.id) is not None


async def test_login_flows_are_one_time_and_separate(backend: Backend) -> None:
    store = store_on(backend)
    await store.put_flow("state-1", {"verifier": "v1"}, 60)
    await store.put_flow("state-2", {"verifier": "v2"}, 60)
    assert await store.take_flow("state-2") == {"verifier": "v2"}
    assert await store.take_flow("state-1") == {"verifier": "v1"}
    assert await store.take_flow("state-1") is None
    assert await store.take_flow("") is None


async def test_records_of_other_kinds_are_kept_apart_and_readable_again(
    backend: Backend,
) -> None:
    store = store_on(backend)
    await store.put_flow("state", {"verifier": "v"}, 60)
    await store.put_flow("state", {"rd": "/page"}, 60, kind="done")
    assert await store.read_flow("state", kind="done") == {"rd": "/page"}
    assert await store.read_flow("state", kind="done") == {"rd": "/page"}
    assert await store.take_flow("state") == {"verifier": "v"}
    assert await store.read_flow("state", kind="logout") is None
    assert await store.take_flow("state", kind="done") == {"rd": "/page"}
    assert await store.read_flow("state", kind="done") is None


async def test_session_records_of_a_newer_version_are_read() -> None:
    import orjson

    from router_plugins.sessions import Session

    session = Session(id="x" * 43, claims={"sub": "a"}, created=1.0, expires=2.0)
    data = orjson.loads(session.to_bytes())
    data["field_of_a_later_version"] = 1
    assert Session.from_bytes(orjson.dumps(data)) == session


async def test_login_flows_expire(backend: Backend) -> None:
    store = store_on(backend)
    await store.put_flow("state", {"verifier": "v"}, 0.2)
    await asyncio.sleep(0.4)
    assert await store.take_flow("state") is None


async def test_lock_admits_one_holder_at_a_time(backend: Backend) -> None:
    store = store_on(backend)
    inside = 0
    most = 0

    async def worker() -> None:
        nonlocal inside, most
        async with store.lock("refresh", ttl=5, wait=5) as acquired:
            assert acquired
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.02)
            inside -= 1

    await asyncio.gather(*(worker() for _ in range(10)))
    assert most == 1


async def test_lock_gives_up_after_waiting(backend: Backend) -> None:
    store = store_on(backend)
    async with store.lock("held", ttl=5, wait=0) as first:
        assert first
        async with store.lock("held", ttl=5, wait=0.1) as second:
            assert not second
    async with store.lock("held", ttl=5, wait=0) as again:
        assert again


async def test_cache_is_bypassed_after_delete(backend: Backend) -> None:
    store = store_on(backend)
    store._cache_ttl = 60
    session = await store.create({"sub": "a"})
    assert await store.get(session.id) is not None
    await store.delete(session.id)
    assert await store.get(session.id) is None


async def test_dead_redis_raises_store_unavailable_and_recovers() -> None:
    server = RedisServer()
    server.start()
    backend = RedisBackend.from_url(server.url, timeout=0.5)
    store = store_on(backend)
    try:
        session = await store.create({"sub": "a"})
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.get(session.id)
        server.start()  # empty again: the session is gone, but the store works
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                assert await store.get(session.id) is None
                break
            except StoreUnavailable:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)
        fresh = await store.create({"sub": "b"})
        assert await store.get(fresh.id) is not None
    finally:
        await backend.close()
        server.close()


async def test_cache_is_evicted_by_back_channel_logout(backend: Backend) -> None:
    store = store_on(backend)
    store._cache_ttl = 60
    session = await store.create({"sub": "a"}, issuer="https://idp.test", sid="idp-1")
    assert await store.get(session.id) is not None
    assert store.cached(session.id) is not None
    assert await store.delete_for("https://idp.test", sid="idp-1") == 1
    assert store.cached(session.id) is None
    assert await store.get(session.id) is None


async def test_cached_session_is_short_lived_and_never_outlives_the_session(
    backend: Backend,
) -> None:
    store = store_on(backend)
    store._cache_ttl = 60
    session = await store.create({"sub": "a"})
    loaded = await store.get(session.id)
    assert loaded is not None and store.cached(session.id) is loaded
    loaded.expires = 0  # the session's absolute lifetime ran out
    assert store.cached(session.id) is None
    store._cache_ttl = 0.05
    again = await store.get(session.id)
    assert again is not None and store.cached(session.id) is again
    await asyncio.sleep(0.1)
    assert store.cached(session.id) is None  # past the cache TTL: the store is asked again
