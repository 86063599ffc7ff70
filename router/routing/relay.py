"""Shared providers: run once per router process group, their routes relayed to workers.

With ``workers: N``, a provider that watches something outside (the Kubernetes API) would
otherwise run in every worker: N watches, N caches. Plugins that set
``Plugin.shares_providers`` are started in the supervisor instead; their providers publish
there, and :class:`RouteHub` sends every update to every worker over a Unix socket. A
worker's :class:`RouteRelay` is an ordinary provider to its route watcher.

Wire format: one JSON document per line. A worker that connects (at start, or restarted)
first gets the current state of every shared provider, then a ``{"ready": true}`` line,
then each update as it is published. An update names the provider's routes in order and
carries only the routes that are new objects since the last message (the others are
referenced by name); the worker keeps the Route objects it has for the rest, so its
compiler reuses their compiled form, as it does when the provider runs in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from router.api.provider import ProviderUpdate, Publish, RouteProblem
from router.config.models import Route

logger = logging.getLogger("commons_router.routing")

MAX_LINE = 1 << 30
"""Largest message (the whole state of a large cluster at connection)."""
MAX_BACKLOG = 256 * 1024 * 1024
"""A worker that lets this much pile up unread is disconnected; it reconnects and gets
the current state, rather than the supervisor holding every update for it."""


def _problem(problem: RouteProblem) -> dict[str, Any]:
    return {"source": problem.source, "message": problem.message, "route": problem.route}


def encode(
    update: ProviderUpdate, known: dict[str, Route] | None
) -> tuple[bytes, dict[str, Route]]:
    """The message for ``update`` to a receiver that holds ``known`` (None: nothing), and
    what it holds afterwards."""
    changed = {
        route.name: route.model_dump(mode="json", exclude_defaults=True)
        for route in update.routes
        if known is None or known.get(route.name) is not route
    }
    message = {
        "provider": update.provider,
        "order": [route.name for route in update.routes],
        "routes": changed,
        "problems": [_problem(p) for p in update.problems],
    }
    return orjson.dumps(message) + b"\n", {route.name: route for route in update.routes}


def decode(line: bytes, known: dict[str, dict[str, Route]]) -> ProviderUpdate:
    """The update in ``line``; ``known`` (provider -> routes by name) is brought up to date."""
    message = orjson.loads(line)
    provider = message["provider"]
    held = known.get(provider, {})
    fresh = {name: Route.model_validate(data) for name, data in message["routes"].items()}
    routes = tuple(fresh.get(name) or held[name] for name in message["order"])
    known[provider] = {route.name: route for route in routes}
    problems = tuple(
        RouteProblem(p["source"], p["message"], p["route"]) for p in message["problems"]
    )
    return ProviderUpdate(provider, routes, problems)


class RouteHub:
    """The supervisor's side: the latest update of each shared provider, sent to workers."""

    def __init__(self) -> None:
        self._latest: dict[str, ProviderUpdate] = {}
        self._clients: dict[asyncio.StreamWriter, dict[str, dict[str, Route]]] = {}
        self._server: asyncio.Server | None = None
        self.connections = 0

    def publish(self, update: ProviderUpdate) -> None:
        self._latest[update.provider] = update
        for writer, held in list(self._clients.items()):
            self._send(writer, held, update)

    def _send(
        self,
        writer: asyncio.StreamWriter,
        held: dict[str, dict[str, Route]],
        update: ProviderUpdate,
    ) -> None:
        if writer.is_closing():
            self._clients.pop(writer, None)
            return
        if writer.transport.get_write_buffer_size() > MAX_BACKLOG:
            logger.warning("route relay: a worker does not read its updates; disconnecting it")
            self._clients.pop(writer, None)
            writer.close()
            return
        data, held[update.provider] = encode(update, held.get(update.provider))
        writer.write(data)

    async def serve(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._connected, path=path, limit=MAX_LINE)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        held: dict[str, dict[str, Route]] = {}
        for update in self._latest.values():
            self._send(writer, held, update)
        writer.write(b'{"ready": true}\n')
        self._clients[writer] = held
        try:
            await reader.read()  # until the worker goes away
        except ConnectionError:
            pass
        finally:
            self._clients.pop(writer, None)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()


class RouteRelay:
    """A worker's provider: the routes of the shared providers, from the supervisor."""

    name = "relay"

    def __init__(self, path: str) -> None:
        self.path = path
        self._known: dict[str, dict[str, Route]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> list[ProviderUpdate]:
        """Connect and read the current state (call before :meth:`run`)."""
        self._known = {}
        self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=MAX_LINE)
        return [update async for update in self._updates(until_ready=True)]

    async def _updates(self, until_ready: bool = False) -> Any:
        assert self._reader is not None
        while True:
            line = await self._reader.readline()
            if not line:
                raise ConnectionError("the supervisor closed the route relay")
            if line.startswith(b'{"ready"'):
                if until_ready:
                    return
                continue
            yield decode(line, self._known)

    async def run(self, publish: Publish) -> None:
        try:
            while True:
                try:
                    async for update in self._updates():
                        publish(update)
                except (OSError, ValueError) as exc:
                    # Meanwhile the last routes keep serving. If the supervisor is gone,
                    # this worker drains and exits on its own.
                    logger.warning("route relay: %s; keeping the last routes, reconnecting", exc)
                self._close()
                await asyncio.sleep(1.0)
                with contextlib.suppress(OSError, ValueError):
                    for update in await self.connect():
                        publish(update)
        finally:
            self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
