"""The ``redirect`` builtin: the request's URL with the parts the route's ``redirect``
names replaced (Gateway API ``RequestRedirect``).

Built from the parsed host and the normalized path and query: nothing unchecked is echoed.
"""

from __future__ import annotations

from aiohttp import web

from router.api.context import CONTEXT_KEY
from router.routing.compiled import replace_prefix

_DEFAULT_PORTS = {"http": 80, "https": 443}


async def redirect(request: web.BaseRequest) -> web.StreamResponse:
    ctx = request[CONTEXT_KEY]
    route = ctx.core_route
    assert route is not None and route.spec.redirect is not None
    spec = route.spec.redirect
    scheme = spec.scheme or ctx.scheme
    host = spec.hostname or ctx.host
    port = "" if spec.port is None or spec.port == _DEFAULT_PORTS[scheme] else f":{spec.port}"
    path = ctx.path
    if spec.path is not None:
        if spec.path.full_path is not None:
            path = spec.path.full_path
        elif spec.path.prefix is not None:
            path = replace_prefix(path, route.spec.path.rstrip("/"), spec.path.prefix.rstrip("/"))
    query = f"?{ctx.query}" if ctx.query else ""
    response = web.Response(
        status=spec.status_code, headers={"Location": f"{scheme}://{host}{port}{path}{query}"}
    )
    response.headers["X-Request-Id"] = ctx.request_id
    return response
