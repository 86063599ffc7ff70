"""The upstream HTTP/1.1 client, against scripted endpoints that speak raw bytes.

Each endpoint here is an asyncio server whose answers are written byte for byte, so the
tests can produce what well-behaved servers never do: answers to HEAD that announce a
body, 1xx before the answer, bodies that end with the connection, answers nobody asked
for, connections closed between requests.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientPayloadError, ClientSession, web

from router.api import Handler, Middleware, NoConfig, Plugin, context_of
from router.proxy.client import UpstreamClient
from router.proxy.wire import Origin, UpstreamTimeouts
from router.testing import run_router
from tests.support.tls import self_signed

Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Gets a request head; writes an answer; returns False to close the connection."""


class ScriptedEndpoint:
    """A raw TCP endpoint: reads request heads (and Content-Length bodies), answers via
    ``answer``, and records every head and how many connections were opened."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.bodies.append(await reader.readexactly(length) if length else b"")
                if not await self.answer(head, reader, writer):
                    return
        finally:
            writer.close()

    async def __aenter__(self) -> ScriptedEndpoint:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def route_to(url: str, **route: Any) -> dict[str, Any]:
    return {"routes": [{"name": "app", "upstreams": [{"url": url}], "retries": 0, **route}]}


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"


async def test_connections_are_kept_alive_and_reused(client: ClientSession) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK_HEAD + b"ok")
        return True

    async with ScriptedEndpoint(answer) as endpoint, run_router(route_to(endpoint.url)) as router:
        for _ in range(5):
            async with client.get(router.url + "/") as response:
                assert (response.status, await response.read()) == (200, b"ok")
    assert endpoint.connections == 1
    assert len(endpoint.heads) == 5


async def test_request_head_carries_host_and_framing(client: ClientSession) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK_HEAD + b"ok")
        return True

    async with ScriptedEndpoint(answer) as endpoint:
        config = route_to(endpoint.url, preserve_host=False)
        port = endpoint.url.rsplit(":", 1)[1]
        async with run_router(config) as router:
            await (await client.get(router.url + "/a?b=c")).read()
            await (await client.post(router.url + "/p", data=b"12345")).read()
            await (await client.post(router.url + "/empty")).read()
    get, post, empty = (head.decode().split("\r\n") for head in endpoint.heads)
    assert get[0] == "GET /a?b=c HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in get
    assert not any(line.lower().startswith("content-length") for line in get)
    assert post[0] == "POST /p HTTP/1.1"
    assert "Content-Length: 5" in post
    assert endpoint.bodies[1] == b"12345"
    # A POST without a body still says so: some servers answer 411 otherwise.
    assert "Content-Length: 0" in empty


async def test_head_answer_announcing_a_body_leaves_the_connection_usable(
    client: ClientSession,
) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        else:
            writer.write(OK_HEAD + b"ok")
        return True

    async with ScriptedEndpoint(answer) as endpoint, run_router(route_to(endpoint.url)) as router:
        async with client.head(router.url + "/") as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == "1000"
        async with client.get(router.url + "/") as response:
            assert (response.status, await response.read()) == (200, b"ok")
    assert endpoint.connections == 1


async def test_informational_answers_are_skipped(client: ClientSession) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        return True

    async with ScriptedEndpoint(answer) as endpoint, run_router(route_to(endpoint.url)) as router:
        for _ in range(2):
            async with client.post(router.url + "/", data=b"x") as response:
                assert (response.status, await response.read()) == (201, b"done")
                assert "Link" not in response.headers
    assert endpoint.connections == 1


async def test_body_ending_with_the_connection_is_relayed_whole(client: ClientSession) -> None:
    body = b"y" * 300_000

    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
        return False

    async with ScriptedEndpoint(answer) as endpoint, run_router(route_to(endpoint.url)) as router:
        for _ in range(2):
            async with client.get(router.url + "/") as response:
                assert response.status == 200
                assert await response.read() == body
    assert endpoint.connections == 2


async def test_answer_nobody_asked_for_is_not_given_to_the_next_request(
    client: ClientSession,
) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        # Two answers to one request: the second must never reach anyone.
        writer.write(OK_HEAD + b"ok" + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
        return True

    async with ScriptedEndpoint(answer) as endpoint, run_router(route_to(endpoint.url)) as router:
        for _ in range(3):
            async with client.get(router.url + "/") as response:
                assert (response.status, await response.read()) == (200, b"ok")
    assert endpoint.connections == 3


async def test_switching_protocols_unasked_is_502(client: ClientSession) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nraw bytes")
        return True

    async with ScriptedEndpoint(answer) as endpoint, run_router(route_to(endpoint.url)) as router:
        async with client.get(router.url + "/", headers={"Accept": "application/json"}) as resp:
            assert resp.status == 502
            assert "invalid response" in (await resp.json())["message"]


async def test_stale_keep_alive_connection_is_replaced_for_idempotent_requests(
    client: ClientSession,
) -> None:
    served: dict[asyncio.StreamWriter, int] = {}

    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        served[writer] = served.get(writer, 0) + 1
        if served[writer] > 1 and b" /first " not in head:
            # A request on a reused connection: closed without a word, as by a server
            # whose keep-alive timer fired while the request was on its way.
            return False
        writer.write(OK_HEAD + b"ok")
        return True

    async with ScriptedEndpoint(answer) as endpoint, run_router(route_to(endpoint.url)) as router:
        await (await client.get(router.url + "/first")).read()
        async with client.get(router.url + "/again") as response:
            assert (response.status, await response.read()) == (200, b"ok")
        assert [h.split(b" ")[1] for h in endpoint.heads] == [b"/first", b"/again", b"/again"]
        assert endpoint.connections == 2

        # A POST may have had effects: it is not sent a second time.
        await (await client.post(router.url + "/first", data=b"1")).read()
        async with client.post(router.url + "/twice", data=b"2") as response:
            assert response.status == 502
        assert [h.split(b" ")[1] for h in endpoint.heads[3:]] == [b"/first", b"/twice"]


class InjectingPlugin(Plugin[NoConfig]):
    name = "injecting"

    def global_middleware(self) -> Middleware:
        async def inject(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            context_of(request).add_upstream_header("X-User", "mallory\r\nX-Admin: yes")
            return await handler(request)

        return inject


async def test_line_break_in_a_header_value_is_never_sent(client: ClientSession) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK_HEAD + b"ok")
        return True

    async with ScriptedEndpoint(answer) as endpoint:
        config = {"plugins": [{"name": "injecting"}], **route_to(endpoint.url)}
        async with run_router(config, plugins={"injecting": InjectingPlugin}) as router:
            async with client.get(router.url + "/") as response:
                assert response.status == 500
                assert "X-Admin" not in await response.text()
    assert endpoint.heads == []


async def test_total_timeout_cuts_a_dribbling_body(client: ClientSession) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        for _ in range(100):
            writer.write(b"z" * 1000)
            await writer.drain()
            await asyncio.sleep(0.05)
        return False

    config = route_to("http://127.0.0.1:1", timeouts={"read": "1s", "total": "500ms"})
    async with ScriptedEndpoint(answer) as endpoint:
        config["routes"][0]["upstreams"] = [{"url": endpoint.url}]
        async with run_router(config) as router, client.get(router.url + "/") as response:
            # The read timeout never fires (bytes keep coming); the total one does.
            assert response.status == 200
            with pytest.raises(ClientPayloadError):
                await response.read()


async def test_read_timeout_while_waiting_for_the_head_is_504(client: ClientSession) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(3)
        return False

    async with ScriptedEndpoint(answer) as endpoint:
        config = route_to(endpoint.url, timeouts={"read": "300ms"})
        async with run_router(config) as router, client.get(router.url + "/") as response:
            assert response.status == 504


async def test_read_timeout_holds_on_a_reused_connection(client: ClientSession) -> None:
    async def answer(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if b" /slow " in head:
            await asyncio.sleep(2)
            return False
        writer.write(OK_HEAD + b"ok")
        return True

    async with ScriptedEndpoint(answer) as endpoint:
        config = route_to(endpoint.url, timeouts={"read": "300ms"})
        async with run_router(config) as router:
            for pause in (0.0, 0.5):
                # Right after a quick exchange (its deadline still pending) and after the
                # connection sat idle past it: a silent endpoint still times out.
                await (await client.get(router.url + "/fast")).read()
                await asyncio.sleep(pause)
                async with client.get(router.url + "/slow") as response:
                    assert response.status == 504
    assert endpoint.connections == 2


async def test_idle_connections_are_closed_after_the_keepalive_timeout() -> None:
    closed = asyncio.Event()

    async def answer(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(OK_HEAD + b"ok")
        await writer.drain()
        # The next read ends when the client closes the idle connection.
        if await reader.read(1) == b"":
            closed.set()
        return False

    async with ScriptedEndpoint(answer) as endpoint:
        host, port = endpoint.url.removeprefix("http://").rsplit(":", 1)
        client = UpstreamClient(keepalive_timeout=0.2, sweep_interval=0.1)
        try:
            response = await client.request(
                Origin("http", host, int(port)),
                "GET",
                "/",
                [],
                None,
                UpstreamTimeouts(connect=1, read=1, total=None),
                has_host=False,
                has_length=False,
                may_resend=False,
            )
            assert await response.read() == b"ok"
            response.release()
            await asyncio.wait_for(closed.wait(), timeout=5)
        finally:
            await client.close()


async def test_https_upstream_is_verified(
    client: ClientSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def hello(request: web.BaseRequest) -> web.Response:
        return web.Response(text=f"tls {request.secure}")

    server = web.Server(hello)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        # Not trusted yet: the connection fails, nothing is sent.
        async with run_router(route_to(f"https://localhost:{port}")) as router:
            async with client.get(router.url + "/") as response:
                assert response.status == 502
                assert "TLS" in await response.text()
        # The self-signed certificate is its own authority.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        async with run_router(route_to(f"https://localhost:{port}")) as router:
            async with client.get(router.url + "/") as response:
                assert (response.status, await response.text()) == (200, "tls True")
    finally:
        await runner.cleanup()
