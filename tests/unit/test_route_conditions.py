"""Routes of one host and path told apart by method, header, query and listener
conditions (Gateway API HTTPRoute matches), table-driven."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from multidict import CIMultiDict

from router.config.models import Route
from router.routing.table import MatchFacts, RouteTable


@dataclass(frozen=True)
class Entry:
    spec: Route


def route(name: str, path: str = "/", path_type: str = "Prefix", **fields: Any) -> Entry:
    return Entry(
        Route.model_validate(
            {"name": name, "path": path, "path_type": path_type, "builtin": "echo", **fields}
        )
    )


TABLE = RouteTable(
    [
        route("root"),
        route("v2", match={"headers": {"version": "two"}}),
        route("v2-beta", match={"headers": {"version": "two", "channel": "beta"}}),
        route("post", match={"method": "POST"}),
        route("q", match={"query": {"animal": "whale"}}),
        route("api-header", "/api", match={"headers": {"x-team": "a"}}),
        route("exact-q", "/exact", "Exact", match={"query": {"x": "1"}}),
        route("exact", "/exact", "Exact"),
    ]
)
HTTPS_TABLE = RouteTable(
    [route("plain", "/", listeners=["web"]), route("secure", "/", listeners=["websecure"])]
)


def facts(
    method: str = "GET",
    headers: dict[str, str] | None = None,
    query: str = "",
    listener: str = "web",
) -> MatchFacts:
    return MatchFacts(method, CIMultiDict(headers or {}), query, listener)


CASES = [
    # HTTPRouteHeaderMatching: exact header values, names in any case.
    ("/", facts(headers={"Version": "two"}), "v2"),
    ("/", facts(headers={"version": "Two"}), "root"),  # values are case-sensitive
    # HTTPRouteMatchingAcrossRoutes: the most header conditions first.
    ("/", facts(headers={"version": "two", "channel": "beta"}), "v2-beta"),
    # HTTPRouteMethodMatching: a method condition before header conditions.
    ("/", facts("POST", headers={"version": "two"}), "post"),
    # HTTPRouteQueryParamMatching: the first value of the parameter.
    ("/x", facts(query="animal=whale"), "q"),
    ("/x", facts(query="animal=dolphin&animal=whale"), "root"),
    ("/x", facts(query="animal=whale&animal=dolphin"), "q"),
    # A longer path whose routes all refuse the request goes on to shorter ones.
    ("/api/items", facts(headers={"x-team": "a"}), "api-header"),
    ("/api/items", facts(headers={"x-team": "b"}), "root"),
    # Exact paths before prefixes, with their conditions.
    ("/exact", facts(query="x=1"), "exact-q"),
    ("/exact", facts(), "exact"),
]


@pytest.mark.parametrize(("path", "request_facts", "expected"), CASES)
def test_conditions_choose_the_route(path: str, request_facts: MatchFacts, expected: str) -> None:
    assert TABLE.conflicts == ()
    assert TABLE.conditional
    found = TABLE.match("any.example.com", path, request_facts)
    assert found is not None and found.spec.name == expected


def test_without_request_facts_only_unconditional_routes_match() -> None:
    found = TABLE.match("any.example.com", "/api/items")
    assert found is not None and found.spec.name == "root"


def test_routes_of_different_listeners_share_a_path() -> None:
    assert HTTPS_TABLE.conflicts == ()
    for listener in ("web", "websecure"):
        found = HTTPS_TABLE.match("h.example.com", "/", facts(listener=listener))
        assert found is not None and found.spec.listeners == [listener]


def test_same_conditions_still_conflict() -> None:
    table = RouteTable(
        [
            route("one", match={"headers": {"a": "1"}}),
            route("two", match={"headers": {"a": "1"}}),
            route("three", listeners=["web"]),
            route("four"),
        ]
    )
    assert [(c.route, c.other) for c in table.conflicts] == [("two", "one"), ("four", "three")]
    assert [r.spec.name for r in table.routes] == ["one", "three"]


def test_tables_without_conditions_are_not_conditional() -> None:
    assert not RouteTable([route("a"), route("b", "/b")]).conditional
