"""The supervisor -> worker route relay sends only what changed, and the worker keeps the
Route objects of the rest (so its compiler reuses them)."""

from __future__ import annotations

from router.api import ProviderUpdate, RouteProblem
from router.config.models import Route
from router.routing.relay import decode, encode


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
