"""Upstream failures: the client's page names the route and what happened, never an
internal address (dev mode may); the log and the access-log line say the error kind and
the endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.testing import run_router
from tests.support.processes import free_port
from tests.support.rawhttp import exchange, request_bytes


@contextlib.asynccontextmanager
async def raw_backend(answer: bytes | None) -> AsyncIterator[int]:
    """A backend that reads a request head, then sends ``answer`` and closes (or, for
    None, says nothing and keeps the connection)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            if answer is None:
                await reader.read()
            else:
                writer.write(answer)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def config(port: int) -> dict[str, Any]:
    return {
        "routes": [
            {
                "name": "shop",
                "upstreams": [{"url": f"http://127.0.0.1:{port}"}],
                "retries": 0,
                "timeouts": {"read": "300ms"},
            }
        ]
    }


CASES = {
    "refused": (None, 502, "connect", "connection refused"),
    "garbage": (b"NOT HTTP AT ALL\r\n\r\n", 502, "protocol", "not valid HTTP/1.1"),
    "closed": (b"", 502, "connect", "closed the connection before answering"),
    "silent": ("silent", 504, "timeout", "did not answer in time"),
}


@pytest.mark.parametrize(("answer", "status", "kind", "said"), CASES.values(), ids=CASES.keys())
async def test_error_page_names_the_route_not_the_address(
    caplog: pytest.LogCaptureFixture, answer: Any, status: int, kind: str, said: str
) -> None:
    caplog.set_level(logging.INFO)
    async with contextlib.AsyncExitStack() as stack:
        if answer is None:
            port = free_port()
        else:
            port = await stack.enter_async_context(
                raw_backend(None if answer == "silent" else answer)
            )
        router = await stack.enter_async_context(run_router(config(port)))
        result = await exchange(router.port, request_bytes("GET", "/cart"))
        log = await router.access_log()
    page = result.only.body.decode()
    assert result.only.status == status
    assert "route &#x27;shop&#x27;" in page
    assert said in page
    assert "127.0.0.1" not in page
    assert str(port) not in page
    endpoint = f"http://127.0.0.1:{port}"
    assert [(line["status"], line["error"], line["upstream"]) for line in log] == [
        (status, kind, endpoint)
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "commons_router.proxy"]
    assert any(endpoint in message and f"({kind})" in message for message in logged), logged


async def test_dev_mode_error_page_keeps_the_detail() -> None:
    port = free_port()
    async with run_router(config(port), dev_mode=True) as router:
        result = await exchange(router.port, request_bytes("GET", "/cart"))
    assert result.only.status == 502
    assert f"127.0.0.1:{port}" in result.only.body.decode()
