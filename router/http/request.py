"""The request class of the public listener: runs the context's response hooks."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import ERROR, RequestHandler

from router.api.context import CONTEXT_KEY
from router.http.drain import DrainSignal


class RouterRequest(web.BaseRequest):
    _drain = DrainSignal()  # the factory sets the process's; this one for clones

    @property
    def keep_alive(self) -> bool:
        # Read when the response is prepared, so answers to requests that began before a
        # drain say ``Connection: close`` too.
        return not (self._message.should_close or self._drain.draining)

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        # aiohttp calls this from StreamResponse.prepare(), i.e. for every response just
        # before its headers are written: the one place all responses pass through.
        ctx = self._state.get(CONTEXT_KEY)
        if ctx is not None and ctx.response_hooks:
            for hook in ctx.response_hooks:
                hook(self, response)


_REFUSED = ERROR._replace(version=HttpVersion11)
"""What aiohttp hands its error handler for an unparsable request, answered in HTTP/1.1
(aiohttp's own placeholder says HTTP/1.0, and the status line repeats it)."""


def request_factory(loop: asyncio.AbstractEventLoop, drain: DrainSignal) -> Any:
    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> RouterRequest:
        if message is ERROR:
            message = _REFUSED
        request = RouterRequest(message, payload, protocol, writer, task, loop)
        request._drain = drain
        return request

    return make
