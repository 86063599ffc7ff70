"""``sessions``: the session store (memory or Redis) other plugins use through a service."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from router.api import (
    DevOptions,
    DevPreset,
    Plugin,
    PluginConfigError,
    PluginServices,
    ServiceKey,
)
from router_plugins.sessions.backend import Backend
from router_plugins.sessions.cookies import CookieSettings
from router_plugins.sessions.crypto import Sealer, new_key, parse_key
from router_plugins.sessions.memory import MemoryBackend
from router_plugins.sessions.redis_store import RedisBackend
from router_plugins.sessions.settings import SessionsConfig
from router_plugins.sessions.store import SessionStore

logger = logging.getLogger("commons_router.sessions")


class SessionService:
    """What the ``sessions`` plugin gives other plugins."""

    __slots__ = ("cookie", "store")

    def __init__(self, store: SessionStore, cookie: CookieSettings) -> None:
        self.store = store
        self.cookie = cookie


SESSIONS = ServiceKey("sessions", SessionService)


def build_backend(config: SessionsConfig) -> Backend:
    if config.store == "memory":
        return MemoryBackend()
    redis = config.redis
    assert redis is not None
    if redis.url is not None:
        return RedisBackend.from_url(
            redis.url.get_secret_value(), timeout=redis.timeout, ca_file=redis.tls_ca_file
        )
    sentinel = redis.sentinel
    assert sentinel is not None
    hosts = []
    for entry in sentinel.hosts:
        host, _, port = entry.rpartition(":")
        hosts.append((host.strip("[]"), int(port or 26379)))
    return RedisBackend.from_sentinel(
        hosts,
        sentinel.service_name,
        timeout=redis.timeout,
        db=sentinel.db,
        password=sentinel.password.get_secret_value() if sentinel.password else None,
        sentinel_password=(
            sentinel.sentinel_password.get_secret_value() if sentinel.sentinel_password else None
        ),
        ssl=sentinel.tls,
    )


class SessionsPlugin(Plugin[SessionsConfig]):
    name = "sessions"
    config_model = SessionsConfig

    @classmethod
    def dev_preset(cls, options: DevOptions) -> DevPreset | None:
        # In-memory sessions for the development login, which is offered on loopback only.
        return DevPreset(order=30) if options.loopback else None

    def __init__(self, config: SessionsConfig, services: PluginServices) -> None:
        super().__init__(config, services)
        self.store: SessionStore | None = None

    def _check_store(self) -> None:
        workers = self.services.router_config.workers
        if self.config.store == "memory" and workers > 1:
            raise PluginConfigError(
                f"the memory store would give each of the {workers} workers its own "
                "sessions: use store 'redis' or workers: 1",
                ("store",),
            )

    async def preflight(self) -> None:
        self._check_store()
        redis = self.config.redis
        if redis is not None and redis.tls_ca_file is not None:
            try:
                await asyncio.to_thread(Path(redis.tls_ca_file).read_bytes)
            except OSError as exc:
                raise PluginConfigError(
                    f"cannot read {redis.tls_ca_file}: {exc.strerror or exc}",
                    ("redis", "tls_ca_file"),
                ) from None

    async def start(self) -> None:
        config = self.config
        self._check_store()
        keys = [parse_key(k.get_secret_value()) for k in config.encryption_keys]
        if not keys:
            # Memory only: sessions die with the process, so a per-process key is enough.
            keys = [parse_key(new_key())]
        backend = build_backend(config)
        if isinstance(backend, RedisBackend):
            backend.errors = self.services.counter(
                "session_store_errors_total", "Failed session-store (Redis) commands.", ("kind",)
            )
        store = SessionStore(
            backend,
            Sealer(keys),
            idle_timeout=config.idle_timeout,
            lifetime=config.lifetime,
            prefix=config.prefix,
            cache_ttl=config.cache,
        )
        self.store = store
        secure = self.services.router_config.serves_tls
        cookie = CookieSettings(config.cookie_name, secure=secure, max_age=config.lifetime)
        self.services.provide(SESSIONS, SessionService(store, cookie))
        if config.store == "redis":
            try:
                await store.ping()
            except Exception as exc:
                # Not fatal: session routes answer 503 until Redis is back.
                logger.warning("session store not reachable at start: %s", exc)

    async def stop(self) -> None:
        if self.store is not None:
            await self.store.close()
