"""A client that stops sending its request body gets 408 and loses the connection."""

from __future__ import annotations

import pytest

from router.testing import run_router
from tests.support.rawhttp import exchange, recording_backend


@pytest.mark.parametrize(
    "head_and_partial_body",
    [
        # Known length, small: read whole before forwarding.
        b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\n0123456789",
        # Known length, large: streamed.
        b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000,
        # Chunked: streamed.
        b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["small", "large", "chunked"],
)
async def test_stalled_body_is_408_and_close(head_and_partial_body: bytes) -> None:
    async with recording_backend("app") as (recorder, backend):
        config = {
            "limits": {"body_timeout": "300ms"},
            "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
        }
        async with run_router(config) as router:
            result = await exchange(router.port, head_and_partial_body)
            log = await router.access_log()
    assert result.statuses == [408]
    assert result.closed
    assert b"not received in time" in result.only.body
    # The backend never saw a complete request; the endpoint was not blamed.
    assert all(not seen.complete for seen in recorder.requests)
    assert log[-1]["status"] == 408


async def test_body_arriving_steadily_is_not_cut() -> None:
    async with recording_backend("app") as (recorder, backend):
        config = {
            "limits": {"body_timeout": "1s"},
            "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
        }
        async with run_router(config) as router:
            head = (
                b"POST /upload HTTP/1.1\r\nHost: app\r\nConnection: close\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            chunks = [b"3\r\nabc\r\n"] * 5 + [b"0\r\n\r\n"]
            result = await exchange(router.port, [head, *chunks], pause=0.2)
    assert result.statuses[:1] == [200]
    assert recorder.requests[-1].complete
    assert recorder.requests[-1].body == b"abc" * 5
