"""Route problems are logged when they appear, not again at every table change, each
naming its route."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web

from router.api import ProviderUpdate, RouteProblem
from router.config.models import Route
from router.observability.metrics import Metrics
from router.proxy.upstream import EndpointRegistry
from router.routing.compiler import RouteCompiler
from router.routing.holder import TableHolder
from router.routing.watcher import RouteWatcher


async def terminal(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


def route(name: str) -> Route:
    return Route.model_validate(
        {"name": name, "path": f"/{name}", "upstreams": [{"url": "http://10.0.0.1"}]}
    )


async def test_each_problem_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    compile_routes = RouteCompiler([], terminal, {}, EndpointRegistry(), metrics, 1024)
    watcher = RouteWatcher(compile_routes, TableHolder(), metrics)
    broken = RouteProblem("ingress/a/b", "service a/x not found", "a.b.rule0.path0")
    other = RouteProblem("ingress/a/c", "service a/y not found", "a.c.rule0.path0")
    # The same problem on another route of the same Ingress: a line of its own.
    twin = RouteProblem("ingress/a/c", "service a/y not found", "a.c.rule0.path1")
    whole = RouteProblem("ingress/a/d", "bad annotation")
    caplog.set_level(logging.WARNING, logger="commons_router.routing")
    steps = [(broken,), (broken,), (broken, other, twin, whole), (broken,)]
    for step, problems in enumerate(steps):
        watcher.publish(ProviderUpdate("test", (route(f"r{step}"),), problems))
        assert watcher.apply_now()
        assert watcher.problems == problems
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "route problem in ingress/a/b, route a.b.rule0.path0: service a/x not found",
        "route problem in ingress/a/c, route a.c.rule0.path0: service a/y not found",
        "route problem in ingress/a/c, route a.c.rule0.path1: service a/y not found",
        "route problem in ingress/a/d: bad annotation",
    ]
