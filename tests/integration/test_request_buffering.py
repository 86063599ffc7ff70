"""Slow request bodies: buffered before the upstream is contacted, and held to a minimum
average rate (while buffering and while streaming). Raw sockets on both sides: the
backend counts the connections it gets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from router.testing import RunningRouter, run_router
from tests.support.rawhttp import exchange, request_bytes


@dataclass
class CountingBackend:
    port: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    bodies: list[tuple[int, bool]] = field(default_factory=list)
    """(bytes received, complete) for every request."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            try:
                body = await reader.readexactly(length)
                self.bodies.append((len(body), True))
            except asyncio.IncompleteReadError as exc:
                self.bodies.append((len(exc.partial), False))
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def buffered_router(**limits: Any) -> AsyncIterator[tuple[RunningRouter, CountingBackend]]:
    backend = CountingBackend()
    server = await asyncio.start_server(backend.serve, "127.0.0.1", 0)
    backend.port = server.sockets[0].getsockname()[1]
    config = {
        "limits": {"body_timeout": "5s", **limits},
        "routes": [{"name": "app", "upstreams": [{"url": f"http://127.0.0.1:{backend.port}"}]}],
    }
    try:
        async with run_router(config) as router:
            yield router, backend
    finally:
        server.close()


async def test_body_within_the_buffer_reaches_the_upstream_only_once_complete() -> None:
    size = 200_000
    async with buffered_router() as (router, backend):
        reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
        try:
            writer.write(request_bytes("POST", "/upload", [("Content-Length", str(size))]))
            writer.write(b"x" * (size // 2))
            await writer.drain()
            # Half the body is in: no upstream connection may be opened for it yet.
            connected = asyncio.ensure_future(backend.connected.wait())
            done, _ = await asyncio.wait({connected}, timeout=0.5)
            connected.cancel()
            assert not done, "the upstream was contacted before the body was complete"
            writer.write(b"x" * (size - size // 2))
            await writer.drain()
            async with asyncio.timeout(5):
                answer = await reader.read()
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert backend.bodies == [(size, True)]


async def test_trickling_body_gets_408_after_the_grace_without_an_upstream() -> None:
    async with buffered_router(body_min_rate=1000, body_rate_grace="300ms") as (router, backend):
        head = request_bytes("POST", "/upload", [("Content-Length", "1000")])
        result = await exchange(router.port, [head] + [b"x" * 5] * 40, pause=0.1)
        log = await router.access_log()
    response = result.only
    assert response.status == 408
    assert response.headers["Connection"].lower() == "close"
    assert result.closed
    assert b"too slowly" in response.body
    assert not backend.connected.is_set()
    assert [(line["status"], line["error"]) for line in log] == [(408, "body_too_slow")]


async def test_streaming_body_below_the_rate_is_cut() -> None:
    """Past the buffer the body streams upstream; falling below the rate still ends it."""
    async with buffered_router(
        request_buffer_size="1KiB", body_min_rate=1000, body_rate_grace="300ms"
    ) as (router, backend):
        head = request_bytes("POST", "/upload", [("Content-Length", "100000")])
        result = await exchange(router.port, [head + b"x" * 2048] + [b"x" * 5] * 40, pause=0.1)
        log = await router.access_log()
    assert result.statuses == [408]
    assert result.closed
    assert backend.connected.is_set()
    assert all(not complete for _, complete in backend.bodies)
    assert [(line["status"], line["error"]) for line in log] == [(408, "body_too_slow")]


async def test_body_above_the_rate_passes() -> None:
    async with buffered_router(body_min_rate=100, body_rate_grace="200ms") as (router, backend):
        head = request_bytes("POST", "/upload", [("Content-Length", "1000")])
        result = await exchange(router.port, [head] + [b"x" * 100] * 10, pause=0.1)
    assert result.statuses == [200]
    assert backend.bodies == [(1000, True)]
