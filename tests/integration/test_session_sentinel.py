"""The Redis store found through a real Sentinel, from the plugin's configuration."""

from __future__ import annotations

from router_plugins.sessions.crypto import Sealer, new_key, parse_key
from router_plugins.sessions.plugin import build_backend
from router_plugins.sessions.settings import SessionsConfig
from router_plugins.sessions.store import SessionStore
from tests.support.redis_server import RedisServer, SentinelServer


async def test_sessions_through_sentinel() -> None:
    master = RedisServer()
    master.start()
    sentinel = SentinelServer(master)
    try:
        sentinel.start()
        key = new_key()
        config = SessionsConfig.model_validate(
            {
                "store": "redis",
                "redis": {
                    "sentinel": {
                        "hosts": [f"127.0.0.1:{sentinel.port}"],
                        "service_name": sentinel.service,
                    }
                },
                "encryption_keys": [key],
            }
        )
        store = SessionStore(
            build_backend(config), Sealer([parse_key(key)]), idle_timeout=60, lifetime=600
        )
        try:
            session = await store.create({"sub": "alice"})
            loaded = await store.get(session.id)
            assert loaded is not None and loaded.claims == {"sub": "alice"}
        finally:
            await store.close()
        # The record really is in the master Sentinel named.
        direct = SessionStore(
            build_backend(
                SessionsConfig.model_validate(
                    {"store": "redis", "redis": {"url": master.url}, "encryption_keys": [key]}
                )
            ),
            Sealer([parse_key(key)]),
            idle_timeout=60,
            lifetime=600,
        )
        try:
            assert await direct.get(session.id) is not None
        finally:
            await direct.close()
    finally:
        sentinel.close()
        master.close()
