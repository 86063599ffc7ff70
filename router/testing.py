"""Helpers for testing the router and plugins against a real, running router.

    async with run_backend(app) as backend, run_router(
        {"routes": [{"name": "app", "upstreams": [{"url": backend.url}]}]}
    ) as router:
        async with ClientSession() as client:
            async with client.get(router.url + "/") as response: ...

``run_router`` listens on free loopback ports and writes its access log to a file that
``RunningRouter.access_log()`` reads back. Plugins under test can be passed in directly
(``plugins={"name": PluginClass}``) without installing an entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from router.app import RouterRuntime
from router.config.loader import LoadedConfig, load_config_text
from router.registry import PluginClass, discover_plugins

__all__ = ["Backend", "RunningRouter", "run_backend", "run_router"]


@dataclass
class Backend:
    url: str
    port: int
    runner: web.BaseRunner


@contextlib.asynccontextmanager
async def run_backend(app: web.Application | web.Server) -> AsyncIterator[Backend]:
    """Serve an aiohttp app (or low-level server) on a free 127.0.0.1 port."""
    runner: web.BaseRunner
    runner = web.AppRunner(app) if isinstance(app, web.Application) else web.ServerRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = _port(runner)
    try:
        yield Backend(f"http://127.0.0.1:{port}", port, runner)
    finally:
        await runner.cleanup()


@dataclass
class RunningRouter:
    runtime: RouterRuntime
    access_log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.runtime.public_port}"

    @property
    def port(self) -> int:
        return self.runtime.public_port

    def port_of(self, listener: str) -> int:
        """The bound port of the listener named ``listener``."""
        return self.runtime.public_ports[listener]

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.runtime.admin_port}"

    async def access_log(self) -> list[dict[str, Any]]:
        """Every access-log line written so far (waits for the writer to flush)."""
        await asyncio.sleep(0.15)
        text = await asyncio.to_thread(self.access_log_path.read_text)
        return [json.loads(line) for line in text.splitlines() if line]


def router_config(overrides: Mapping[str, Any], access_log_path: Path) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listener": {"listen": "127.0.0.1:0"},
        "admin": {"listen": "127.0.0.1:0"},
        "drain": {"delay": 0, "grace": 5},
        "access_log": {"path": str(access_log_path)},
    }
    if "listeners" in overrides:
        del config["listener"]
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@contextlib.asynccontextmanager
async def run_router(
    config: Mapping[str, Any] | LoadedConfig,
    *,
    plugins: Mapping[str, PluginClass] | None = None,
    config_path: Path | None = None,
    dev_mode: bool = False,
) -> AsyncIterator[RunningRouter]:
    """Start a router in this event loop; ``config`` is a dict merged over test defaults."""
    with tempfile.TemporaryDirectory(prefix="commons-router-test-") as tmp:
        log_path = Path(tmp) / "access.log"
        log_path.touch()
        if isinstance(config, LoadedConfig):
            loaded = config
        else:
            loaded = load_config_text(yaml.safe_dump(router_config(config, log_path)), "<test>")
        available = {**discover_plugins(), **(plugins or {})}
        runtime = RouterRuntime(
            loaded, config_path=config_path, dev_mode=dev_mode, available_plugins=available
        )
        await runtime.start()
        try:
            yield RunningRouter(runtime, log_path)
        finally:
            await runtime.stop()


def _port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the runner has no TCP address")
