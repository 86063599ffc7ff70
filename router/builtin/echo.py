"""The ``echo`` builtin: a page showing what the router saw and what it would add.

This is what ``commons-router dev`` serves when no upstream is given.
"""

from __future__ import annotations

import html

import orjson
from aiohttp import web

from router.api.context import CONTEXT_KEY
from router.errors import wants_json
from router.proxy.forward import Forwarder

_MASKED = frozenset({"authorization", "cookie", "proxy-authorization"})


def _rows(pairs: list[tuple[str, str]]) -> str:
    return "".join(
        f"<tr><th>{html.escape(name)}</th><td><code>{html.escape(value)}</code></td></tr>"
        for name, value in pairs
    )


def _mask(name: str, value: str) -> str:
    return f"<{len(value)} characters hidden>" if name.lower() in _MASKED else value


class EchoHandler:
    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        ctx = request[CONTEXT_KEY]
        route = ctx.core_route
        assert route is not None
        received = [(name, _mask(name, value)) for name, value in request.headers.items()]
        forwarded = self._forwarder.upstream_headers(request, ctx, route)
        added = [
            (name, _mask(name, value))
            for name, value in forwarded.items()
            if request.headers.get(name) != value
        ]
        removed = sorted({name for name in request.headers if name not in forwarded}, key=str.lower)
        facts = {
            "request_id": ctx.request_id,
            "client": ctx.client_ip,
            "method": request.method,
            "target": request.raw_path,
            "host": ctx.host,
            "normalized_path": ctx.path,
            "upstream_path": route.upstream_path(ctx.path),
            "query": ctx.query,
            "route": route.name,
        }
        headers = {"X-Request-Id": ctx.request_id, "Cache-Control": "no-store"}
        if wants_json(request):
            document = {
                **facts,
                "received_headers": received,
                "added_headers": added,
                "removed_headers": removed,
            }
            return web.Response(
                body=orjson.dumps(document), content_type="application/json", headers=headers
            )
        page = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<title>commons-router: what the router saw</title>"
            "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;"
            "padding:0 1em}th{text-align:left;padding-right:1em;vertical-align:top}"
            "code{word-break:break-all}</style></head><body>"
            "<h1>commons-router</h1><p>No upstream is configured for this route, so the "
            "router answers itself with what it saw and what it would add.</p>"
            f"<h2>Request</h2><table>{_rows([(k, str(v)) for k, v in facts.items()])}</table>"
            f"<h2>Headers received</h2><table>{_rows(received)}</table>"
            f"<h2>Headers the router adds or replaces upstream</h2><table>{_rows(added)}</table>"
            "<h2>Headers the router removes</h2><p>"
            f"{html.escape(', '.join(removed)) or 'none'}</p></body></html>"
        )
        return web.Response(text=page, content_type="text/html", headers=headers)
