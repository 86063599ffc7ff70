"""Small request/response helpers shared by the auth handlers."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from aiohttp import web

from router.api import RequestContext, context_of
from router_plugins.sessions import CookieSettings


def redirect(location: str, status: int = 302) -> web.Response:
    return web.Response(status=status, headers={"Location": location, "Cache-Control": "no-store"})


def is_browser(request: web.BaseRequest) -> bool:
    """A page navigation (gets a login redirect) rather than an API or XHR call (gets 401)."""
    if request.method not in ("GET", "HEAD"):
        return False
    if request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return False
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None and mode != "navigate":
        return False
    return "text/html" in request.headers.get("Accept", "")


def authority(request: web.BaseRequest, ctx: RequestContext) -> str:
    """``host[:port]`` of this request (the router already checked the Host header)."""
    raw = request.headers.get("Host", "").strip().lower()
    name, sep, port = raw.rpartition(":")
    if sep and port.isdigit() and name.strip("[]").rstrip(".") == ctx.host.strip("[]"):
        default = {"http": "80", "https": "443"}.get(ctx.scheme)
        return ctx.host if port == default else f"{ctx.host}:{port}"
    return ctx.host


def origin_of(request: web.BaseRequest, ctx: RequestContext) -> str:
    return f"{ctx.scheme}://{authority(request, ctx)}"


def same_origin(request: web.BaseRequest, ctx: RequestContext) -> bool:
    """CSRF defence for state-changing POSTs: the request must come from this origin."""
    expected = origin_of(request, ctx)
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin.lower() == expected
    referer = request.headers.get("Referer")
    if referer:
        try:
            parts = urlsplit(referer)
        except ValueError:
            return False
        return f"{parts.scheme}://{parts.netloc}".lower() == expected
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def clean_header_value(value: str) -> str:
    """SECURITY: claim values become header values; control characters never pass."""
    return _CONTROL.sub("", value) if _CONTROL.search(value) else value


def clear_cookie_on_response(
    request: web.BaseRequest, cookie: CookieSettings, name: str | None = None
) -> None:
    """Remove the cookie ``name`` (default: the session cookie) with whatever answer this
    request gets: a redirect, an error page or the backend's response."""
    header = cookie.clearing_header(name)

    def clear(_: web.BaseRequest, response: web.StreamResponse) -> None:
        response.headers.add("Set-Cookie", header)

    context_of(request).on_response(clear)
