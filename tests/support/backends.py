"""Real HTTP backends for the tests: aiohttp apps served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import os

from aiohttp import WSMsgType, web

CHUNK = 64 * 1024


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "target": request.raw_path,
            "path": request.path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_length": len(body),
            "body": body.decode("latin-1")[:4096],
        },
        headers={"X-Backend": os.environ.get("BACKEND_NAME", "echo")},
    )


async def download(request: web.Request) -> web.StreamResponse:
    """Stream N bytes of a repeating pattern; ?chunked=1 omits Content-Length."""
    size = int(request.match_info["size"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("chunked") != "1":
        response.content_length = size
    await response.prepare(request)
    block = bytes(range(256)) * (CHUNK // 256)
    remaining = size
    while remaining > 0:
        piece = block[: min(CHUNK, remaining)]
        await response.write(piece)
        remaining -= len(piece)
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    """Consume the body as a stream; answer its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"size": size, "sha256": digest.hexdigest()})


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.match_info["seconds"]))
    return web.Response(text="slow done")


async def status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="status")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat", "superchat"))
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            if message.data.startswith("close:"):
                await ws.close(code=int(message.data[6:]), message=b"bye")
                break
            await ws.send_str("echo:" + message.data)
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    return ws


async def headers_out(request: web.Request) -> web.Response:
    """Answer with response headers a proxy must not pass on (and some it must)."""
    response = web.Response(text="headers")
    response.headers["Connection"] = "X-Secret-Hop"
    response.headers["X-Secret-Hop"] = "should not pass"
    response.headers["Keep-Alive"] = "timeout=5"
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/")
    return response


def echo_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/bytes/{size:\\d+}", download)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/slow/{seconds}", slow)
    app.router.add_route("*", "/status/{code:\\d+}", status)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/headers-out", headers_out)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
