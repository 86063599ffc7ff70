"""Route matching: Kubernetes Ingress semantics, table-driven."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from router.config.models import Route
from router.routing.table import RouteTable


@dataclass(frozen=True)
class Entry:
    spec: Route


def route(name: str, path: str = "/", path_type: str = "Prefix", hosts: tuple[str, ...] = ()) -> (
    Entry
):
    return Entry(
        Route.model_validate(
            {
                "name": name,
                "path": path,
                "path_type": path_type,
                "hosts": list(hosts),
                "builtin": "echo",
            }
        )
    )


TABLE = RouteTable(
    [
        route("root"),
        route("foo", "/foo"),
        route("foo-exact", "/foo", "Exact"),
        route("foo-bar", "/foo/bar/"),
        route("aaa-exact", "/aaa/bbb", "Exact"),
        route("shop", "/", hosts=("shop.example.com",)),
        route("shop-api", "/api", hosts=("shop.example.com",)),
        route("wild", "/", hosts=("*.example.com",)),
        route("only-admin", "/admin", hosts=("admin.example.com",)),
    ]
)


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("any.test", "/", "root"),
        ("any.test", "/foo", "foo-exact"),  # Exact beats Prefix of the same length
        ("any.test", "/foo/", "foo"),
        ("any.test", "/foo/x", "foo"),
        ("any.test", "/foobar", "root"),  # element-wise: /foo does not match /foobar
        ("any.test", "/foo/bar", "foo-bar"),  # trailing slash of a Prefix is ignored
        ("any.test", "/foo/bar/baz", "foo-bar"),
        ("any.test", "/foo/barbaz", "foo"),
        ("any.test", "/aaa/bbb", "aaa-exact"),
        ("any.test", "/aaa/bbb/", "root"),  # Exact is exact
        ("shop.example.com", "/api/v1", "shop-api"),
        ("shop.example.com", "/apiv1", "shop"),
        ("other.example.com", "/api", "wild"),  # wildcard covers one label
        ("a.b.example.com", "/", "root"),  # ... not two
        ("example.com", "/", "root"),  # ... nor the bare domain
        ("admin.example.com", "/admin/users", "only-admin"),
        # The exact host decides alone: no fall-through to the wildcard or catch-all.
        ("admin.example.com", "/", None),
    ],
)
def test_matching(host: str, path: str, expected: str | None) -> None:
    found = TABLE.match(host, path)
    assert (found.spec.name if found else None) == expected


def test_no_routes_no_match() -> None:
    assert RouteTable([]).match("a", "/") is None


def test_conflicting_routes_keep_the_first() -> None:
    table = RouteTable([route("a", "/x"), route("b", "/x/"), route("c", "/x", "Exact")])
    assert [r.spec.name for r in table.routes] == ["a", "c"]
    assert table.conflicts[0].route == "b"
    assert "'a'" in table.conflicts[0].message
