"""The plain-Python baseline: a minimal, fair aiohttp + uvloop reverse proxy.

One shared ClientSession with an unlimited keep-alive pool; the request body is streamed
upstream; the status and headers (minus hop-by-hop ones) are copied back and the body is
streamed with ``iter_chunked``. No routing, no header policy, no access log, no metrics:
this is the floor a Python proxy pays for HTTP parsing, the client and the event loop.

    python benchmarks/baseline_proxy.py --listen 127.0.0.1:8081 --upstream http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import uvloop
from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, TCPConnector, web
from multidict import CIMultiDict

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CHUNK = 64 * 1024


async def serve(host: str, port: int, upstream: str) -> None:
    session = ClientSession(
        connector=TCPConnector(limit=0, keepalive_timeout=30.0),
        auto_decompress=False,
        cookie_jar=DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=ClientTimeout(total=None),
    )

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        async with session.request(
            request.method,
            upstream + request.raw_path,
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        ) as answer:
            response = web.StreamResponse(
                status=answer.status,
                reason=answer.reason,
                headers=CIMultiDict(
                    (k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP
                ),
            )
            await response.prepare(request)
            async for chunk in answer.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response

    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8081", metavar="HOST:PORT")
    parser.add_argument("--upstream", required=True, metavar="URL")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(host, int(port), args.upstream.rstrip("/")))


if __name__ == "__main__":
    main()
