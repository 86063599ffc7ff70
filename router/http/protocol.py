"""aiohttp's connection handler with a request-head read timeout.

SECURITY: aiohttp has no header read timeout, so a client dribbling a request head one
byte at a time (slowloris) would hold a connection until the keep-alive timer. Here the
clock starts at the first byte of each request head; if the head is not complete in
``header_timeout`` seconds the client gets 408 and the connection is closed.

Known limit: bytes of a next request head that arrive in the same read as the end of the
previous request are buffered inside aiohttp's parser, where they cannot be seen; such a
connection is closed by the keep-alive timer (``keepalive_timeout``), like an idle one.

SECURITY: the router refuses to start unless aiohttp's C HTTP parser (llhttp, strict mode)
parses requests: the pure-Python fallback (``AIOHTTP_NO_EXTENSIONS``, or a missing
extension) is laxer, and request smuggling lives in the differences between parsers.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.web_protocol import RequestHandler

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Connection: close\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 43\r\n"
    b"\r\n"
    b"The request head was not received in time.\n"
)


def c_parser_in_use() -> bool:
    """True when aiohttp's server connections parse requests with the C (llhttp) parser."""
    try:
        module = importlib.import_module("aiohttp._http_parser")
    except ImportError:
        return False
    compiled: object = getattr(module, "HttpRequestParser", None)
    in_use: object = getattr(web_protocol, "HttpRequestParser", None)
    return compiled is not None and in_use is compiled


class GuardedRequestHandler(RequestHandler):
    __slots__ = ("_head_deadline", "_header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        # A new request head starts when bytes arrive while no request is being handled
        # and none is queued: start its clock.
        waiting_for_head = (
            self._head_deadline is None
            and not self._request_in_progress
            and not self._messages
            and not self._upgraded
        )
        super().data_received(data)
        if self._messages or self._upgraded:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None
        elif waiting_for_head and data and not self._force_close:
            self._head_deadline = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._messages or self._request_in_progress or self._upgraded:
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_TIMEOUT_RESPONSE)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)


class GuardedServer(web.Server):
    """A low-level aiohttp server whose connections use :class:`GuardedRequestHandler`."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        if not c_parser_in_use():
            raise RuntimeError(
                "aiohttp's C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS is set or the "
                "extension is missing); refusing to serve with the laxer pure-Python parser"
            )
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs
        )
