from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import ClientSession, WSMsgType, WSServerHandshakeError, web
from multidict import CIMultiDict

from router.api import NoConfig, Plugin
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


async def test_large_messages_pass_both_ways(backend: Backend, client: ClientSession) -> None:
    payload = bytes(range(256)) * (12 * 1024)  # 3 MiB: several times the relay's buffers
    async with run_router(route(backend)) as router:
        async with client.ws_connect(router.url + "/ws") as ws:
            for _ in range(2):
                await ws.send_bytes(payload)
            for _ in range(2):
                assert (await ws.receive()).data == payload[::-1]

# The handshake takes the upstream path of every request: the route's connect timeout,
# endpoint choice with retries and passive health, and the upstream observers.


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose listener never accepts and whose accept queue is full: the kernel
    drops further connection attempts, so connecting hangs until the caller gives up."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            yield port


async def test_route_connect_timeout_bounds_the_handshake(client: ClientSession) -> None:
    with unanswered_port() as port:
        config = {
            "routes": [
                {
                    "name": "ws",
                    "retries": 0,
                    "timeouts": {"connect": "300ms"},
                    "upstreams": [{"url": f"http://127.0.0.1:{port}"}],
                }
            ]
        }
        async with run_router(config) as router:
            with pytest.raises(WSServerHandshakeError) as caught:
                # Without the route's timeout the connect would hang for minutes.
                await asyncio.wait_for(client.ws_connect(router.url + "/ws"), 10)
            assert caught.value.status == 502
            log = await router.access_log()
    assert log[-1]["error"] == "connect"
    assert log[-1]["status"] == 502


async def test_route_read_timeout_bounds_the_wait_for_the_switch(client: ClientSession) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # never answers; returns when the router gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = {
        "routes": [
            {
                "name": "ws",
                "timeouts": {"read": "300ms"},
                "upstreams": [{"url": f"http://127.0.0.1:{port}"}],
            }
        ]
    }
    async with server, run_router(config) as router:
        with pytest.raises(WSServerHandshakeError) as caught:
            await asyncio.wait_for(client.ws_connect(router.url + "/ws"), 10)
        assert caught.value.status == 504
        log = await router.access_log()
    assert log[-1]["error"] == "timeout"

async def test_unreachable_endpoint_is_passed_over_and_ejected(
    backend: Backend, client: ClientSession
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    config = {
        "routes": [
            {
                "name": "ws",
                "retries": 1,
                "health": {"max_failures": 1, "ejection": "10m"},
                "upstreams": [{"url": dead}, {"url": backend.url}],
            }
        ]
    }
    async with run_router(config) as router:
        # Round robin picks the dead endpoint for one of the first two handshakes.
        for n in range(3):
            async with client.ws_connect(router.url + "/ws") as ws:
                await ws.send_str(f"hi {n}")
                assert (await ws.receive()).data == f"echo:hi {n}"
        async with client.get(router.admin_url + "/routes") as response:
            (route,) = (await response.json())["routes"]
        async with client.get(router.admin_url + "/metrics") as response:
            metrics = await response.text()
    health = {endpoint["url"]: endpoint["healthy"] for endpoint in route["endpoints"]}
    assert health == {dead: False, backend.url: True}
    assert "commons_router_endpoint_ejections_total 1\n" in metrics
    assert 'commons_router_upstream_errors_total{route="ws",kind="connect"} 1' in metrics


class WatchingPlugin(Plugin[NoConfig]):
    name = "watching"
    attempts: list[tuple[object, int | None, str | None]] = []  # noqa: RUF012

    async def start(self) -> None:
        self.services.add_upstream_observer(self)

    def attempt_started(
        self, request: web.BaseRequest, endpoint_url: str, headers: CIMultiDict[str]
    ) -> object:
        headers["X-Attempt"] = "watched"
        return endpoint_url

    def attempt_finished(self, token: object, status: int | None, error: str | None) -> None:
        WatchingPlugin.attempts.append((token, status, error))


async def headers_over_websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({k.lower(): v for k, v in request.headers.items()})
    await ws.close()
    return ws


async def test_upstream_observers_see_the_handshake(client: ClientSession) -> None:
    WatchingPlugin.attempts.clear()
    app = web.Application()
    app.router.add_get("/ws", headers_over_websocket)
    async with run_backend(app) as backend:
        config: dict[str, Any] = {
            "plugins": [{"name": "watching"}],
            "routes": [{"name": "ws", "upstreams": [{"url": backend.url}]}],
        }
        async with run_router(config, plugins={"watching": WatchingPlugin}) as router:
            async with client.ws_connect(router.url + "/ws") as ws:
                seen = await ws.receive_json()
            # The attempt ends with the tunnel, just after the client saw it close.
            for _ in range(100):
                if WatchingPlugin.attempts:
                    break
                await asyncio.sleep(0.05)
    assert seen["x-attempt"] == "watched"
    assert WatchingPlugin.attempts == [(backend.url, 101, None)]


async def test_switch_without_the_matching_accept_gets_no_tunnel(client: ClientSession) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBvbmU=\r\n\r\n"
            b"\x81\x05hello"
        )
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = {"routes": [{"name": "ws", "upstreams": [{"url": f"http://127.0.0.1:{port}"}]}]}
    async with server, run_router(config) as router:
        with pytest.raises(WSServerHandshakeError) as caught:
            await client.ws_connect(router.url + "/ws")
        assert caught.value.status == 502
        log = await router.access_log()
    assert log[-1]["error"] == "websocket"


async def test_malformed_client_handshake_is_refused_before_any_upstream_connection(
    client: ClientSession,
) -> None:
    reached: list[str] = []

    async def ws(request: web.Request) -> web.Response:
        reached.append(request.path)
        return web.Response(status=400)

    app = web.Application()
    app.router.add_get("/ws", ws)
    async with run_backend(app) as backend, run_router(route(backend)) as router:
        headers = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "not a key",
        }
        async with client.get(router.url + "/ws", headers=headers) as response:
            assert response.status == 400
            assert "not a key" not in await response.text()
    assert reached == []


async def test_endpoint_speaking_first_gets_no_tunnel(client: ClientSession) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello, this is not HTTP\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = {
        "routes": [
            {"name": "ws", "retries": 0, "upstreams": [{"url": f"http://127.0.0.1:{port}"}]}
        ]
    }
    async with server, run_router(config) as router:
        for _ in range(3):
            with pytest.raises(WSServerHandshakeError) as caught:
                await client.ws_connect(router.url + "/ws")
            assert caught.value.status == 502
