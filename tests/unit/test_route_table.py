"""Route matching: Kubernetes Ingress semantics, table-driven."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from router.config.models import PathMatch, Route
from router.routing.paths import PathError, normalize_target
from router.routing.table import RouteTable


@dataclass(frozen=True)
class Entry:
    spec: Route


def route(
    name: str,
    path: str = "/",
    path_type: str = "Prefix",
    hosts: tuple[str, ...] = (),
    **path_match: Any,
) -> Entry:
    return Entry(
        Route.model_validate(
            {
                "name": name,
                "path": path,
                "path_type": path_type,
                "hosts": list(hosts),
                "builtin": "echo",
                "path_match": path_match,
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


# path_match options

OPTIONS_TABLE = RouteTable(
    [
        route("root"),
        route("admin", "/admin", case_sensitive=False),
        route("secret", "/internal/secret", "Exact", exact_trailing_slash=True),
        route("Docs", "/Docs"),
        route("folded-exact", "/Report", "Exact", case_sensitive=False, exact_trailing_slash=True),
    ]
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/admin", "admin"),
        ("/ADMIN", "admin"),
        ("/Admin/Users", "admin"),
        ("/adminx", "root"),
        ("/ADMINX/y", "root"),
        ("/internal/secret", "secret"),
        ("/internal/secret/", "secret"),
        ("/internal/secret/x", "root"),
        ("/Internal/Secret", "root"),  # only the route that asks is case-insensitive
        ("/Docs/a", "Docs"),
        ("/docs/a", "root"),
        ("/report", "folded-exact"),
        ("/REPORT/", "folded-exact"),
        ("/report/x", "root"),
    ],
)
def test_path_match_options_widen_only_their_route(path: str, expected: str) -> None:
    found = OPTIONS_TABLE.match("any.test", path)
    assert found is not None and found.spec.name == expected


def test_global_defaults_apply_to_routes_that_do_not_set_them() -> None:
    defaults = PathMatch(case_sensitive=False)
    table = RouteTable(
        [route("root"), route("a", "/a"), route("b", "/b", case_sensitive=True)], defaults
    )
    assert [table.match("h", p).spec.name for p in ("/A", "/B", "/b")] == ["a", "root", "b"]
    assert table.options(table.routes[1]).case_sensitive is False
    assert table.options(table.routes[2]).case_sensitive is True


@pytest.mark.parametrize(
    ("routes", "conflicting"),
    [
        ([route("a", "/Admin"), route("b", "/admin", case_sensitive=False)], "b"),
        ([route("a", "/admin", case_sensitive=False), route("b", "/ADMIN")], "b"),
        ([route("a", "/x/", "Exact"), route("b", "/x", "Exact", exact_trailing_slash=True)], "b"),
        ([route("a", "/x", "Exact", exact_trailing_slash=True), route("b", "/x/", "Exact")], "b"),
    ],
)
def test_routes_taking_the_same_spelling_conflict(routes: list[Entry], conflicting: str) -> None:
    table = RouteTable(routes)
    assert [c.route for c in table.conflicts] == [conflicting]


def resolve(table: RouteTable[Entry], target: str) -> str | None:
    found = table.resolve(
        "h", normalize_target(target, merge_slashes=True, reject_encoded_slash=True)
    )
    return found.spec.name if found is not None else None


def encoded_table(admin: str, public: str = "forward") -> RouteTable[Entry]:
    return RouteTable(
        [
            route("public", "/", encoded_delimiters=public, double_encoding=public),
            route("admin", "/admin", encoded_delimiters=admin, double_encoding=admin),
        ]
    )


@pytest.mark.parametrize(
    "target", ["/admin%3Bx", "/admin%3b", "/admin%23", "/admin%3F", "/%2561dmin", "/admin/%253B"]
)
def test_reject_refuses_every_spelling_that_reaches_the_route(target: str) -> None:
    with pytest.raises(PathError):
        resolve(encoded_table("reject"), target)


def test_defaults_reject_risky_encodings_anywhere() -> None:
    table = RouteTable([route("public"), route("admin", "/admin")])
    for target in ("/public/%3B/admin", "/x%23", "/x%3F", "/%2561", "/admin/%3B"):
        with pytest.raises(PathError):
            resolve(table, target)
    assert resolve(table, "/100%25") == "public"  # a lone encoded '%' is not double encoding


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin%3Bx", "admin"),
        ("/admin%3Bx/users", "admin"),
        ("/admin%3F", "admin"),
        ("/admin%23frag", "admin"),
        ("/public/..%3B/admin", "admin"),
        ("/%2561dmin", "admin"),
        ("/%2561dmin%253Bx", "admin"),
        ("/public%3B/x", "public"),
        ("/administrator%3F", "public"),
    ],
)
def test_decode_takes_every_spelling_that_decodes_to_the_route(target: str, expected: str) -> None:
    assert resolve(encoded_table("decode"), target) == expected


@pytest.mark.parametrize("target", ["/admin%3Bx", "/%2561dmin"])
def test_forward_keeps_ingress_reading(target: str) -> None:
    assert resolve(encoded_table("forward"), target) == "public"


def test_a_double_encoded_dot_segment_is_refused_unless_forwarded() -> None:
    with pytest.raises(PathError):
        resolve(encoded_table("decode", public="decode"), "/x/%252e%252e/admin")
    assert resolve(encoded_table("decode"), "/x/%252e%252e/admin") == "public"


def deep(name: str, *hosts: str) -> Entry:
    return Entry(
        Route.model_validate(
            {"name": name, "hosts": list(hosts), "builtin": "echo", "wildcard_depth": "any"}
        )
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.example.com", "gateway"),
        ("a.b.example.com", "gateway"),  # a Gateway API wildcard takes deeper names
        ("x.shop.example.com", "ingress"),  # the more specific wildcard wins
        ("x.y.shop.example.com", "gateway"),  # Ingress wildcards stay one label
        ("example.com", None),  # never the apex
        ("a.example.org", None),
    ],
)
def test_wildcards_of_any_depth_and_of_one_label(host: str, expected: str | None) -> None:
    table = RouteTable(
        [deep("gateway", "*.example.com"), route("ingress", hosts=("*.shop.example.com",))]
    )
    found = table.match(host, "/")
    assert (found.spec.name if found else None) == expected
