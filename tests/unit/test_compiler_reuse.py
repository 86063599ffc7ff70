"""The route compiler reuses the compiled route of a Route object it compiled last time."""

from __future__ import annotations

from aiohttp import web

from router.config.models import Route
from router.observability.metrics import Metrics
from router.proxy.upstream import EndpointRegistry
from router.routing.compiler import RouteCompiler


async def terminal(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


def route(name: str, url: str) -> Route:
    return Route.model_validate({"name": name, "path": f"/{name}", "upstreams": [{"url": url}]})


def test_same_route_object_is_not_recompiled() -> None:
    endpoints = EndpointRegistry()
    compile_routes = RouteCompiler([], terminal, {}, endpoints, Metrics(), 1024)
    kept, changed = route("kept", "http://10.0.0.1"), route("changed", "http://10.0.0.2")
    first, _ = compile_routes([kept, changed])
    # `kept` is the same object; `changed` is equal but a new object (a new spec).
    second, _ = compile_routes([kept, route("changed", "http://10.0.0.2")])
    assert second.routes[0] is first.routes[0]
    assert second.routes[1] is not first.routes[1]
    assert second.routes[1].spec == first.routes[1].spec
    # Dropped routes are forgotten: compiling them again builds them anew.
    compile_routes([changed])
    third, _ = compile_routes([kept])
    assert third.routes[0] is not first.routes[0]
    assert len(endpoints) == 1


async def unavailable(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(status=503)


def test_a_route_that_cannot_be_built_answers_503_in_its_place() -> None:
    broken = Route.model_validate(
        {"name": "broken", "upstreams": [{"url": "http://10.0.0.9"}], "plugins": {"nope": {}}}
    )
    compile_routes = RouteCompiler(
        [], terminal, {"unavailable": unavailable}, EndpointRegistry(), Metrics(), 1024
    )
    table, problems = compile_routes([broken])
    (placeholder,) = table.routes
    assert placeholder.spec is broken
    assert placeholder.handler is unavailable
    assert placeholder.pool is None
    (problem,) = problems
    assert "plugin 'nope' is not enabled" in problem.message
    assert problem.message.endswith("; the route answers 503")
    # Without the builtin (an embedding without it), the route is left out as before.
    table, problems = RouteCompiler([], terminal, {}, EndpointRegistry(), Metrics(), 1024)([broken])
    assert table.routes == ()
    assert problems[0].message.endswith("; route disabled")
