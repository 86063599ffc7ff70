"""The supervisor's shared providers (``workers > 1``): plugins that set
``shares_providers`` are started here, once, and their routes relayed to every worker."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import ClientSession

from router.api.plugin import Plugin, PluginServices
from router.config.loader import ConfigError, LoadedConfig
from router.registry import discover_plugins, resolve_plugins, start_plugin
from router.routing.relay import RouteHub
from router.routing.watcher import run_provider

logger = logging.getLogger("commons_router.workers")


class SharedProviders:
    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.hub = RouteHub()
        self.plugins: list[Plugin[Any]] = []
        self._session: ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, socket_path: str) -> bool:
        """Start the shared plugins and serve their routes on ``socket_path``; False when
        no enabled plugin shares its providers."""
        specs, issues = resolve_plugins(
            self.loaded.config, discover_plugins(), self.loaded.line_map
        )
        if issues:
            raise ConfigError(self.loaded.source, issues)
        shared = [spec for spec in specs if spec.cls.shares_providers]
        if not shared:
            return False
        self._session = ClientSession()
        services = PluginServices(
            http=self._session,
            dev_mode=False,
            logger=logging.getLogger("commons_router.plugin"),
            router_config=self.loaded.config,
        )
        try:
            for spec in shared:
                plugin = await start_plugin(
                    spec, services, self.loaded.source, self.loaded.line_map
                )
                self.plugins.append(plugin)
            await self.hub.serve(socket_path)
            for plugin in self.plugins:
                for provider in plugin.providers():
                    self._tasks.append(
                        asyncio.create_task(
                            run_provider(provider, self.hub.publish), name=f"shared {provider.name}"
                        )
                    )
            # Providers that already have their state (plugins sync in start()) publish it
            # in their first step: before any worker connects.
            await asyncio.sleep(0)
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "shared providers for all workers: %s",
            ", ".join(type(plugin).name for plugin in self.plugins),
        )
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.hub.close()
        for plugin in reversed(self.plugins):
            try:
                await plugin.stop()
            except Exception:
                logger.exception("plugin %s failed to stop", type(plugin).name)
        self.plugins = []
        if self._session is not None:
            await self._session.close()
            self._session = None
