"""Requests the router refuses before handling them, and connections it closes on its own:
what the client gets, what is logged and counted, and when the connection ends.

Everything goes over raw sockets to a running router with a recording backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
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

MARK = "EchoMarker"
"""Put in every refused request: the answer must never repeat it."""
NINE_KB = 9 * 1024


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[RunningRouter, RecordingBackend]]:
    async with recording_backend("app") as (seen, backend):
        config: dict[str, Any] = {
            "limits": {"header_timeout": 0.5, "keepalive_timeout": 30},
            "routes": [
                {
                    "name": "small",
                    "path": "/small",
                    "max_body_size": 1024,
                    "upstreams": [{"url": backend.url}],
                },
                {"name": "app", "upstreams": [{"url": backend.url}]},
            ],
        }
        async with run_router(config) as router:
            yield router, seen


REFUSED: dict[str, tuple[bytes, int, str]] = {
    "9 KB request line": (
        request_bytes("GET", "/" + MARK + "a" * NINE_KB),
        414,
        "request_line_too_long",
    ),
    "9 KB header": (
        request_bytes("GET", "/", [("X-Big", MARK + "a" * NINE_KB)]),
        431,
        "header_too_large",
    ),
    "9 KB header name": (
        request_bytes("GET", "/", [("X-" + MARK + "a" * NINE_KB, "1")]),
        431,
        "header_too_large",
    ),
    "9 KB cookie": (
        request_bytes("GET", "/", [("Cookie", f"s={MARK}" + "a" * NINE_KB)]),
        431,
        "header_too_large",
    ),
    "200 headers": (
        request_bytes("GET", "/", [(f"X-{MARK}-{n}", MARK) for n in range(200)]),
        431,
        "too_many_headers",
    ),
    "HTTP/2.0 request line": (
        request_bytes("GET", "/" + MARK, version="HTTP/2.0"),
        400,
        "unsupported_version",
    ),
    "HTTP/0.9 request line": (
        request_bytes("GET", "/" + MARK, version="HTTP/0.9"),
        400,
        "unsupported_version",
    ),
    "HTTP/0.9 simple request": (f"GET /{MARK}\r\n\r\n".encode(), 400, "unsupported_version"),
    "content-length and transfer-encoding": (
        request_bytes(
            "POST", "/" + MARK, [("Content-Length", "5"), ("Transfer-Encoding", "chunked")]
        )
        + b"0\r\n\r\n",
        400,
        "bad_request",
    ),
    "transfer-encoding gzip, chunked": (
        request_bytes("POST", "/" + MARK, [("Transfer-Encoding", "gzip, chunked")]) + b"0\r\n\r\n",
        400,
        "bad_framing",
    ),
    "NUL in a header": (request_bytes("GET", "/", [("X-A", MARK + "\x00")]), 400, "bad_request"),
    "not HTTP at all": (f"{MARK} {MARK}\r\n\r\n".encode(), 400, "bad_request"),
}


@pytest.mark.parametrize(("payload", "status", "reason"), REFUSED.values(), ids=REFUSED.keys())
async def test_refused_request_gets_our_page_one_log_line_and_a_metric(
    guarded: tuple[RunningRouter, RecordingBackend],
    caplog: pytest.LogCaptureFixture,
    payload: bytes,
    status: int,
    reason: str,
) -> None:
    router, seen = guarded
    caplog.set_level(logging.DEBUG)
    result = await exchange(router.port, payload)
    response = result.only
    assert (response.version, response.status) == ("HTTP/1.1", status)
    assert response.headers["Connection"].lower() == "close"
    assert result.closed
    assert MARK.lower().encode() not in result.data.lower()
    assert b"commons-router" in response.body
    assert seen.requests == []
    log = await router.access_log()
    assert len(log) == 1
    line = log[0]
    assert (line["status"], line["error"], line["client"]) == (status, reason, "127.0.0.1")
    assert line["request_id"] == response.headers["X-Request-Id"]
    async with ClientSession() as client, client.get(router.admin_url + "/metrics") as answer:
        metrics = await answer.text()
    assert f'commons_router_rejected_requests_total{{reason="{reason}"}} 1' in metrics
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage()
        assert MARK not in record.getMessage()


async def test_refused_request_after_a_good_one_answers_both(
    guarded: tuple[RunningRouter, RecordingBackend],
) -> None:
    router, seen = guarded
    first = request_bytes("GET", "/first", close=False)
    result = await exchange(router.port, [first, REFUSED["200 headers"][0]], pause=0.2)
    assert result.statuses == [200, 431]
    assert result.closed
    assert seen.targets == ["/first"]


# Closing on time


async def test_connection_that_sends_nothing_is_closed_after_the_head_timeout(
    guarded: tuple[RunningRouter, RecordingBackend],
) -> None:
    """The keep-alive timeout is 30 s here; the head timeout (0.5 s) runs from accept."""
    router, _ = guarded
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    try:
        async with asyncio.timeout(READ_LIMIT):
            assert await reader.read() == b""
    finally:
        writer.close()
    # Nothing was asked, so nothing is answered or logged.
    assert await router.access_log() == []


async def test_partial_first_head_gets_408_and_a_log_line(
    guarded: tuple[RunningRouter, RecordingBackend],
) -> None:
    router, _ = guarded
    result = await exchange(router.port, [b"GET / HTTP/1.1\r\n", b"Host: app.test\r\n"])
    assert result.statuses == [408]
    assert result.closed
    log = await router.access_log()
    assert [(line["status"], line["error"]) for line in log] == [(408, "head_timeout")]


async def test_declared_oversize_body_gets_413_and_close_without_reading_it(
    guarded: tuple[RunningRouter, RecordingBackend],
) -> None:
    """20 MB declared on a 1 KiB route: 413 with ``Connection: close`` and the connection
    ends at once, while the client is still sending; nothing else (no 408) follows."""
    router, seen = guarded
    head = request_bytes("POST", "/small", [("Content-Length", "20000000")], close=False)
    pieces = [head] + [b"x" * 1000] * 40
    result = await exchange(router.port, pieces, pause=0.1)
    response = result.only
    assert response.status == 413
    assert response.headers["Connection"].lower() == "close"
    assert result.closed
    assert b"408" not in result.data
    assert seen.requests == []


async def test_body_bytes_after_an_answer_are_not_taken_for_a_slow_head(
    guarded: tuple[RunningRouter, RecordingBackend],
) -> None:
    """A request answered without reading its body (400 here): the rest of the body that
    keeps arriving is read and dropped, never timed as a request head (no 408)."""
    router, seen = guarded
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    received = bytearray()
    try:
        head = request_bytes("POST", "/a%2Fb", [("Content-Length", "100000")], close=False)
        writer.write(head + b"x" * 100)
        for _ in range(10):  # 1 s: twice the head timeout
            await asyncio.sleep(0.1)
            writer.write(b"x" * 100)
            await writer.drain()
        with contextlib.suppress(TimeoutError):
            while chunk := await asyncio.wait_for(reader.read(65536), 0.3):
                received += chunk
    finally:
        writer.close()
    assert bytes(received).startswith(b"HTTP/1.1 400")
    assert b"408" not in received
    assert seen.requests == []


@pytest.mark.parametrize(
    "body", [b"5 \r\nhello\r\n0\r\n\r\n", b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n"]
)
async def test_bad_chunk_after_the_head_gets_400_at_once(
    guarded: tuple[RunningRouter, RecordingBackend], body: bytes
) -> None:
    """The head arrives alone and the request is being handled when the bad chunk comes:
    its body read fails at once (not after the body timeout), and the connection closes."""
    router, seen = guarded
    head = request_bytes("POST", "/upload", [("Transfer-Encoding", "chunked")], close=False)
    result = await exchange(router.port, [head, body], pause=0.2)
    assert result.statuses == [400]
    assert result.closed
    assert all(not request.complete for request in seen.requests)
    log = await router.access_log()
    assert [(line["status"], line["error"]) for line in log] == [(400, "body_malformed")]
