"""One keep-alive connection to an upstream endpoint and the answer it carries.

Answers are parsed by llhttp (httptools), the same strict parser family the server side
uses. A connection goes back to its pool only when the parser read the previous answer
to its end and the endpoint did not ask to close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final, Protocol, cast

import httptools

from router.proxy.wire import (
    BodyBroken,
    Disconnected,
    Origin,
    ProtocolViolation,
    RequestBodyFailed,
    UpstreamTimeouts,
)


class ConnectionPool(Protocol):
    """Where a connection returns when its exchange is done (the upstream client)."""

    loop: asyncio.AbstractEventLoop

    def keep(self, connection: UpstreamConnection) -> None:
        """Take back a connection that may carry another exchange."""

    def forget(self, connection: UpstreamConnection) -> None:
        """Drop a connection that closed."""

HIGH_WATER: Final = 256 * 1024
"""Response bytes buffered before reading from the upstream pauses."""
_LAST_CHUNK: Final = b"0\r\n\r\n"


class UpstreamResponse:
    """An answer whose head has arrived; the body is read with :meth:`read` or
    :meth:`next_chunk`, and :meth:`release` must be called once it is done with."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_complete",
        "_connection",
        "_error",
        "_waiter",
        "connection",
        "content_length",
        "headers",
        "reason",
        "status",
        "until_eof",
    )

    def __init__(
        self,
        connection: UpstreamConnection,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        connection_header: str | None,
        content_length: int | None,
        until_eof: bool,
    ) -> None:
        self._connection = connection
        self.status = status
        self.reason = reason
        self.headers = headers
        self.connection = connection_header
        """The Connection header's lines joined, or None: names what not to pass on."""
        self.content_length = content_length
        self.until_eof = until_eof
        """No length and not chunked: the body ends when the connection closes."""
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- fed by the connection ---------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._connection.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._complete and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- read by the forwarder -----------------------------------------------------------

    async def next_chunk(self) -> bytes:
        """The body bytes received so far and not yet taken; ``b""`` at the end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            self._waiter = self._connection.loop.create_future()
            await self._waiter
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        if self._buffered > HIGH_WATER:
            self._connection.resume_reading()
        self._buffered = 0
        return data

    async def read(self) -> bytes:
        """The whole body (for answers known to be small)."""
        while not self._complete:
            if self._error is not None:
                raise self._error
            self._waiter = self._connection.loop.create_future()
            await self._waiter
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return data

    def release(self) -> None:
        """Give the connection back to the pool when the exchange ended cleanly."""
        self._connection.exchange_done(self._complete and self._error is None)


class UpstreamConnection(asyncio.Protocol):
    """One connection to an endpoint, carrying one exchange at a time."""

    def __init__(self, client: ConnectionPool, origin: Origin) -> None:
        self.client = client
        self.origin = origin
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._exchanges = 0
        # The exchange in progress.
        self._busy = False
        self._head_is_only_answer = False
        """HEAD: the answer has no body whatever its Content-Length says."""
        self._head_waiter: asyncio.Future[UpstreamResponse] | None = None
        self._response: UpstreamResponse | None = None
        self._reason = b""
        self._headers: list[tuple[str, str]] = []
        self._content_length: int | None = None
        self._chunked = False
        self._connection_header: bytes | None = None
        self._informational = False
        self._received_any = False
        self._keep_alive = False
        self._writer: asyncio.Task[None] | None = None
        self._body_error: BaseException | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        # Deadlines of the exchange in progress (see _on_timer).
        self._timing = False
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._read_timeout: float | None = None
        self._total_deadline: float | None = None
        self._last_activity = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but are ones.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            # Nothing was asked: an idle connection must not talk.
            self._abort()
            return
        self._received_any = True
        if self._timing:
            self._last_activity = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_exchange(ProtocolViolation("the endpoint switched protocols unasked"))
        except httptools.HttpParserError as exc:
            self._fail_exchange(ProtocolViolation(f"malformed HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.forget(self)
        self._cancel_timer()
        response = self._response
        if self._head_waiter is not None:
            error: BaseException
            if self._body_error is not None:
                error = RequestBodyFailed("the request body could not be read")
                error.__cause__ = self._body_error
            else:
                error = Disconnected("the endpoint closed the connection before answering")
            self._settle_head(error)
        elif response is not None and not response._complete:
            if response.until_eof and exc is None and self._body_error is None:
                response._finish()
            else:
                response._fail(BodyBroken("the connection closed before the end of the body"))
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("upstream connection lost"))
        self._drain_waiter = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)
        self._drain_waiter = None

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._response is not None:
            raise ProtocolViolation("the endpoint sent an answer nobody asked for")
        self._reason = b""
        self._headers = []
        self._content_length = None
        self._chunked = False
        self._connection_header = None

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        # Length first: the lower-casing runs only on names of the right size.
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            self._content_length = int(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            self._chunked = True
        elif size == 10 and name.lower() == b"connection":
            prior = self._connection_header
            self._connection_header = value if prior is None else prior + b", " + value
        self._headers.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101:
            # The router never asks to switch protocols on this path (WebSockets have
            # their own); an endpoint that does anyway is not speaking HTTP/1.1 to us.
            self._fail_exchange(ProtocolViolation("the endpoint switched protocols unasked"))
            return
        if status < 200:
            # 100 Continue, 103 Early Hints: the real answer follows on this connection.
            self._informational = True
            return
        no_body = self._head_is_only_answer or status in (204, 304)
        connection_header = self._connection_header
        response = UpstreamResponse(
            self,
            status,
            self._reason.decode("latin-1"),
            self._headers,
            None if connection_header is None else connection_header.decode("latin-1"),
            0 if no_body else self._content_length,
            until_eof=not no_body and self._content_length is None and not self._chunked,
        )
        self._response = response
        if self._head_is_only_answer:
            # llhttp would wait for the body a HEAD answer announces but never sends: the
            # next exchange gets a fresh parser.
            connection = (self._connection_header or b"").lower()
            self._keep_alive = (
                b"close" not in connection
                if self._parser.get_http_version() == "1.1"
                else b"keep-alive" in connection
            )
            self._parser = httptools.HttpResponseParser(self)
            self._timing = False
            response._finish()
        self._settle_head(response)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is not None and not response._complete:
            response._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self._response
        if response is None or response._complete:
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._timing = False
        response._finish()

    # -- one exchange ------------------------------------------------------------------

    async def exchange(
        self,
        head: bytes,
        body: bytes | AsyncIterator[bytes] | None,
        chunked: bool,
        method: str,
        timeouts: UpstreamTimeouts,
    ) -> UpstreamResponse:
        """Send one request and wait for the head of its answer."""
        transport = self.transport
        assert transport is not None and not self._busy
        self._busy = True
        self._exchanges += 1
        self._head_is_only_answer = method == "HEAD"
        self._received_any = False
        self._keep_alive = False
        self._response = None
        self._body_error = None
        waiter: asyncio.Future[UpstreamResponse] = self.loop.create_future()
        self._head_waiter = waiter
        self._start_timer(timeouts)
        if body is None:
            transport.write(head)
        elif isinstance(body, bytes):
            transport.write(head + body)
        else:
            transport.write(head)
            self._writer = self.loop.create_task(self._send_body(body, chunked))
        try:
            return await waiter
        except BaseException:
            # Failed or cancelled before an answer: this connection is in an unknown state.
            self._cancel_writer()
            self._abort()
            raise

    async def _send_body(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        transport = self.transport
        assert transport is not None
        iterator = body.__aiter__()
        while True:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                break
            except Exception as exc:  # any failure of the client's body
                self._body_error = exc
                self._abort()
                return
            if not chunk or transport.is_closing():
                continue
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if self._timing:
                self._last_activity = self.loop.time()
            if self._write_paused:
                self._drain_waiter = self.loop.create_future()
                try:
                    await self._drain_waiter
                except ConnectionResetError:
                    return
        if chunked and not transport.is_closing():
            transport.write(_LAST_CHUNK)

    def exchange_done(self, clean: bool) -> None:
        if self._cancel_writer():
            # The endpoint answered before taking the whole body: it cannot be reused.
            clean = False
        if self._body_error is not None:
            clean = False
        self._timing = False
        self._response = None
        self._busy = False
        if clean and self._keep_alive and not self.closed:
            if self._reading_paused:
                self.resume_reading()
            self.client.keep(self)
        else:
            self._abort()

    # -- helpers -----------------------------------------------------------------------

    def _cancel_writer(self) -> bool:
        """Stop sending the request body; True when it was not sent whole."""
        writer = self._writer
        if writer is None:
            return False
        self._writer = None
        if writer.done():
            return False
        writer.cancel()
        return True

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    @property
    def reused(self) -> bool:
        """True when this connection carried an exchange before the current one."""
        return self._exchanges > 1

    @property
    def answered_nothing(self) -> bool:
        return not self._received_any

    def _settle_head(self, outcome: UpstreamResponse | BaseException) -> None:
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is None or waiter.done():
            return
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)

    def _fail_exchange(self, error: BaseException) -> None:
        if self._head_waiter is not None:
            self._settle_head(error)
        elif self._response is not None:
            self._response._fail(error)
        self._abort()

    def _abort(self) -> None:
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _start_timer(self, timeouts: UpstreamTimeouts) -> None:
        read, total = timeouts.read, timeouts.total
        if read is None and total is None:
            return
        now = self.loop.time()
        self._timing = True
        self._last_activity = now
        self._read_timeout = read
        self._total_deadline = None if total is None else now + total
        deadline = self._deadline()
        timer = self._timer
        if timer is None or deadline < self._armed_at:
            if timer is not None:
                timer.cancel()
            self._armed_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _deadline(self) -> float:
        read, total = self._read_timeout, self._total_deadline
        if read is None:
            assert total is not None
            return total
        idle = self._last_activity + read
        return idle if total is None or idle < total else total

    def _on_timer(self) -> None:
        # The timer outlives exchanges: starting and ending one only flips ``_timing``
        # and activity only moves ``_last_activity``. It re-arms itself when it fires
        # early, so keep-alive traffic costs about one timer per connection per read
        # timeout, not one (plus a cancel) per exchange.
        self._timer = None
        if not self._timing:
            return
        deadline = self._deadline()
        if self.loop.time() < deadline:
            self._armed_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)
            return
        self._timing = False
        self._fail_exchange(TimeoutError())

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
