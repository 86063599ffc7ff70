from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientSession, WSMsgType, WSServerHandshakeError, web

from router.testing import Backend, run_backend, run_router


def route(backend: Backend, **extra: object) -> dict[str, object]:
    return {"routes": [{"name": "ws", "upstreams": [{"url": backend.url}], **extra}]}


async def test_messages_flow_both_ways_and_close_code_is_kept(
    backend: Backend, client: ClientSession
) -> None:
    async with run_router(route(backend)) as router:
        async with client.ws_connect(router.url + "/ws", protocols=("superchat",)) as ws:
            assert ws.protocol == "superchat"
            await ws.send_str("hello")
            assert (await ws.receive()).data == "echo:hello"
            await ws.send_bytes(b"\x01\x02\x03")
            assert (await ws.receive()).data == b"\x03\x02\x01"
            await ws.send_str("close:4001")
            message = await ws.receive()
            assert message.type is WSMsgType.CLOSE
            assert message.data == 4001
        log = await router.access_log()
        assert log[-1]["status"] == 101
        assert log[-1]["route"] == "ws"


async def test_client_close_code_reaches_the_backend(client: ClientSession) -> None:
    closed_with: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        closed_with.set_result(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with run_backend(app) as backend, run_router(route(backend)) as router:
        ws = await client.ws_connect(router.url + "/ws")
        await ws.close(code=4321, message=b"done")
        assert await asyncio.wait_for(closed_with, 5) == 4321


async def test_backend_refusing_the_upgrade_gets_no_tunnel(client: ClientSession) -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="no websockets here")

    app = web.Application()
    app.router.add_get("/ws", plain)
    async with run_backend(app) as backend, run_router(route(backend)) as router:
        with pytest.raises(WSServerHandshakeError) as caught:
            await client.ws_connect(router.url + "/ws")
        assert caught.value.status == 502


async def test_websocket_disabled_on_route_forwards_plain_http(
    backend: Backend, client: ClientSession
) -> None:
    async with run_router(route(backend, websocket=False)) as router:
        with pytest.raises(WSServerHandshakeError):
            await client.ws_connect(router.url + "/ws")
