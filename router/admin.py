"""The admin listener: / (home page), /status, /healthz, /readyz, /metrics, /routes.
Never on the public port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from router.admin_page import (
    PAGE_HEADERS,
    RATE_WINDOW,
    RateSampler,
    render_html,
    route_entries,
    route_summary,
    router_section,
)
from router.observability.metrics import CONTENT_TYPE, Metrics
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
        self.rates = RateSampler(metrics)
        self.global_plugins: tuple[str, ...] = ()
        """Plugins whose middleware runs on every request (before routing)."""
        self.certificates: CertificateStore | None = None


ADMIN_STATE = web.AppKey("admin_state", AdminState)


def routes_document(state: AdminState) -> dict[str, Any]:
    now = _now()
    routes = [route_summary(r, now, state.global_plugins) for r in state.holder.table.routes]
    document: dict[str, Any] = {"generation": state.holder.generation, "routes": routes}
    return _with_problems(document, state)


def status_document(state: AdminState) -> dict[str, Any]:
    """Everything the home page shows, as data."""
    rates, span = state.rates.rates()
    document: dict[str, Any] = {
        "router": router_section(state.global_plugins),
        "generation": state.holder.generation,
        "rate_window_seconds": round(span if span > 0 else RATE_WINDOW, 1),
        "routes": route_entries(state.holder.table.routes, rates, _now(), state.global_plugins),
    }
    return _with_problems(document, state)


def _with_problems(document: dict[str, Any], state: AdminState) -> dict[str, Any]:
    """Add the route problems and, with TLS, the certificates served and those rejected."""
    problems = [
        {"source": p.source, "route": p.route, "message": p.message}
        for p in state.watcher.problems
    ]
    store = state.certificates
    if store is not None:
        document["certificates"] = [c.describe() for c in store.certificates()]
        problems.extend(
            {"source": source, "route": None, "message": f"certificate rejected: {message}"}
            for source, message in sorted(store.problems.items())
        )
    document["problems"] = problems
    return document


def wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def html_page(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


async def home(request: web.Request) -> web.Response:
    document = status_document(request.app[ADMIN_STATE])
    if wants_json(request):
        return _json(document)
    return html_page(render_html(document))


async def status(request: web.Request) -> web.Response:
    return _json(status_document(request.app[ADMIN_STATE]))


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
        body=state.metrics.render().encode(),
        headers={"Content-Type": CONTENT_TYPE, "X-Content-Type-Options": "nosniff"},
    )


async def routes(request: web.Request) -> web.Response:
    return _json(routes_document(request.app[ADMIN_STATE]))


def build_admin_app(state: AdminState) -> web.Application:
    app = web.Application()
    app[ADMIN_STATE] = state
    app.cleanup_ctx.append(_sample_rates)
    app.router.add_get("/", home)
    app.router.add_get("/status", status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/routes", routes)
    return app


async def _sample_rates(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[ADMIN_STATE].rates.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
