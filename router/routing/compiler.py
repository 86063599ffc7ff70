"""Route specs -> compiled routes with their plugin chains. Pure: no I/O."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from router.api.errors import RouterHTTPError
from router.api.plugin import Handler, Middleware, Plugin
from router.api.provider import RouteProblem
from router.config.loader import format_location
from router.config.models import PathMatch, Route
from router.observability.metrics import Metrics
from router.proxy.upstream import EndpointRegistry, UpstreamPool
from router.registry import PluginSpec, route_plugin_configs
from router.routing.compiled import CompiledRoute
from router.routing.table import RouteTable

logger = logging.getLogger("commons_router.plugins")


def isolate(
    plugin: Plugin[Any],
    middleware: Middleware,
    next_handler: Handler,
    metrics: Metrics,
) -> Handler:
    """Run one plugin's middleware so that its failure answers 500 and is logged by name."""
    name = plugin.name
    guards = plugin.guards_access

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await middleware(request, next_handler)
        except (RouterHTTPError, web.HTTPException, asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            metrics.plugin_error(name)
            logger.exception(
                "plugin %s failed on %s %s%s",
                name,
                request.method,
                request.path,
                " (request denied: fail closed)" if guards else "",
            )
            raise RouterHTTPError(500, f"The {name!r} plugin failed on this request.") from None

    return handler


class RouteCompiler:
    def __init__(
        self,
        plugins: Sequence[tuple[PluginSpec, Plugin[Any]]],
        terminal_proxy: Handler,
        terminal_builtin: dict[str, Handler],
        endpoints: EndpointRegistry,
        metrics: Metrics,
        default_max_body: int,
        path_match: PathMatch | None = None,
    ) -> None:
        self._plugins = plugins
        self._path_match = path_match
        self._specs = [spec for spec, _ in plugins]
        self._terminal_proxy = terminal_proxy
        self._terminal_builtin = terminal_builtin
        self._endpoints = endpoints
        self._metrics = metrics
        self._default_max_body = default_max_body
        self._previous: dict[int, CompiledRoute] = {}
        """The last table's compiled routes by ``id(spec)``: a provider that republishes
        the same Route object (unchanged) gets it back without recompiling."""

    def _unavailable(self, route: Route) -> CompiledRoute | None:
        """A route that answers 503 in place of ``route``, when that builtin exists."""
        handler = self._terminal_builtin.get("unavailable")
        if handler is None:
            return None
        return CompiledRoute(
            route,
            pool=None,
            metrics=self._metrics.route(route.name),
            default_max_body=self._default_max_body,
            plugins=(),
            handler=handler,
        )

    def compile_one(self, route: Route, source: str) -> CompiledRoute | RouteProblem:
        configs, issues = route_plugin_configs(route, self._specs, ())
        if issues:
            message = "; ".join(f"{format_location(i.location)}: {i.message}" for i in issues)
            return RouteProblem(source, message + "; route disabled", route.name)
        pool = None
        if route.upstreams:
            pool = UpstreamPool(
                [(self._endpoints.get(e), e.weight) for e in route.upstreams],
                balancer=route.balancer,
                max_failures=route.health.max_failures,
                ejection=route.health.ejection,
            )
        handler: Handler = (
            self._terminal_builtin[route.builtin] if route.builtin else self._terminal_proxy
        )
        applied: list[str] = []
        for spec, plugin in reversed(self._plugins):
            middleware = plugin.middleware(route, configs.get(spec.name))
            if middleware is not None:
                handler = isolate(plugin, middleware, handler, self._metrics)
                applied.append(spec.name)
        return CompiledRoute(
            route,
            pool=pool,
            metrics=self._metrics.route(route.name),
            default_max_body=self._default_max_body,
            plugins=tuple(reversed(applied)),
            handler=handler,
        )

    def __call__(
        self, routes: Sequence[Route]
    ) -> tuple[RouteTable[CompiledRoute], list[RouteProblem]]:
        compiled: list[CompiledRoute] = []
        problems: list[RouteProblem] = []
        previous, current = self._previous, {}
        for route in routes:
            reused = previous.get(id(route))
            # The cached CompiledRoute holds its spec, so the id cannot have been reused.
            if reused is not None and reused.spec is route:
                compiled.append(reused)
                current[id(route)] = reused
                continue
            try:
                result = self.compile_one(route, f"route:{route.name}")
            except Exception as exc:
                # A plugin raising while building its middleware disables this route only.
                logger.exception("building route %s failed", route.name)
                result = RouteProblem(f"route:{route.name}", f"{exc}; route disabled", route.name)
            if isinstance(result, RouteProblem):
                placeholder = self._unavailable(route)
                if placeholder is None:
                    problems.append(result)
                else:
                    # SECURITY: the broken route (maybe its auth settings) serves nothing,
                    # but keeps its host and path, so no less specific route answers.
                    compiled.append(placeholder)
                    message = result.message.removesuffix("; route disabled")
                    problems.append(
                        RouteProblem(result.source, message + "; the route answers 503", route.name)
                    )
            else:
                compiled.append(result)
                current[id(route)] = result
        self._previous = current
        self._endpoints.retain(e.url for c in compiled for e in c.spec.upstreams)
        return RouteTable(compiled, self._path_match), problems
