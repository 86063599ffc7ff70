"""One upgraded connection to an endpoint: the upgrade handshake, then raw bytes.

The handshake is a request like any other (its head from proxy/wire.py, the connection
opened by the upstream client with the route's connect timeout); its answer head is parsed
by llhttp. Only a 101 turns the connection into a tunnel, whose bytes are then relayed as
they come and never parsed (as nginx does); any other answer ends the connection unread.

Flow control both ways: reading from the endpoint pauses while :data:`HIGH_WATER` bytes
wait to be taken, and the other side is told (``on_pause_writing``/``on_resume_writing``)
when the endpoint does not take what is written to it fast enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, cast

import httptools

from router.proxy.wire import Disconnected, Origin, ProtocolViolation, UpstreamTimeouts

HIGH_WATER: Final = 256 * 1024
"""Bytes from the endpoint buffered before reading from it pauses."""


def _nothing() -> None:
    pass


class UpstreamTunnel(asyncio.Protocol):
    """A connection carrying one upgrade handshake and, after a 101, the new protocol."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: Origin,
        on_closed: Callable[[UpstreamTunnel], None],
    ) -> None:
        self.loop = loop
        self.origin = origin
        self._on_closed = on_closed
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # The answer head.
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.connection: str | None = None
        """The answer's Connection header lines joined, or None."""
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._reason = b""
        self._head_waiter: asyncio.Future[None] | None = None
        # After the 101.
        self.switched = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.on_pause_writing: Callable[[], None] = _nothing
        self.on_resume_writing: Callable[[], None] = _nothing

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but are ones.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.switched:
            self._feed(data)
            return
        parser = self._parser
        if parser is None or self._head_waiter is None:
            # Nothing was asked, or the answer was not a 101: nothing more is read.
            self.abort()
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # llhttp stops at the end of a 101 head; what follows is the new protocol.
            if self.status == 101:
                self._switch(data[upgrade.args[0] :])
                return
            self._fail(ProtocolViolation("the endpoint switched protocols unasked"))
        except httptools.HttpParserError as exc:
            if self.status == 101:
                # A 101 without an Upgrade header: llhttp refuses to go on. The head is
                # complete; whoever asked decides what such an answer is worth.
                self._switch(b"")
                return
            self._fail(ProtocolViolation(f"malformed HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_closed(self)
        self._fail(Disconnected("the endpoint closed the connection before answering"))
        self._eof = True
        self._wake()
        self.on_resume_writing()

    def pause_writing(self) -> None:
        self.on_pause_writing()

    def resume_writing(self) -> None:
        self.on_resume_writing()

    # -- httptools callbacks -------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 10 and name.lower() == b"connection":
            line = value.decode("latin-1")
            self.connection = line if self.connection is None else f"{self.connection}, {line}"
        self.headers.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: the real answer follows.
            self._reason = b""
            self.headers = []
            self.connection = None
            return
        self.status = status
        self.reason = self._reason.decode("latin-1")
        if status != 101:
            # Not switching: the answer is all there is to know; its body is not read.
            self._settle()

    # -- the handshake -----------------------------------------------------------------

    async def handshake(self, head: bytes, timeouts: UpstreamTimeouts) -> None:
        """Send the upgrade request and wait for the answer head (``status`` etc.).

        The wait is bounded by the route's read and total timeouts, whichever is shorter:
        the tunnel itself, once open, has no deadline.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            # The endpoint spoke before being asked (and was cut off), or hung up.
            raise Disconnected("the endpoint closed the connection before answering")
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._head_waiter = waiter
        transport.write(head)
        limits = [t for t in (timeouts.read, timeouts.total) if t is not None]
        try:
            async with asyncio.timeout(min(limits) if limits else None):
                await waiter
        except BaseException:
            self.abort()
            raise
        if self.status != 101:
            self.abort()

    def _switch(self, tail: bytes) -> None:
        self._parser = None
        self.switched = True
        self._settle()
        if tail:
            self._feed(tail)

    def _settle(self) -> None:
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            self.abort()

    # -- the tunnel --------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            if self.transport is not None:
                self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def read(self) -> bytes:
        """The bytes received from the endpoint and not yet taken; ``b""`` at the end."""
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = self.loop.create_future()
            await self._waiter
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._reading_paused:
            self._reading_paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        """Close after what was written went out."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
