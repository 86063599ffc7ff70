"""Request smuggling: hand-written framing attacks sent over raw sockets to a real router.

Every attack is followed, in the same write, by a second request (``GET /smuggled``). A
router that reads the framing differently from a backend would forward that second
request; here the backend counts every request it receives, so a smuggled one shows.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator

import aiohttp.http_parser
import pytest
from aiohttp import web_protocol

from router.http.protocol import c_parser_in_use
from router.testing import RunningRouter, run_router
from tests.support.rawhttp import (
    RecordingBackend,
    exchange,
    recording_backend,
    request_bytes,
)

HOST = b"Host: app.test\r\n"
SMUGGLED = request_bytes("GET", "/smuggled")


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[RecordingBackend, RunningRouter]]:
    async with recording_backend("app") as (seen, backend):
        config = {"routes": [{"name": "app", "upstreams": [{"url": backend.url}]}]}
        async with run_router(config) as router:
            yield seen, router


def post(*header_lines: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /framing " + version + b"\r\n" + HOST + b"".join(header_lines) + b"\r\n" + body


ATTACKS: dict[str, bytes] = {
    # CL.TE / TE.CL: two ways to find the end of the body.
    "content-length then transfer-encoding": post(
        b"Content-Length: 4\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"
    ),
    "transfer-encoding then content-length": post(
        b"Transfer-Encoding: chunked\r\n", b"Content-Length: 4\r\n", body=b"0\r\n\r\n"
    ),
    "content-length twice, same value": post(
        b"Content-Length: 5\r\n", b"Content-Length: 5\r\n", body=b"hello"
    ),
    "content-length twice, different values": post(
        b"Content-Length: 5\r\n", b"Content-Length: 6\r\n", body=b"hello!"
    ),
    "list-valued content-length": post(b"Content-Length: 5, 5\r\n", body=b"hello"),
    "content-length +5": post(b"Content-Length: +5\r\n", body=b"hello"),
    "content-length -5": post(b"Content-Length: -5\r\n", body=b"hello"),
    "content-length in hex": post(b"Content-Length: 0x5\r\n", body=b"hello"),
    "transfer-encoding gzip": post(b"Transfer-Encoding: gzip\r\n", body=b"0\r\n\r\n"),
    "transfer-encoding identity": post(b"Transfer-Encoding: identity\r\n", body=b"hello"),
    "transfer-encoding gzip, chunked": post(
        b"Transfer-Encoding: gzip, chunked\r\n", body=b"0\r\n\r\n"
    ),
    "transfer-encoding chunked, chunked": post(
        b"Transfer-Encoding: chunked, chunked\r\n", body=b"0\r\n\r\n"
    ),
    "transfer-encoding on two lines": post(
        b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"
    ),
    "transfer-encoding xchunked": post(b"Transfer-Encoding: xchunked\r\n", body=b"0\r\n\r\n"),
    "space before the colon": post(b"Transfer-Encoding : chunked\r\n", body=b"0\r\n\r\n"),
    "obs-fold": post(b"X-Note: a\r\n", b" folded\r\n", b"Content-Length: 0\r\n"),
    "obs-fold hiding transfer-encoding": post(
        b"Transfer-Encoding:\r\n", b" chunked\r\n", body=b"0\r\n\r\n"
    ),
    "bare LF everywhere": b"GET /framing HTTP/1.1\nHost: app.test\n\n",
    "bare LF after one header": b"GET /framing HTTP/1.1\r\nHost: app.test\nX-A: b\r\n\r\n",
    "bare CR": b"GET /framing HTTP/1.1\r\nHost: app.test\rX-A: b\r\n\r\n",
    "NUL in a header value": b"GET /framing HTTP/1.1\r\nHost: app.test\r\nX-A: b\x00c\r\n\r\n",
    "two Host headers": b"GET /framing HTTP/1.1\r\nHost: app.test\r\nHost: evil.test\r\n\r\n",
    "no Host header in HTTP/1.1": b"GET /framing HTTP/1.1\r\n\r\n",
    "HTTP/1.0 with transfer-encoding": post(
        b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n", version=b"HTTP/1.0"
    ),
    "HTTP/1.0 keep-alive with transfer-encoding": post(
        b"Connection: keep-alive\r\n",
        b"Transfer-Encoding: chunked\r\n",
        body=b"0\r\n\r\n",
        version=b"HTTP/1.0",
    ),
    "HTTP/2.0 request line": b"GET /framing HTTP/2.0\r\nHost: app.test\r\n\r\n",
    "HTTP/0.9 request line with headers": b"GET /framing HTTP/0.9\r\nHost: app.test\r\n\r\n",
    "HTTP/1.2 request line": b"GET /framing HTTP/1.2\r\nHost: app.test\r\n\r\n",
    "chunk size with a trailing space": post(
        b"Transfer-Encoding: chunked\r\n", body=b"5 \r\nhello\r\n0\r\n\r\n"
    ),
    "chunk size ended by bare LF": post(
        b"Transfer-Encoding: chunked\r\n", body=b"5\nhello\r\n0\r\n\r\n"
    ),
    "chunk size overflow": post(
        b"Transfer-Encoding: chunked\r\n", body=b"1" + b"0" * 17 + b"\r\nhello\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
async def test_bad_framing_is_400_and_closes_the_connection(
    recorder: tuple[RecordingBackend, RunningRouter], attack: bytes
) -> None:
    seen, router = recorder
    result = await exchange(router.port, attack + SMUGGLED)
    assert result.statuses == [400], result.data
    assert result.closed, "the connection was kept alive after a framing error"
    assert seen.requests == [], "the router forwarded a request it should have refused"


@pytest.mark.parametrize(
    "version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/2.0\r\nConnection: keep-alive"]
)
async def test_request_lines_other_than_http_1_0_and_1_1_are_400(
    recorder: tuple[RecordingBackend, RunningRouter], version: bytes
) -> None:
    """llhttp parses these versions; alone (nothing pipelined behind) they reach the router."""
    seen, router = recorder
    result = await exchange(router.port, b"GET /framing " + version + b"\r\n" + HOST + b"\r\n")
    assert result.statuses == [400]
    assert result.closed
    assert seen.requests == []


async def test_accepted_requests_reach_the_backend_exactly_once(
    recorder: tuple[RecordingBackend, RunningRouter],
) -> None:
    """The harness sees pipelined requests: sound framing passes every request once."""
    seen, router = recorder
    inner = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    chunked_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner)
    payload = (
        request_bytes("GET", "/one", close=False)
        + request_bytes("POST", "/two", [("Content-Length", "5")], b"hello", close=False)
        + request_bytes("POST", "/three", [("Transfer-Encoding", "chunked")], chunked_body)
    )
    result = await exchange(router.port, payload)
    assert result.statuses == [200, 200, 200]
    assert result.closed
    assert seen.targets == ["/one", "/two", "/three"]
    assert [r.body for r in seen.requests] == [b"", b"hello", inner]
    assert all(r.complete for r in seen.requests)


async def test_framing_error_after_a_good_request_keeps_only_the_good_one(
    recorder: tuple[RecordingBackend, RunningRouter],
) -> None:
    seen, router = recorder
    first = request_bytes("GET", "/first", close=False)
    attack = ATTACKS["content-length then transfer-encoding"] + SMUGGLED
    result = await exchange(router.port, [first, attack], pause=0.2)
    assert result.statuses == [200, 400]
    assert result.closed
    assert seen.targets == ["/first"]


async def test_router_level_framing_refusal_names_the_problem(
    recorder: tuple[RecordingBackend, RunningRouter],
) -> None:
    """``gzip, chunked`` passes llhttp; the router's own check refuses it."""
    seen, router = recorder
    attack = post(b"Transfer-Encoding: gzip, chunked\r\n", b"Accept: application/json\r\n")
    result = await exchange(router.port, attack + b"0\r\n\r\n" + SMUGGLED)
    response = result.only
    assert response.status == 400
    assert "Transfer-Encoding" in response.json()["message"]
    assert response.headers.get("Connection", "").lower() == "close"
    assert result.closed
    assert seen.requests == []


