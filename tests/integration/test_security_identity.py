"""Identity and forwarding headers: what a client may and may not tell the backend.

Requests are written by hand (raw sockets) so header names reach the router exactly as
spelled here: underscores, odd casing, repeated lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from router.proxy.headers import DEFAULT_IDENTITY_HEADERS
from router.testing import RunningRouter, run_router
from tests.support.rawhttp import (
    RecordingBackend,
    SeenRequest,
    exchange,
    recording_backend,
    request_bytes,
)

SPOOFED_FORWARDING = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Host", "evil.test"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "1"),
    ("X-Forwarded-Prefix", "/evil"),
    ("X-Real-IP", "6.6.6.6"),
    ("Forwarded", "for=6.6.6.6;host=evil.test;proto=https"),
    ("X-Request-Id", "attacker-chosen-id"),
]


@pytest.fixture
async def backend_seen() -> AsyncIterator[tuple[RecordingBackend, str]]:
    async with recording_backend("app") as (seen, backend):
        yield seen, backend.url


def config(url: str, **extra: Any) -> dict[str, Any]:
    route = {"name": "app", "upstreams": [{"url": url}], **extra.pop("route", {})}
    return {"routes": [route], **extra}


async def send(
    router: RunningRouter,
    seen: RecordingBackend,
    headers: Sequence[tuple[str, str]],
    target: str = "/whoami",
) -> tuple[SeenRequest, str]:
    """One GET; returns what the backend received and the X-Request-Id the client got."""
    before = len(seen.requests)
    result = await exchange(router.port, request_bytes("GET", target, headers))
    response = result.only
    assert response.status == 200, result.data
    assert len(seen.requests) == before + 1
    return seen.requests[-1], response.headers["X-Request-Id"]


def spellings(name: str) -> list[str]:
    return [
        name,
        name.lower(),
        name.upper(),
        name.replace("-", "_"),
        name.lower().replace("-", "_"),
        "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(name)),
        name.replace("-", "_", 1),
    ]


FAMILY_MEMBERS = (
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Access-Token",
    "X-Remote-User",
    "Remote-User",
)


@pytest.mark.parametrize("name", (*DEFAULT_IDENTITY_HEADERS, *FAMILY_MEMBERS))
async def test_client_identity_headers_never_reach_the_backend(
    backend_seen: tuple[RecordingBackend, str], name: str
) -> None:
    seen, url = backend_seen
    headers = [(spelling, "admin@example.com") for spelling in spellings(name)]
    async with run_router(config(url)) as router:
        received, _ = await send(router, seen, [*headers, ("X-Harmless", "kept")])
    assert name.lower() not in received.header_names()
    assert not any("admin@example.com" in value for _, value in received.headers)
    assert received.value("X-Harmless") == "kept"


async def test_x_forwarded_email_underscore_and_odd_casing(
    backend_seen: tuple[RecordingBackend, str],
) -> None:
    """``X_Forwarded_Email`` is ``HTTP_X_FORWARDED_EMAIL`` to a WSGI backend."""
    seen, url = backend_seen
    async with run_router(config(url)) as router:
        received, _ = await send(
            router,
            seen,
            [
                ("X_Forwarded_Email", "root@example.com"),
                ("x-FORWARDED-email", "root@example.com"),
                ("X_FORWARDED_USER", "root"),
                ("x-forwarded_user", "root"),
            ],
        )
    assert {"x-forwarded-email", "x-forwarded-user"}.isdisjoint(received.header_names())


async def test_connection_header_cannot_remove_injected_headers(
    backend_seen: tuple[RecordingBackend, str],
) -> None:
    seen, url = backend_seen
    named = "X-Forwarded-For, X_Forwarded_Proto, x-forwarded-host, Forwarded, X-Request-Id, X-Team"
    async with run_router(
        config(url, route={"request_headers": {"set": {"X-Team": "blue"}}})
    ) as router:
        received, request_id = await send(router, seen, [("Connection", named)])
    assert received.value("X-Forwarded-For") == "127.0.0.1"
    assert received.value("X-Forwarded-Proto") == "http"
    assert received.value("X-Forwarded-Host") == "app.test"
    assert received.value("Forwarded") == 'for=127.0.0.1;host="app.test";proto=http'
    assert received.value("X-Request-Id") == request_id
    assert received.value("X-Team") == "blue"


async def test_connection_header_removes_what_it_names_from_the_client(
    backend_seen: tuple[RecordingBackend, str],
) -> None:
    seen, url = backend_seen
    async with run_router(config(url)) as router:
        received, _ = await send(
            router,
            seen,
            [
                ("Connection", "X-Hop-One"),
                ("Connection", "x_hop_two"),
                ("X-Hop-One", "1"),
                ("X-Hop-Two", "2"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                ("X-End-To-End", "kept"),
            ],
        )
    names = received.header_names()
    assert {"x-hop-one", "x-hop-two", "keep-alive", "te", "proxy-authorization"}.isdisjoint(names)
    assert received.value("X-End-To-End") == "kept"


async def test_connection_header_cannot_remove_host(
    backend_seen: tuple[RecordingBackend, str],
) -> None:
    """The backend sees the Host the route was chosen by, not its own address."""
    seen, url = backend_seen
    async with run_router(config(url)) as router:
        received, _ = await send(router, seen, [("Connection", "Host")])
    assert received.value("Host") == "app.test"


async def test_untrusted_forwarding_headers_are_replaced(
    backend_seen: tuple[RecordingBackend, str],
) -> None:
    seen, url = backend_seen
    underscored = [(name.replace("-", "_"), value) for name, value in SPOOFED_FORWARDING]
    async with run_router(config(url)) as router:
        for headers in (SPOOFED_FORWARDING, underscored):
            received, request_id = await send(router, seen, headers)
            assert received.value("X-Forwarded-For") == "127.0.0.1"
            assert received.value("X-Forwarded-Host") == "app.test"
            assert received.value("X-Forwarded-Proto") == "http"
            assert received.value("X-Forwarded-Port") != "1"
            assert received.value("Forwarded") == 'for=127.0.0.1;host="app.test";proto=http'
            assert received.value("X-Request-Id") == request_id != "attacker-chosen-id"
            names = received.header_names()
            assert "x-forwarded-prefix" not in names
            assert "x-real-ip" not in names
            assert not any("6.6.6.6" in value or "evil" in value for _, value in received.headers)
        log = await router.access_log()
    assert [line["client"] for line in log] == ["127.0.0.1", "127.0.0.1"]
    assert "attacker-chosen-id" not in {line["request_id"] for line in log}


async def test_trusted_proxy_forwarding_headers_are_kept_and_appended(
    backend_seen: tuple[RecordingBackend, str],
) -> None:
    seen, url = backend_seen
    async with run_router(config(url, trusted_proxies=["127.0.0.1/32"])) as router:
        received, request_id = await send(
            router,
            seen,
            [
                ("X-Forwarded-For", "203.0.113.7"),
                ("X-Forwarded-Host", "public.example.com"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Port", "443"),
                ("Forwarded", "for=203.0.113.7;proto=https"),
                ("X-Request-Id", "edge-1234"),
                ("X-Forwarded-User", "still-stripped"),
            ],
        )
        log = await router.access_log()
    assert received.value("X-Forwarded-For") == "203.0.113.7, 127.0.0.1"
    assert received.value("X-Forwarded-Host") == "public.example.com"
    assert received.value("X-Forwarded-Proto") == "https"
    assert received.value("X-Forwarded-Port") == "443"
    assert received.value("Forwarded") == (
        'for=203.0.113.7;proto=https, for=127.0.0.1;host="app.test";proto=http'
    )
    assert received.value("X-Request-Id") == request_id == "edge-1234"
    assert "x-forwarded-user" not in received.header_names()
    assert log[-1]["client"] == "203.0.113.7"
    assert log[-1]["request_id"] == "edge-1234"


async def test_trusted_proxy_headers_on_several_lines_are_one_list(
    backend_seen: tuple[RecordingBackend, str],
) -> None:
    """A client's own X-Forwarded-For line must not be taken for the proxy's."""
    seen, url = backend_seen
    async with run_router(config(url, trusted_proxies=["127.0.0.1/32"])) as router:
        received, _ = await send(
            router,
            seen,
            [
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-For", "203.0.113.7"),
                ("Forwarded", "for=6.6.6.6"),
                ("Forwarded", "for=203.0.113.7"),
            ],
        )
        log = await router.access_log()
    assert received.value("X-Forwarded-For") == "6.6.6.6, 203.0.113.7, 127.0.0.1"
    assert received.value("Forwarded") == (
        'for=6.6.6.6, for=203.0.113.7, for=127.0.0.1;host="app.test";proto=http'
    )
    assert log[-1]["client"] == "203.0.113.7"


async def test_trusted_proxy_request_id_must_be_well_formed(
    backend_seen: tuple[RecordingBackend, str],
) -> None:
    seen, url = backend_seen
    async with run_router(config(url, trusted_proxies=["127.0.0.1/32"])) as router:
        for bad in ("has space", "x" * 129, 'quote"d', ""):
            received, request_id = await send(router, seen, [("X-Request-Id", bad)])
            assert received.value("X-Request-Id") == request_id != bad


async def test_trust_is_by_cidr_not_by_any_address(
    backend_seen: tuple[RecordingBackend, str],
) -> None:
    seen, url = backend_seen
    async with run_router(config(url, trusted_proxies=["10.0.0.0/8", "::1/128"])) as router:
        received, _ = await send(router, seen, [("X-Forwarded-For", "203.0.113.7")])
    assert received.value("X-Forwarded-For") == "127.0.0.1"
