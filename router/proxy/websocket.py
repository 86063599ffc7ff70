"""WebSocket proxying: the upstream handshake first, then frames both ways.

SECURITY: the client's upgrade is accepted only after the upstream answered 101, so a
backend that refuses (or answers a plain response) never gets a tunnel; the route's plugin
chain (auth) has already run before this handler is reached.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import (
    ClientError,
    ClientWebSocketResponse,
    ClientWSTimeout,
    WSMsgType,
    WSServerHandshakeError,
    web,
)

from router.api.context import CONTEXT_KEY
from router.api.errors import RouterHTTPError
from router.proxy.forward import Forwarder

logger = logging.getLogger("commons_router.websocket")

_WS_TIMEOUT = ClientWSTimeout(ws_receive=None, ws_close=10.0)

# Headers the WebSocket client/server machinery sets itself on each side.
_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)


async def proxy_websocket(forwarder: Forwarder, request: web.BaseRequest) -> web.StreamResponse:
    ctx = request[CONTEXT_KEY]
    route = ctx.route
    assert route is not None and route.pool is not None
    if request.method != "GET":
        raise RouterHTTPError(400, "A WebSocket upgrade must use GET.")
    endpoint = route.pool.pick(asyncio.get_running_loop().time())
    if endpoint is None:
        ctx.add_log_field("error", "no_endpoint")
        raise RouterHTTPError(
            503, f"No healthy upstream endpoint is available for route {route.name!r}."
        )
    ctx.endpoint = endpoint
    headers = forwarder.upstream_headers(request, ctx, route)
    for name in list(headers):
        if name.lower() in _HANDSHAKE_HEADERS:
            del headers[name]
    protocols = tuple(
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    )
    path_qs = route.upstream_path(ctx.path)
    if ctx.query:
        path_qs = f"{path_qs}?{ctx.query}"
    url = endpoint.target(path_qs).with_scheme(
        "wss" if endpoint.origin.startswith("https") else "ws"
    )
    try:
        upstream = await forwarder.session.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            autoping=False,
            autoclose=False,
            max_msg_size=0,
            timeout=_WS_TIMEOUT,
        )
    except WSServerHandshakeError as exc:
        route.metrics.upstream_error("websocket")
        raise RouterHTTPError(
            502,
            f"The upstream of route {route.name!r} refused the WebSocket upgrade "
            f"(status {exc.status}).",
        ) from None
    except (ClientError, OSError, TimeoutError) as exc:
        route.metrics.upstream_error("connect")
        ctx.add_log_field("error", "connect")
        logger.warning("route %s: upstream %s failed (connect): %s", route.name, endpoint.url, exc)
        detail = str(exc) if forwarder.detailed_errors else "no connection could be opened"
        raise RouterHTTPError(
            502, f"The upstream of route {route.name!r} could not be reached ({detail})."
        ) from None

    endpoint.outstanding += 1
    try:
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoping=False,
            autoclose=False,
            max_msg_size=0,
        )
        client.headers["X-Request-Id"] = ctx.request_id
        await client.prepare(request)
        ctx.upgraded = True
        await _pump_both_ways(client, upstream)
        return client
    finally:
        endpoint.outstanding -= 1
        if not upstream.closed:
            await upstream.close()


async def _pump_both_ways(client: web.WebSocketResponse, upstream: ClientWebSocketResponse) -> None:
    to_upstream = asyncio.create_task(_pump(client, upstream))
    to_client = asyncio.create_task(_pump(upstream, client))
    try:
        await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        # One side closed: the other pump forwards the close frame and ends too.
        await asyncio.wait({to_upstream, to_client}, timeout=10.0)
    finally:
        for task in (to_upstream, to_client):
            if not task.done():
                task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
    if not client.closed:
        await client.close()
    if not upstream.closed:
        await upstream.close()


async def _pump(
    source: web.WebSocketResponse | ClientWebSocketResponse,
    sink: web.WebSocketResponse | ClientWebSocketResponse,
) -> None:
    while True:
        message = await source.receive()
        kind = message.type
        if kind is WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif kind is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif kind is WSMsgType.PING:
            await sink.ping(message.data)
        elif kind is WSMsgType.PONG:
            await sink.pong(message.data)
        elif kind is WSMsgType.CLOSE:
            if not sink.closed:
                await sink.close(code=message.data or 1000, message=(message.extra or "").encode())
            return
        else:
            # CLOSING / CLOSED / ERROR: the peer is gone; close the other side as abnormal.
            if not sink.closed:
                code = source.close_code if source.close_code is not None else 1011
                await sink.close(code=code)
            return