# C parser


def test_aiohttp_c_parser_is_the_one_in_use() -> None:
    compiled = importlib.import_module("aiohttp._http_parser")
    assert "AIOHTTP_NO_EXTENSIONS" not in os.environ
    assert aiohttp.http_parser.HttpRequestParser is compiled.HttpRequestParser
    assert c_parser_in_use()


async def test_router_connections_use_the_c_parser(
    recorder: tuple[RecordingBackend, RunningRouter],
) -> None:
    _, router = recorder
    compiled = importlib.import_module("aiohttp._http_parser")
    runner = router.runtime._public_runners[0]
    assert runner is not None and runner.server is not None
    # A connection that has sent part of a head is still open: look at its parser.
    _, writer = await asyncio.open_connection("127.0.0.1", router.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\n")
        await writer.drain()
        for _ in range(50):
            if runner.server.connections:
                break
            await asyncio.sleep(0.01)
        parsers = [type(handler._parser) for handler in runner.server.connections]
        assert parsers == [compiled.HttpRequestParser]
    finally:
        writer.close()


async def test_router_refuses_to_start_with_the_python_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web_protocol, "HttpRequestParser", aiohttp.http_parser.HttpRequestParserPy)
    with pytest.raises(RuntimeError, match="C HTTP parser"):
        async with run_router({"routes": []}):
            pass


# Absolute-form request targets: accepted only when the authority is the Host header.


async def test_absolute_form_with_the_host_header_authority_is_routed_as_its_path(
    recorder: tuple[RecordingBackend, RunningRouter],
) -> None:
    seen, router = recorder
    result = await exchange(
        router.port, request_bytes("GET", "http://App.Test/abs/path?q=1", host="app.test")
    )
    assert result.statuses == [200]
    assert seen.targets == ["/abs/path?q=1"]
    assert seen.requests[0].value("Host") == "app.test"
    result = await exchange(
        router.port, request_bytes("GET", "https://app.test?only=query", host="APP.TEST")
    )
    assert result.statuses == [200]
    assert seen.targets[-1] == "/?only=query"


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("http://evil.test/abs", "app.test"),
        ("http://app.test:8443/abs", "app.test"),
        ("http://app.test/abs", "app.test:8080"),
        ("http://app.test./abs", "app.test"),
        ("http://user@app.test/abs", "app.test"),
        ("ftp://app.test/abs", "app.test"),
        ("app.test/abs", "app.test"),
        ("*", "app.test"),
    ],
)
async def test_absolute_form_naming_another_authority_is_400(
    recorder: tuple[RecordingBackend, RunningRouter], target: str, host: str
) -> None:
    seen, router = recorder
    result = await exchange(router.port, request_bytes("GET", target, host=host))
    assert result.statuses == [400]
    assert seen.requests == []


async def test_connect_is_refused(recorder: tuple[RecordingBackend, RunningRouter]) -> None:
    seen, router = recorder
    result = await exchange(router.port, request_bytes("CONNECT", "evil.test:443"))
    assert result.statuses == [400]
    assert seen.requests == []
