"""The plugin API, exercised through a running router."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from aiohttp import ClientSession, web
from pydantic import BaseModel, ConfigDict

from router.api import (
    Handler,
    Middleware,
    NoConfig,
    Plugin,
    ProviderUpdate,
    Publish,
    RouterHTTPError,
    ServiceKey,
    context_of,
)
from router.config.models import Route
from router.registry import discover_plugins
from router.testing import Backend, run_router


class TagConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tag: str


class TagRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    suffix: str


def make_tag_plugin(plugin_name: str) -> type[Plugin[TagConfig]]:
    class TagPlugin(Plugin[TagConfig]):
        name = plugin_name
        config_model = TagConfig
        route_config_model = TagRoute

        def middleware(self, route: Route, route_config: Any) -> Middleware:
            tag = self.config.tag + (route_config.suffix if route_config else "")

            async def tag_request(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
                ctx = context_of(request)
                previous = (ctx.upstream_headers or {}).get("X-Tags")
                ctx.add_upstream_header("X-Tags", f"{previous},{tag}" if previous else tag)
                ctx.add_log_field(f"tag_{plugin_name}", tag)
                response = await handler(request)
                response.headers.add("X-Seen-By", plugin_name)
                return response

            return tag_request

    return TagPlugin


class ExplodingPlugin(Plugin[NoConfig]):
    name = "exploding"
    guards_access = True

    def middleware(self, route: Route, route_config: Any) -> Middleware:
        async def explode(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/boom"):
                raise KeyError("plugin bug")
            if request.path.startswith("/deny"):
                raise RouterHTTPError(403, "Denied by policy.")
            return await handler(request)

        return explode


def headers_seen(document: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in document["headers"]}


async def test_plugins_wrap_in_config_order_with_route_settings(
    backend: Backend, client: ClientSession
) -> None:
    config = {
        "plugins": [
            {"name": "first", "config": {"tag": "one"}},
            {"name": "second", "config": {"tag": "two"}},
        ],
        "routes": [
            {
                "name": "app",
                "upstreams": [{"url": backend.url}],
                "plugins": {"second": {"suffix": "-app"}},
            }
        ],
    }
    plugins = {"first": make_tag_plugin("first"), "second": make_tag_plugin("second")}
    async with run_router(config, plugins=plugins) as router:
        async with client.get(router.url + "/") as response:
            seen = headers_seen(await response.json())
            # Responses unwind inside out: the last plugin sees the response first.
            assert response.headers.getall("X-Seen-By") == ["second", "first"]
        assert seen["x-tags"] == "one,two-app"
        line = (await router.access_log())[-1]
        assert line["tag_first"] == "one"
        assert line["tag_second"] == "two-app"
        async with client.get(router.admin_url + "/routes") as response:
            (route,) = (await response.json())["routes"]
        # Every plugin that acts on the route, not only those with a per-route block.
        assert route["plugins"] == ["first", "second"]


async def test_plugin_exception_is_500_logged_by_name_and_router_survives(
    backend: Backend, client: ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    config = {
        "plugins": [{"name": "exploding"}],
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }
    async with run_router(config, plugins={"exploding": ExplodingPlugin}) as router:
        with caplog.at_level(logging.ERROR, logger="commons_router.plugins"):
            async with client.get(router.url + "/boom") as response:
                assert response.status == 500
                body = await response.text()
                assert "exploding" in body
                assert "Traceback" not in body and "KeyError" not in body
        assert any(
            "plugin exploding failed" in r.getMessage() and "fail closed" in r.getMessage()
            for r in caplog.records
        )
        async with client.get(router.url + "/deny") as response:
            assert response.status == 403
        async with client.get(router.url + "/fine") as response:
            assert response.status == 200
        metrics = await (await client.get(router.admin_url + "/metrics")).text()
        assert 'commons_router_plugin_errors_total{plugin="exploding"} 1' in metrics


class StaticRoutesProvider:
    name = "static-test"

    def __init__(self, url: str) -> None:
        self.url = url
        self.published = asyncio.Event()

    async def run(self, publish: Publish) -> None:
        route = Route.model_validate(
            {"name": "from-provider", "path": "/provided", "upstreams": [{"url": self.url}]}
        )
        publish(ProviderUpdate(self.name, (route,)))
        self.published.set()
        await asyncio.Event().wait()


GREETING = ServiceKey("greeting", str)


class ProvidingPlugin(Plugin[NoConfig]):
    name = "providing"
    instances: list[ProvidingPlugin] = []  # noqa: RUF012

    async def start(self) -> None:
        self.services.provide(GREETING, "hello")
        self.provider = StaticRoutesProvider(self.services.backend_url)  # type: ignore[attr-defined]
        ProvidingPlugin.instances.append(self)

    def providers(self) -> Sequence[StaticRoutesProvider]:
        return (self.provider,)


class ConsumingPlugin(Plugin[NoConfig]):
    name = "consuming"

    def middleware(self, route: Route, route_config: Any) -> Middleware:
        greeting = self.services.require(GREETING)

        async def greet(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            context_of(request).add_upstream_header("X-Greeting", greeting)
            return await handler(request)

        return greet


async def test_providers_and_services(backend: Backend, client: ClientSession) -> None:
    class BoundProviding(ProvidingPlugin):
        async def start(self) -> None:
            self.services.backend_url = backend.url  # type: ignore[attr-defined]
            await super().start()

    config = {
        "plugins": [{"name": "providing"}, {"name": "consuming"}],
        "routes": [{"name": "app", "builtin": "echo"}],
    }
    plugins = {"providing": BoundProviding, "consuming": ConsumingPlugin}
    async with run_router(config, plugins=plugins) as router:
        await asyncio.wait_for(ProvidingPlugin.instances[-1].provider.published.wait(), 5)
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            async with client.get(router.url + "/provided/x") as response:
                if response.headers.get("Content-Type", "").startswith("application/json"):
                    seen = await response.json()
                    break
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert seen["target"] == "/provided/x"
        assert headers_seen(seen)["x-greeting"] == "hello"


def test_builtin_plugins_are_found_through_entry_points() -> None:
    assert "ip_filter" in discover_plugins()


async def test_ip_filter_per_route(backend: Backend, client: ClientSession) -> None:
    config = {
        "plugins": [{"name": "ip_filter", "config": {"deny": ["10.0.0.0/8"]}}],
        "routes": [
            {"name": "open", "path": "/", "upstreams": [{"url": backend.url}]},
            {
                "name": "office",
                "path": "/office",
                "upstreams": [{"url": backend.url}],
                "plugins": {"ip_filter": {"allow": ["192.168.0.0/16"]}},
            },
            {
                "name": "local",
                "path": "/local",
                "upstreams": [{"url": backend.url}],
                "plugins": {"ip_filter": {"allow": ["127.0.0.0/8"]}},
            },
        ],
    }
    async with run_router(config) as router:
        assert (await client.get(router.url + "/")).status == 200
        assert (await client.get(router.url + "/office/x")).status == 403
        assert (await client.get(router.url + "/local/x")).status == 200
        # An untrusted client cannot claim another address with X-Forwarded-For.
        spoofed = await client.get(
            router.url + "/office/x", headers={"X-Forwarded-For": "192.168.1.1"}
        )
        assert spoofed.status == 403


class ViewReader(Plugin[NoConfig]):
    name = "viewer"
    seen: ClassVar[list[dict[str, Any]]] = []

    def middleware(self, route: Route, route_config: Any) -> Middleware:
        async def read(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            ctx = context_of(request)
            response = await handler(request)
            view, endpoint = ctx.route, ctx.endpoint
            assert view is not None and endpoint is not None
            try:
                ctx.route = None  # type: ignore[misc]
            except AttributeError:
                refused = True
            else:
                refused = False
            self.seen.append(
                {
                    "name": view.name,
                    "hosts": list(view.hosts),
                    "path": (view.path, view.path_type),
                    "endpoints": [(e.url, dict(e.version)) for e in view.endpoints],
                    "answered_by": endpoint.url,
                    "read_only": refused,
                }
            )
            return response

        return read


async def test_plugins_see_read_only_views_of_the_route_and_endpoint(
    backend: Backend, client: ClientSession
) -> None:
    config = {
        "plugins": [{"name": "viewer"}],
        "routes": [
            {
                "name": "app",
                "hosts": ["app.test"],
                "path": "/shop",
                "upstreams": [{"url": backend.url, "version": {"commit": "c0ffee"}}],
            }
        ],
    }
    async with run_router(config, plugins={"viewer": ViewReader}) as router:
        async with client.get(router.url + "/shop/x", headers={"Host": "app.test"}) as response:
            assert response.status == 200
    assert ViewReader.seen == [
        {
            "name": "app",
            "hosts": ["app.test"],
            "path": ("/shop", "Prefix"),
            "endpoints": [(backend.url, {"commit": "c0ffee"})],
            "answered_by": backend.url,
            "read_only": True,
        }
    ]
