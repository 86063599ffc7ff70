"""Paths and hosts: every spelling of ``/admin`` gets the ``/admin`` decision, and the
backend receives the path that was judged.

Two routes: ``/admin`` goes to the "admin" backend, everything else to "public". Which
backend answered (``X-Backend``), what it received, and the access log's ``route`` field
show the decision.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from router.routing.paths import PathError, normalize_target
from router.testing import RunningRouter, run_router
from tests.support.rawhttp import RecordingBackend, exchange, recording_backend, request_bytes


@dataclass
class Site:
    router: RunningRouter
    admin: RecordingBackend
    public: RecordingBackend


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with (
        recording_backend("admin") as (admin, admin_backend),
        recording_backend("public") as (public, public_backend),
    ):
        config = {
            "routes": [
                {"name": "admin", "path": "/admin", "upstreams": [{"url": admin_backend.url}]},
                {"name": "public", "path": "/", "upstreams": [{"url": public_backend.url}]},
            ]
        }
        async with run_router(config) as router:
            yield Site(router, admin, public)


ADMIN_SPELLINGS = [
    # (request target, what the admin backend must receive)
    ("/admin", "/admin"),
    ("//admin", "/admin"),
    ("///admin//", "/admin/"),
    ("/%61dmin", "/admin"),
    ("/%61%64%6D%69%6E", "/admin"),
    ("/x/../admin", "/admin"),
    ("/./admin", "/admin"),
    ("/public/../admin", "/admin"),
    ("/public/%2e%2e/admin", "/admin"),
    ("/public/.%2E/admin", "/admin"),
    ("/../../admin", "/admin"),
    ("/admin;x", "/admin;x"),
    ("/admin;jsessionid=1/users", "/admin;jsessionid=1/users"),
    ("/admin#x", "/admin"),
    ("/admin#/../public", "/admin"),
    ("/admin?x=/public", "/admin?x=/public"),
    ("/admin?/../public", "/admin?/../public"),
    ("/public/..;/admin", "/admin"),
    ("/public/..;x=1/admin", "/admin"),
    ("/.;/admin", "/admin"),
    ("/;/admin", "/;/admin"),
    ("/;x;y/admin/users", "/;x;y/admin/users"),
    ("/admin/", "/admin/"),
    ("/admin/users/../settings", "/admin/settings"),
]


@pytest.mark.parametrize(("target", "forwarded"), ADMIN_SPELLINGS)
async def test_every_spelling_of_admin_gets_the_admin_route(
    site: Site, target: str, forwarded: str
) -> None:
    result = await exchange(site.router.port, request_bytes("GET", target))
    response = result.only
    assert response.status == 200, result.data
    assert response.headers["X-Backend"] == "admin"
    assert site.public.requests == []
    assert site.admin.targets == [forwarded]


PUBLIC_PATHS = [
    ("/", "/"),
    ("/adminx", "/adminx"),
    ("/administrator", "/administrator"),
    ("/public?x=/admin", "/public?x=/admin"),
    ("/?path=/admin", "/?path=/admin"),
    ("/public#/../admin", "/public"),
    ("/admin/..", "/"),
    ("/admin/../public", "/public"),
    ("/admin;x/../public", "/public"),
    ("/ADMIN", "/ADMIN"),
]


@pytest.mark.parametrize(("target", "forwarded"), PUBLIC_PATHS)
async def test_other_paths_get_the_public_route(site: Site, target: str, forwarded: str) -> None:
    result = await exchange(site.router.port, request_bytes("GET", target))
    response = result.only
    assert response.status == 200, result.data
    assert response.headers["X-Backend"] == "public"
    assert site.admin.requests == []
    assert site.public.targets == [forwarded]


REJECTED = [
    "/admin%2Fusers",
    "/public%2F..%2Fadmin",
    "/public%2f..%2fadmin",
    "/public/..%2Fadmin",
    "/public%5C..%5Cadmin",
    "/public%5c..%5cadmin",
    "/admin%00",
    "/public%00/../admin",
    "/public\\..\\admin",
    "/\\admin",
    "/admin%zz",
    "/admin%4",
    # Encoded controls, like their raw forms (uvicorn decodes them; "$" matches before "\n").
    "/admin%0A",
    "/admin%0a",
    "/internal/secret%0D",
    "/ad%09min",
    "/admin%1f/x",
    "/admin%7F",
    # Encoded delimiters and double encodings (default path_match: reject).
    "/admin%3Bx",
    "/public/%3B/admin",
    "/admin%23",
    "/admin%3f",
    "/%2561dmin",
    "/public/%252e%252e/admin",
]


@pytest.mark.parametrize("target", REJECTED)
async def test_encoded_separators_controls_and_backslash_are_400(site: Site, target: str) -> None:
    result = await exchange(site.router.port, request_bytes("GET", target))
    assert result.statuses == [400], result.data
    assert site.admin.requests == []
    assert site.public.requests == []


@pytest.mark.parametrize(
    "raw_target",
    [b"/\xc3\xa9", b"/\xf0\x9f\x98\x80/admin", b"/admin\x7f", b"/admin\tx"],
    ids=["latin", "emoji", "DEL", "tab"],
)
async def test_raw_non_ascii_and_control_bytes_in_the_target_are_400(
    site: Site, raw_target: bytes
) -> None:
    request = b"GET " + raw_target + b" HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    result = await exchange(site.router.port, request)
    assert result.statuses == [400]
    assert site.admin.requests == []
    assert site.public.requests == []


@pytest.mark.parametrize("target", ["/\U0001f600/admin", "/caf\u00e9", "/\udce9"])
def test_normalizer_refuses_any_non_ascii_character(target: str) -> None:
    """llhttp refuses such bytes first; the normalizer must not rely on it (absolute-form
    targets and other parsers reach it too)."""
    with pytest.raises(PathError):
        normalize_target(target, merge_slashes=True, reject_encoded_slash=True)


async def test_access_log_records_the_route_and_the_judged_path(site: Site) -> None:
    targets = ["//admin", "/%61dmin", "/x/../admin", "/public/..;/admin", "/admin?x=/public"]
    for target in targets:
        assert (await exchange(site.router.port, request_bytes("GET", target))).statuses == [200]
    assert (await exchange(site.router.port, request_bytes("GET", "/?x=/admin"))).statuses == [200]
    log = await site.router.access_log()
    assert [(line["route"], line["path"]) for line in log] == [
        ("admin", "/admin"),
        ("admin", "/admin"),
        ("admin", "/admin"),
        ("admin", "/admin"),
        ("admin", "/admin"),
        ("public", "/"),
    ]


async def test_encoded_controls_pass_only_when_allowed() -> None:
    async with recording_backend("public") as (public, public_backend):
        config: dict[str, Any] = {
            "paths": {"reject_encoded_controls": False},
            "routes": [{"name": "public", "path": "/", "upstreams": [{"url": public_backend.url}]}],
        }
        async with run_router(config) as router:
            result = await exchange(router.port, request_bytes("GET", "/a%0ab"))
    assert result.statuses == [200]
    assert public.targets == ["/a%0Ab"]


@pytest.mark.parametrize(
    ("target", "backend", "forwarded"),
    [
        ("/ADMIN", "admin", "/ADMIN"),
        ("/%41dmin/Users", "admin", "/Admin/Users"),
        ("/internal/secret/", "secret", "/internal/secret/"),
        ("/internal/secret", "secret", "/internal/secret"),
        ("/Internal/Secret", "public", "/Internal/Secret"),
        ("/admin%3Bjsessionid=1", "admin", "/admin%3Bjsessionid=1"),
        ("/admin%3Fx", "admin", "/admin%3Fx"),
        ("/public/..%3B/admin", "admin", "/public/..%3B/admin"),
        ("/%2561dmin", "admin", "/%2561dmin"),
        ("/public%3Bx", "public", "/public%3Bx"),
    ],
)
async def test_path_match_options_route_every_spelling_to_the_protected_route(
    target: str, backend: str, forwarded: str
) -> None:
    """The global default (paths.match) decodes; each protected route adds what its
    backend needs, and gets the spellings that backend sends to its handler."""
    async with (
        recording_backend("admin") as (admin, admin_backend),
        recording_backend("secret") as (secret, secret_backend),
        recording_backend("public") as (public, public_backend),
    ):
        config: dict[str, Any] = {
            "paths": {"match": {"encoded_delimiters": "decode", "double_encoding": "decode"}},
            "routes": [
                {
                    "name": "admin",
                    "path": "/admin",
                    "path_match": {"case_sensitive": False},
                    "upstreams": [{"url": admin_backend.url}],
                },
                {
                    "name": "secret",
                    "path": "/internal/secret",
                    "path_type": "Exact",
                    "path_match": {"exact_trailing_slash": True},
                    "upstreams": [{"url": secret_backend.url}],
                },
                {"name": "public", "path": "/", "upstreams": [{"url": public_backend.url}]},
            ],
        }
        async with run_router(config) as router:
            result = await exchange(router.port, request_bytes("GET", target))
            log = await router.access_log()
    assert result.statuses == [200], result.data
    assert result.only.headers["X-Backend"] == backend
    recorders = {"admin": admin, "secret": secret, "public": public}
    assert recorders.pop(backend).targets == [forwarded]
    assert all(recorder.requests == [] for recorder in recorders.values())
    assert [line["route"] for line in log] == [backend]


async def test_merge_slashes_off_forwards_the_slashes_it_matched() -> None:
    async with (
        recording_backend("admin") as (admin, admin_backend),
        recording_backend("public") as (public, public_backend),
    ):
        config: dict[str, Any] = {
            "paths": {"merge_slashes": False},
            "routes": [
                {"name": "admin", "path": "/admin", "upstreams": [{"url": admin_backend.url}]},
                {"name": "public", "path": "/", "upstreams": [{"url": public_backend.url}]},
            ],
        }
        async with run_router(config) as router:
            result = await exchange(router.port, request_bytes("GET", "//admin"))
    assert result.statuses == [200]
    # Matched as "//admin" (not "/admin"), and forwarded as exactly that.
    assert public.targets == ["//admin"]
    assert admin.requests == []


# Hosts


@dataclass
class HostSite:
    router: RunningRouter
    secure: RecordingBackend
    wildcard: RecordingBackend
    catchall: RecordingBackend


@pytest.fixture
async def host_site() -> AsyncIterator[HostSite]:
    async with (
        recording_backend("secure") as (secure, a),
        recording_backend("wildcard") as (
            wildcard,
            b,
        ),
        recording_backend("catchall") as (catchall, c),
    ):
        config = {
            "routes": [
                {
                    "name": "secure",
                    "hosts": ["app.example.com"],
                    "path": "/admin",
                    "upstreams": [{"url": a.url}],
                },
                {
                    "name": "wildcard",
                    "hosts": ["*.example.com"],
                    "path": "/admin",
                    "upstreams": [{"url": b.url}],
                },
                {
                    "name": "secure-too",
                    "hosts": ["admin.test"],
                    "path": "/admin",
                    "upstreams": [{"url": a.url}],
                },
                {"name": "catchall", "path": "/", "upstreams": [{"url": c.url}]},
            ]
        }
        async with run_router(config) as router:
            yield HostSite(router, secure, wildcard, catchall)


@pytest.mark.parametrize(
    ("host", "target", "status", "backend"),
    [
        ("app.example.com", "/admin", 200, "secure"),
        ("APP.Example.COM", "/admin", 200, "secure"),
        ("app.example.com.", "/admin", 200, "secure"),
        ("app.example.com:8080", "/admin", 200, "secure"),
        # A host with routes decides alone: no fall-through to the catch-all route.
        ("app.example.com", "/", 404, None),
        ("app.example.com", "/other", 404, None),
        ("app.example.com", "/?x=/admin", 404, None),
        ("admin.test", "/admin", 200, "secure"),
        ("admin.test", "/", 404, None),
        ("admin.test", "/public", 404, None),
        ("ADMIN.TEST:443", "/adminx", 404, None),
        ("other.example.com", "/admin", 200, "wildcard"),
        ("other.example.com", "/", 404, None),
        # Not covered by the one-label wildcard, nor the exact host: the catch-all.
        ("a.b.example.com", "/admin", 200, "catchall"),
        ("unknown.test", "/admin", 200, "catchall"),
        ("app.example.com.evil.test", "/admin", 200, "catchall"),
    ],
)
async def test_host_precedence_has_no_fall_through(
    host_site: HostSite, host: str, target: str, status: int, backend: str | None
) -> None:
    result = await exchange(host_site.router.port, request_bytes("GET", target, host=host))
    assert result.statuses == [status], result.data
    backends = {
        "secure": host_site.secure,
        "wildcard": host_site.wildcard,
        "catchall": host_site.catchall,
    }
    for name, recorder in backends.items():
        assert len(recorder.requests) == (1 if name == backend else 0), name
    if backend is not None:
        assert result.only.headers["X-Backend"] == backend


@pytest.mark.parametrize(
    "host",
    [
        "",
        "app.example.com:80:80",
        "app.example.com:http",
        "user@app.example.com",
        "app.example.com/admin",
        "app example.com",
        "[::1",
        "app.example.com:1234567",
    ],
)
async def test_invalid_host_is_400(host_site: HostSite, host: str) -> None:
    result = await exchange(host_site.router.port, request_bytes("GET", "/admin", host=host))
    assert result.statuses == [400], result.data
    assert host_site.secure.requests == []
    assert host_site.wildcard.requests == []
    assert host_site.catchall.requests == []
