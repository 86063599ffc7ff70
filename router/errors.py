"""Small, clear error pages: HTML for browsers, JSON for API clients. Never a traceback.

:class:`ExceptionHandlers` is the one place where an exception raised while answering a
request becomes a response (as Starlette's exception handlers): the dispatcher asks it at
the end of the global plugin chain (so global middleware sees error pages as responses)
and around the whole chain (so what global middleware raises gets a page and an access-log
line too).
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any, TypeVar

import orjson
from aiohttp import web

from router.api.context import CONTEXT_KEY
from router.api.errors import RouterHTTPError

E = TypeVar("E", bound=Exception)

ExceptionHandler = Callable[[web.BaseRequest, E], Awaitable[web.StreamResponse]]
"""``(request, exception) -> response`` for one exception type."""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} {reason}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}}
code{{background:#f3f3f3;padding:0 .3em}}</style></head>
<body><h1>{status} {reason}</h1><p>{message}</p>{links}
<p><small>commons-router &middot; request id <code>{request_id}</code></small></p></body></html>
"""


def wants_json(request: web.BaseRequest) -> bool:
    return accept_wants_json(request.headers.get("Accept", ""))


def accept_wants_json(accept: str) -> bool:
    if "json" not in accept:
        return False
    return "text/html" not in accept or accept.find("json") < accept.find("text/html")


def error_response(
    request: web.BaseRequest,
    status: int,
    message: str,
    request_id: str = "",
    headers: dict[str, str] | None = None,
    links: Sequence[tuple[str, str]] = (),
) -> web.Response:
    return error_page(
        request.headers.get("Accept", ""), status, message, request_id, headers, links
    )


def error_page(
    accept: str,
    status: int,
    message: str,
    request_id: str = "",
    headers: dict[str, str] | None = None,
    links: Sequence[tuple[str, str]] = (),
) -> web.Response:
    """The error page for a client whose ``Accept`` header is ``accept``."""
    reason = HTTPStatus(status).phrase
    if accept_wants_json(accept):
        document: dict[str, object] = {
            "error": reason,
            "status": status,
            "message": message,
            "request_id": request_id,
        }
        if links:
            document["links"] = [{"title": label, "href": href} for label, href in links]
        body = orjson.dumps(document)
        content_type = "application/json"
    else:
        body = _PAGE.format(
            status=status,
            reason=html.escape(reason),
            message=html.escape(message),
            links=_links(links),
            request_id=html.escape(request_id),
        ).encode()
        content_type = "text/html"
    response = web.Response(status=status, body=body, content_type=content_type, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def _links(links: Sequence[tuple[str, str]]) -> str:
    if not links:
        return ""
    items = "".join(
        f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>' for label, href in links
    )
    return f"<ul>{items}</ul>"


def _request_error_page(
    request: web.BaseRequest,
    status: int,
    message: str,
    headers: dict[str, str] | None,
    links: Sequence[tuple[str, str]] = (),
) -> web.Response:
    request_id = request[CONTEXT_KEY].request_id
    response = error_response(request, status, message, request_id, headers, links)
    response.headers["X-Request-Id"] = request_id
    return response


async def answer_router_http_error(
    request: web.BaseRequest, exc: RouterHTTPError
) -> web.StreamResponse:
    response = _request_error_page(request, exc.status, exc.message, exc.headers, exc.links)
    if exc.close_connection:
        # Send the answer now and close: aiohttp would otherwise linger, reading the rest
        # of a body that may never come.
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        transport = request.transport
        if transport is not None:
            transport.close()
    return response


_EXCEPTION_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})
"""Headers of an aiohttp exception that describe its own text body, not the page's."""


async def answer_aiohttp_http_exception(
    request: web.BaseRequest, exc: web.HTTPException
) -> web.StreamResponse:
    headers = {
        name: value
        for name, value in exc.headers.items()
        if name.lower() not in _EXCEPTION_BODY_HEADERS
    }
    return _request_error_page(request, exc.status, exc.reason, headers)


class ExceptionHandlers:
    """Exception type -> the function answering a request that raised it; the handler of
    the nearest class in the exception's MRO applies."""

    __slots__ = ("_by_type", "_handlers")

    def __init__(self) -> None:
        self._handlers: dict[type[Exception], ExceptionHandler[Any]] = {}
        self._by_type: dict[type[Exception], ExceptionHandler[Any] | None] = {}

    def register(self, exc_type: type[E], handler: ExceptionHandler[E]) -> None:
        self._handlers[exc_type] = handler
        self._by_type.clear()

    def lookup(self, exc_type: type[Exception]) -> ExceptionHandler[Any] | None:
        try:
            return self._by_type[exc_type]
        except KeyError:
            pass
        handler = next(
            (self._handlers[cls] for cls in exc_type.__mro__ if cls in self._handlers), None
        )
        self._by_type[exc_type] = handler
        return handler

    async def answer(self, request: web.BaseRequest, exc: Exception) -> web.StreamResponse:
        """The response for ``exc``; re-raises it when no handler takes its type."""
        handler = self.lookup(type(exc))
        if handler is None:
            raise exc
        return await handler(request, exc)


def router_exception_handlers() -> ExceptionHandlers:
    """The router's own: :class:`RouterHTTPError` (raised by the core and by plugins) and
    aiohttp's ``web.HTTPException`` (raised by plugins written the aiohttp way) become the
    router's error page."""
    handlers = ExceptionHandlers()
    handlers.register(RouterHTTPError, answer_router_http_error)
    handlers.register(web.HTTPException, answer_aiohttp_http_exception)
    return handlers
