"""The supervisor -> worker route relay sends only what changed, and the worker keeps the
Route objects of the rest (so its compiler reuses them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from router.api import ProviderUpdate, RouteProblem
from router.config.models import Route
from router.routing.relay import RouteHub, RouteRelay, decode, encode


def route(name: str, url: str = "http://10.0.0.1:8080") -> Route:
    return Route.model_validate(
        {"name": name, "hosts": [f"{name}.test"], "upstreams": [{"url": url}], "retries": 3}
    )


def test_only_changed_routes_travel_and_the_others_keep_their_objects() -> None:
    a, b = route("a"), route("b")
    problem = RouteProblem("ingress/x/y", "service x/z not found", "b")
    sent: dict[str, Route] | None = None
    known: dict[str, dict[str, Route]] = {}

    line, sent = encode(ProviderUpdate("kubernetes", (a, b), (problem,)), sent)
    first = decode(line, known)
    assert first.routes == (a, b) and first.problems == (problem,)

    changed = route("b", "http://10.0.0.2:8080")
    line, sent = encode(ProviderUpdate("kubernetes", (a, changed)), sent)
    assert b'"a.test"' not in line  # a is referred to by name only
    second = decode(line, known)
    assert second.routes == (a, changed)
    assert second.routes[0] is first.routes[0]
    assert second.problems == ()

    line, sent = encode(ProviderUpdate("kubernetes", (changed,)), sent)
    assert decode(line, known).routes == (changed,)


async def test_a_worker_reconnects_and_gets_the_current_routes(tmp_path: Path) -> None:
    path = str(tmp_path / "routes.sock")
    hub = RouteHub()
    await hub.serve(path)
    hub.publish(ProviderUpdate("kubernetes", (route("a"),)))
    relay = RouteRelay(path)
    (initial,) = await relay.connect()
    assert [r.name for r in initial.routes] == ["a"]
    received: list[ProviderUpdate] = []
    task = asyncio.create_task(relay.run(received.append))
    try:
        hub.publish(ProviderUpdate("kubernetes", (route("a"), route("b"))))
        await _until(lambda: len(received) == 1)
        # The supervisor's side drops the connection (a restart of the hub); meanwhile
        # the routes change. The worker reconnects and gets the state of now.
        await hub.close()
        hub = RouteHub()
        await hub.serve(path)
        hub.publish(ProviderUpdate("kubernetes", (route("c"),)))
        await _until(lambda: len(received) == 2, timeout=10)
        assert [r.name for r in received[-1].routes] == ["c"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await hub.close()


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
