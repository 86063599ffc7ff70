"""aiohttp's connection handler with a request-head read timeout and the router's own
answers to requests that cannot be parsed.

SECURITY: aiohttp has no header read timeout, so a client dribbling a request head one
byte at a time (slowloris), or sending nothing at all, would hold a connection until the
keep-alive timer. Here the clock starts when the connection is accepted and again at the
first byte of each later request head; if the head is not complete in ``header_timeout``
seconds the connection is closed, with 408 when part of a head had arrived.

Known limit: bytes of a next request head that arrive in the same read as the end of the
previous request are buffered inside aiohttp's parser, where they cannot be seen; such a
connection is closed by the keep-alive timer (``keepalive_timeout``), like an idle one.

SECURITY: requests the parser refuses (an over-long request line or header, too many
headers, broken framing) and request lines in versions other than HTTP/1.0 and 1.1 are
answered here with the router's own short page (400, 414 or 431, always ``HTTP/1.1``) and
the connection closed: never aiohttp's text, which repeats up to 100 bytes of the input,
and never a traceback in the log. Each gets one access-log line and a metric by reason.

SECURITY: the router refuses to start unless aiohttp's C HTTP parser (llhttp, strict mode)
parses requests: the pure-Python fallback (``AIOHTTP_NO_EXTENSIONS``, or a missing
extension) is laxer, and request smuggling lives in the differences between parsers.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler

from router.http.framing import UNSUPPORTED_VERSION, framing_problem

RejectionLog = Callable[[str, int, str], str]
"""``(client address, status, reason) -> request id``: counts and logs a refused request."""

RejectionPage = Callable[[str, int, str, str], web.Response]
"""``(Accept header, status, message, request id) -> response``: the router's error page."""

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Connection: close\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 43\r\n"
    b"\r\n"
    b"The request head was not received in time.\n"
)

_MESSAGES = {
    "request_line_too_long": "The request line is longer than this server accepts.",
    "header_too_large": "A request header is larger than this server accepts.",
    "too_many_headers": "The request has more header fields than this server accepts.",
    "unsupported_version": "Only HTTP/1.0 and HTTP/1.1 requests are accepted.",
    "bad_request": "The request is not valid HTTP/1.1.",
}
_TOO_MANY_HEADERS = "Too many headers received"
"""aiohttp's text for the header count limit (pinned by the tests)."""


