"""Small, clear error pages: HTML for browsers, JSON for API clients. Never a traceback."""

from __future__ import annotations

import html
from http import HTTPStatus

import orjson
from aiohttp import web

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} {reason}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}}
code{{background:#f3f3f3;padding:0 .3em}}</style></head>
<body><h1>{status} {reason}</h1><p>{message}</p>
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
) -> web.Response:
    return error_page(request.headers.get("Accept", ""), status, message, request_id, headers)


def error_page(
    accept: str,
    status: int,
    message: str,
    request_id: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The error page for a client whose ``Accept`` header is ``accept``."""
    reason = HTTPStatus(status).phrase
    if accept_wants_json(accept):
        body = orjson.dumps(
            {"error": reason, "status": status, "message": message, "request_id": request_id}
        )
        content_type = "application/json"
    else:
        body = _PAGE.format(
            status=status,
            reason=html.escape(reason),
            message=html.escape(message),
            request_id=html.escape(request_id),
        ).encode()
        content_type = "text/html"
    response = web.Response(status=status, body=body, content_type=content_type, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response
