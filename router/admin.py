"""The admin listener: /healthz, /readyz, /metrics, /routes. Never on the public port."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from router.observability.metrics import Metrics
from router.routing.holder import TableHolder
from router.routing.watcher import RouteWatcher
from router.tls.store import CertificateStore


class AdminState:
    def __init__(self, holder: TableHolder, metrics: Metrics, watcher: RouteWatcher) -> None:
        self.holder = holder
        self.metrics = metrics
        self.watcher = watcher
        self.draining = False
        self.started = False
        self.certificates: CertificateStore | None = None


ADMIN_STATE = web.AppKey("admin_state", AdminState)


def routes_document(state: AdminState) -> dict[str, Any]:
    table = state.holder.table
    routes = []
    for route in table.routes:
        spec = route.spec
        routes.append(
            {
                "name": spec.name,
                "hosts": spec.hosts or ["*any*"],
                "path": spec.path,
                "path_type": spec.path_type,
                "builtin": spec.builtin,
                "balancer": spec.balancer,
                "plugins": list(route.plugins),
                "endpoints": [
                    {
                        "url": endpoint.url,
                        "healthy": endpoint.ejected_until <= _now(),
                        "outstanding": endpoint.outstanding,
                        "version": dict(endpoint.version),
                    }
                    for endpoint in (route.pool.endpoints if route.pool else ())
                ],
            }
        )
    problems = [
        {"source": p.source, "route": p.route, "message": p.message} for p in state.watcher.problems
    ]
    document: dict[str, Any] = {
        "generation": state.holder.generation,
        "routes": routes,
        "problems": problems,
    }
    store = state.certificates
    if store is not None:
        document["certificates"] = [c.describe() for c in store.certificates()]
        problems.extend(
            {"source": source, "route": None, "message": f"certificate rejected: {message}"}
            for source, message in sorted(store.problems.items())
        )
    return document


def _now() -> float:
    return asyncio.get_running_loop().time()


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(document, option=orjson.OPT_INDENT_2),
        status=status,
        content_type="application/json",
    )


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    state = request.app[ADMIN_STATE]
    if state.draining:
        return web.Response(status=503, text="draining\n")
    if not state.started:
        return web.Response(status=503, text="starting\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    state = request.app[ADMIN_STATE]
    return web.Response(
        text=state.metrics.render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def routes(request: web.Request) -> web.Response:
    return _json(routes_document(request.app[ADMIN_STATE]))


def build_admin_app(state: AdminState) -> web.Application:
    app = web.Application()
    app[ADMIN_STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/routes", routes)
    return app
