"""Upgrades and limits: h2c, the request-head timeout, header and body limits, slow
clients, and the admin endpoints' absence from the public listener."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientSession

from router.testing import RunningRouter, run_router
from tests.support.rawhttp import (
    READ_LIMIT,
    RecordingBackend,
    exchange,
    recording_backend,
    request_bytes,
)

SMALL_LIMIT = 1024
LARGE_LIMIT = 100 * 1024


@dataclass
class Limited:
    router: RunningRouter
    seen: RecordingBackend


@contextlib.asynccontextmanager
async def limited_router(**overrides: Any) -> AsyncIterator[Limited]:
    async with recording_backend("app") as (seen, backend):
        upstreams = [{"url": backend.url}]
        config: dict[str, Any] = {
            "limits": {
                "header_timeout": 0.5,
                "keepalive_timeout": 1.0,
                "max_header_size": 1024,
                "max_headers": 20,
                "max_request_line": 1024,
            },
            "routes": [
                {
                    "name": "small",
                    "path": "/small",
                    "max_body_size": SMALL_LIMIT,
                    "upstreams": upstreams,
                },
                {
                    "name": "large",
                    "path": "/large",
                    "max_body_size": LARGE_LIMIT,
                    "upstreams": upstreams,
                },
                {"name": "app", "path": "/", "upstreams": upstreams},
            ],
        }
        for key, value in overrides.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        async with run_router(config) as router:
            yield Limited(router, seen)


@pytest.fixture
async def limited() -> AsyncIterator[Limited]:
    async with limited_router() as running:
        yield running


def chunked(body: bytes, size: int) -> list[bytes]:
    """``body`` as chunked-encoding pieces of ``size`` bytes, then the last chunk."""
    pieces = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return [*pieces, b"0\r\n\r\n"]


# Upgrades


async def test_h2c_upgrade_is_stripped_and_answered_as_http1(limited: Limited) -> None:
    request = request_bytes(
        "GET",
        "/h2c",
        [
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
        close=False,
    )
    # aiohttp drops what follows an upgrade it does not support in the same read, so the
    # router closes the connection after answering instead of reading on from there.
    result = await exchange(limited.router.port, request + request_bytes("GET", "/after"))
    assert result.statuses == [200]
    assert result.only.headers["Connection"].lower() == "close"
    assert result.closed
    assert limited.seen.targets == ["/h2c"]
    names = limited.seen.requests[0].header_names()
    assert {"upgrade", "http2-settings"}.isdisjoint(names)
    assert "h2c" not in str(limited.seen.requests[0].headers).lower()


async def test_http2_settings_is_dropped_even_when_connection_does_not_name_it(
    limited: Limited,
) -> None:
    request = request_bytes("GET", "/h2c", [("Upgrade", "h2c"), ("HTTP2-Settings", "AAMA")])
    result = await exchange(limited.router.port, request)
    assert result.statuses == [200]
    assert {"upgrade", "http2-settings"}.isdisjoint(limited.seen.requests[0].header_names())


async def test_http2_prior_knowledge_preface_is_refused(limited: Limited) -> None:
    result = await exchange(limited.router.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert result.statuses == [400]
    assert result.closed
    assert limited.seen.requests == []


async def test_backend_refusing_a_websocket_upgrade_gets_no_tunnel(limited: Limited) -> None:
    """The backend answers 200 to the upgrade: the client gets 502, and what it sends next
    is parsed as HTTP by the router (a new proxied request), never piped raw."""
    upgrade = request_bytes(
        "GET",
        "/ws",
        [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        close=False,
    )
    result = await exchange(limited.router.port, upgrade + request_bytes("GET", "/after"))
    assert result.statuses == [502, 200]
    assert limited.seen.targets == ["/ws", "/after"]
    after = limited.seen.requests[1]
    assert after.value("X-Request-Id") == result.responses[1].headers["X-Request-Id"]


# Request-head timeout (slowloris)


async def test_slow_request_head_gets_408_and_close(limited: Limited) -> None:
    pieces = [b"GET /slow HTTP/1.1\r\n", b"Host: app.test\r\n"]
    pieces += [b"X-Drip-%d: 1\r\n" % n for n in range(40)]
    result = await exchange(limited.router.port, pieces, pause=0.1)
    assert result.statuses == [408]
    assert result.only.headers["Connection"].lower() == "close"
    assert result.closed
    assert limited.seen.requests == []


async def test_slow_head_after_a_keep_alive_request_gets_408(limited: Limited) -> None:
    first = request_bytes("GET", "/first", close=False)
    drip = [b"GET /second HTTP/1.1\r\n"] + [b"X-Drip-%d: 1\r\n" % n for n in range(40)]
    result = await exchange(limited.router.port, [first, *drip], pause=0.1)
    assert result.statuses == [200, 408]
    assert result.closed
    assert limited.seen.targets == ["/first"]


async def test_partial_head_behind_a_request_is_closed_by_the_keep_alive_timer(
    limited: Limited,
) -> None:
    """A head that starts in the same read as the previous request ends cannot be seen
    (it sits in aiohttp's parser): the keep-alive timer still closes the connection."""
    payload = request_bytes("GET", "/first", close=False) + b"GET /second HTTP/1.1\r\n"
    result = await exchange(limited.router.port, payload)
    assert result.statuses == [200]
    assert result.closed
    assert limited.seen.targets == ["/first"]


async def test_idle_connection_is_not_sent_408(limited: Limited) -> None:
    """After a request, the next head's clock starts with its first byte: an idle keep-alive
    connection is closed by the keep-alive timer, silently."""
    result = await exchange(limited.router.port, request_bytes("GET", "/only", close=False))
    assert result.statuses == [200]
    assert result.closed


# Header and request-line limits (414 or 431, and close)


@pytest.mark.parametrize(
    ("headers", "target", "status"),
    [
        ([("X-Big", "a" * 900)], "/", 200),
        ([("X-Big", "a" * 2000)], "/", 431),
        ([(f"X-Many-{n}", "v") for n in range(15)], "/", 200),
        ([(f"X-Many-{n}", "v") for n in range(30)], "/", 431),
        ([], "/" + "a" * 900, 200),
        ([], "/" + "a" * 2000, 414),
    ],
    ids=["header-under", "header-over", "count-under", "count-over", "line-under", "line-over"],
)
async def test_header_size_count_and_request_line_limits(
    limited: Limited, headers: list[tuple[str, str]], target: str, status: int
) -> None:
    result = await exchange(limited.router.port, request_bytes("GET", target, headers))
    assert result.statuses == [status]
    assert result.closed
    assert len(limited.seen.requests) == (1 if status == 200 else 0)


# Body limits per route


@pytest.mark.parametrize(
    ("target", "size", "status"),
    [
        ("/small", SMALL_LIMIT, 200),
        ("/small", SMALL_LIMIT + 1, 413),
        ("/large", LARGE_LIMIT, 200),
        ("/large", LARGE_LIMIT + 1, 413),
        ("/large", 4 * LARGE_LIMIT, 413),
    ],
)
async def test_body_limit_with_content_length(
    limited: Limited, target: str, size: int, status: int
) -> None:
    body = b"x" * size
    head = request_bytes("POST", target, [("Content-Length", str(size))])
    result = await exchange(limited.router.port, [head, body])
    assert result.statuses == [status]
    if status == 200:
        assert [(r.target, len(r.body), r.complete) for r in limited.seen.requests] == [
            (target, size, True)
        ]
    else:
        assert limited.seen.requests == []


@pytest.mark.parametrize(
    ("target", "size", "status"),
    [
        ("/small", SMALL_LIMIT, 200),
        ("/small", SMALL_LIMIT + 1, 413),
        ("/small", 8 * SMALL_LIMIT, 413),
        ("/large", LARGE_LIMIT, 200),
        ("/large", 2 * LARGE_LIMIT, 413),
    ],
)
async def test_body_limit_with_chunked_body(
    limited: Limited, target: str, size: int, status: int
) -> None:
    # The body looks like requests: none of it may be read as one.
    filler = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
    body = (filler * (size // len(filler) + 1))[:size]
    head = request_bytes("POST", target, [("Transfer-Encoding", "chunked")])
    result = await exchange(limited.router.port, [head, *chunked(body, 512)], pause=0.001)
    assert result.statuses == [status]
    assert "/smuggled" not in limited.seen.targets
    if status == 200:
        assert [(r.target, r.body, r.complete) for r in limited.seen.requests] == [
            (target, body, True)
        ]
    else:
        # The backend may have seen the start of the body, never a complete one.
        limit = SMALL_LIMIT if target == "/small" else LARGE_LIMIT
        for request in limited.seen.requests:
            assert not request.complete
            assert len(request.body) <= limit


# Slow clients do not starve others


async def test_slow_body_does_not_block_other_clients(limited: Limited) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.router.port)
    try:
        writer.write(request_bytes("POST", "/upload", [("Content-Length", "100")]) + b"x" * 10)
        await writer.drain()
        async with asyncio.timeout(READ_LIMIT), ClientSession() as client:
            for n in range(3):
                async with client.get(limited.router.url + f"/other/{n}") as response:
                    assert response.status == 200
        assert limited.seen.targets[:3] == ["/other/0", "/other/1", "/other/2"]
        # The slow client is still being served: finishing its body completes it.
        writer.write(b"x" * 90)
        await writer.drain()
        async with asyncio.timeout(READ_LIMIT):
            answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 200")
        assert [(r.target, len(r.body)) for r in limited.seen.requests[3:]] == [("/upload", 100)]
    finally:
        writer.close()


async def test_slow_head_does_not_block_other_clients() -> None:
    async with limited_router(limits={"header_timeout": 30}) as running:
        _, writer = await asyncio.open_connection("127.0.0.1", running.router.port)
        try:
            writer.write(b"GET /slow HTTP/1.1\r\nHost: app.test\r\nX-Partial: ")
            await writer.drain()
            async with asyncio.timeout(READ_LIMIT), ClientSession() as client:
                async with client.get(running.router.url + "/other") as response:
                    assert response.status == 200
            assert running.seen.targets == ["/other"]
        finally:
            writer.close()


# Admin endpoints are not on the public listener


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/routes"])
async def test_admin_endpoints_are_not_on_the_public_listener(limited: Limited, path: str) -> None:
    async with ClientSession() as client:
        async with client.get(limited.router.admin_url + path) as response:
            assert response.headers.get("X-Backend") is None
        async with client.get(limited.router.url + path) as response:
            assert response.status == 200
            assert response.headers["X-Backend"] == "app"
    assert limited.seen.targets == [path]


async def test_admin_paths_on_a_public_listener_without_routes_are_404() -> None:
    async with run_router({"routes": []}) as router, ClientSession() as client:
        for path in ("/metrics", "/healthz", "/readyz", "/routes"):
            async with client.get(router.url + path) as response:
                assert response.status == 404
                assert "commons_router" not in await response.text()
