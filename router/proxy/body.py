"""Reading a client's request body under the limits of its route.

SECURITY: a body that trickles in must not hold an upstream connection (a backend with a
small worker pool is starved that way: ``slowhttptest -B``). Bodies up to ``buffer_size``
bytes are read whole before any upstream is contacted (nginx's ``proxy_request_buffering``,
in memory); a longer body goes upstream once its first ``buffer_size`` bytes are in, and
then streams. Until its last byte the body must keep an average (counted from the end of
the head) of at least ``min_rate`` bytes per second once ``rate_grace`` seconds have
passed, and never go quiet for ``idle_timeout`` (nginx's ``client_body_timeout``): either
ends in 408 and the connection closed, whether or not the upstream was contacted yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError


class ClientBodyError(Exception):
    """The client's request body failed: the client's fault, never the endpoint's."""

    status = 400
    kind = "client_body"
    message = "The request body could not be read."


class BodyTooLarge(ClientBodyError):
    status = 413
    kind = "body_too_large"


class BodyTimedOut(ClientBodyError):
    status = 408
    kind = "body_timeout"
    message = "The request body was not received in time."


class BodyTooSlow(BodyTimedOut):
    kind = "body_too_slow"
    message = "The request body was not received in time: it arrived too slowly."


class BodyMalformed(ClientBodyError):
    kind = "body_malformed"
    message = "The request body is not validly framed (chunked encoding)."


class BodyLimits:
    """The listener-wide body settings (``limits.*``); built once per configuration."""

    __slots__ = ("buffer_size", "idle_timeout", "min_rate", "rate_grace")

    def __init__(
        self, *, idle_timeout: float, buffer_size: int, min_rate: int, rate_grace: float
    ) -> None:
        self.idle_timeout = idle_timeout
        self.buffer_size = buffer_size
        self.min_rate = min_rate
        """Bytes per second, averaged from the start of the body; 0: no minimum."""
        self.rate_grace = rate_grace


class BodyReader:
    """One request's body, read chunk by chunk under a size limit, the idle timeout and
    the minimum rate."""

    __slots__ = ("_content", "_limit", "_limits", "_loop", "_received", "_start")

    def __init__(
        self,
        request: web.BaseRequest,
        limit: int,
        limits: BodyLimits,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._content = request.content
        self._limit = limit
        self._limits = limits
        self._loop = loop
        self._start = loop.time()
        self._received = 0

    async def buffered(self) -> bytes | AsyncIterator[bytes]:
        """The whole body when it ends within ``buffer_size`` bytes, else a stream that
        starts with what was read so far."""
        size = self._limits.buffer_size
        parts: list[bytes] = []
        got = 0
        while got < size:
            chunk = await self._next()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
            got += len(chunk)
        if self._content.at_eof():
            return b"".join(parts)
        return self._stream(b"".join(parts))

    async def _stream(self, first: bytes) -> AsyncIterator[bytes]:
        if first:
            yield first
        while chunk := await self._next():
            yield chunk

    async def _next(self) -> bytes:
        """The next chunk, ``b""`` at the end."""
        limits = self._limits
        timeout = limits.idle_timeout
        too_slow = False
        if limits.min_rate:
            # The average stays above min_rate until received / min_rate seconds after the
            # start; before rate_grace nothing is asked.
            deadline = self._start + max(limits.rate_grace, self._received / limits.min_rate)
            left = deadline - self._loop.time()
            if left <= 0:
                raise BodyTooSlow()
            if left < timeout:
                timeout = left
                too_slow = True
        try:
            async with asyncio.timeout(timeout):
                chunk = await self._content.readany()
        except TimeoutError:
            raise (BodyTooSlow() if too_slow else BodyTimedOut()) from None
        except HttpProcessingError:
            raise BodyMalformed() from None
        self._received += len(chunk)
        if self._received > self._limit:
            raise BodyTooLarge()
        return chunk