class BadFraming(BadHttpMessage):
    """A request the router refuses for its framing or version (see ``framing.py``)."""

    def __init__(self, problem: str, reason: str, accept: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.reason = reason
        self.accept = accept
        """The request's ``Accept`` header: its head was parsed, so the page can follow it."""


def classify(exc: BaseException) -> tuple[int, str, str]:
    """Status, reason and page text for a request the parser (or the framing check)
    refused. The text is fixed per reason: it never repeats the input."""
    if isinstance(exc, BadFraming):
        if exc.reason == "unsupported_version":
            return 400, exc.reason, _MESSAGES[exc.reason]
        return 400, exc.reason, f"Bad request framing: {exc.problem}."
    if isinstance(exc, LineTooLong):
        # llhttp reports an over-long target and an over-long header with the same
        # exception; the callback that raised it says which.
        frames = [frame.f_code.co_name for frame, _ in traceback.walk_tb(exc.__traceback__)]
        if frames and frames[-1].endswith("cb_on_url"):
            return 414, "request_line_too_long", _MESSAGES["request_line_too_long"]
        return 431, "header_too_large", _MESSAGES["header_too_large"]
    if isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_HEADERS:
        return 431, "too_many_headers", _MESSAGES["too_many_headers"]
    return 400, "bad_request", _MESSAGES["bad_request"]


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
    __slots__ = (
        "_head_bytes",
        "_head_deadline",
        "_header_timeout",
        "_last_body",
        "_page",
        "_rejections",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: float,
        rejections: RejectionLog,
        page: RejectionPage,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._rejections = rejections
        self._page = page
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = False
        """True once a byte of the awaited request head has arrived."""
        self._last_body: StreamReader | None = None
        """The body of the latest parsed request: until it has all arrived, bytes are
        body, not a new head (aiohttp reads and drops the body of a request answered
        without reading it)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # The first head's clock starts at accept: a connection that never sends a byte
        # is closed after header_timeout, not after the (longer) keep-alive timeout.
        self._head_deadline = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        last_body = self._last_body
        waiting_for_head = (
            not self._request_in_progress
            and not self._messages
            and not self._upgraded
            and (last_body is None or last_body.is_eof())
        )
        queued = len(self._messages)
        super().data_received(data)
        messages = self._messages
        if len(messages) > queued:
            if last_body is not None and not last_body.is_eof():
                self._fail_open_body(last_body, queued)
            self._screen(queued)
            self._last_body = messages[-1][1]
        if messages or self._upgraded:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None
            self._head_bytes = False
        elif waiting_for_head and data and not self._force_close:
            # A new request head starts when bytes arrive while no request is being
            # handled, none is queued and the last body is complete: start its clock
            # (unless accept started it).
            self._head_bytes = True
            if self._head_deadline is None:
                self._head_deadline = self._loop.call_later(
                    self._header_timeout, self._head_timed_out
                )

    def _fail_open_body(self, body: StreamReader, start: int) -> None:
        # A parse error in the middle of a body (a bad chunk size, say) is queued as the
        # next "request"; the handler reading this body would wait for bytes that never
        # come. Fail its read instead: it answers 400 and closes the connection.
        for message, _ in itertools.islice(self._messages, start, None):
            if isinstance(message, web_protocol._ErrInfo):
                body.set_exception(message.exc)
                return

    def _screen(self, start: int) -> None:
        """Turn newly parsed requests with ambiguous framing or an unsupported version
        into parse errors, so that every refused request takes the same path."""
        messages = self._messages
        for index in range(start, len(messages)):
            message = messages[index][0]
            if not isinstance(message, RawRequestMessage):
                continue
            problem = framing_problem(message.version, message.headers)
            if problem is not None:
                reason = "unsupported_version" if problem == UNSUPPORTED_VERSION else "bad_framing"
                error = BadFraming(problem, reason, message.headers.get("Accept", ""))
                info = web_protocol._ErrInfo(status=400, exc=error, message=problem)
                messages[index] = (info, EMPTY_PAYLOAD)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        # After a declined upgrade aiohttp parses the bytes that followed it here, not in
        # data_received: screen those requests too.
        queued = len(self._messages)
        answer = await super().finish_response(request, resp, start_time)
        if len(self._messages) > queued:
            self._screen(queued)
        return answer

    def _make_error_handler(
        self, err_info: web_protocol._ErrInfo
    ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        # Replaces aiohttp's handler, which logs a traceback and answers with the
        # parser's message (which repeats the input).
        async def reject(request: web.BaseRequest) -> web.StreamResponse:
            status, reason, message = classify(err_info.exc)
            request_id = self._rejections(request.remote or "", status, reason)
            accept = err_info.exc.accept if isinstance(err_info.exc, BadFraming) else ""
            response = self._page(accept, status, message, request_id)
            response.headers["X-Request-Id"] = request_id
            response.force_close()
            return response

        return reject

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._messages or self._request_in_progress or self._upgraded:
            return
        transport = self.transport
        if self._head_bytes and transport is not None and not transport.is_closing():
            transport.write(_TIMEOUT_RESPONSE)
            peer = transport.get_extra_info("peername")
            self._rejections(str(peer[0]) if peer else "", 408, "head_timeout")
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)


class GuardedServer(web.Server):
    """A low-level aiohttp server whose connections use :class:`GuardedRequestHandler`."""

    handler_class: type[GuardedRequestHandler] = GuardedRequestHandler
    """Subclasses may use a subclass (TLS listeners count handshakes in theirs)."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        rejections: RejectionLog,
        page: RejectionPage,
        **kwargs: Any,
    ) -> None:
        if not c_parser_in_use():
            raise RuntimeError(
                "aiohttp's C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS is set or the "
                "extension is missing); refusing to serve with the laxer pure-Python parser"
            )
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._rejections = rejections
        self._page = page

    def __call__(self) -> RequestHandler:
        return self.handler_class(
            self,
            loop=self._loop,
            header_timeout=self._header_timeout,
            rejections=self._rejections,
            page=self._page,
            **self._kwargs,
        )
