"""The same three-handler site on aiohttp, Starlette (uvicorn) and Flask (Werkzeug).

Handlers: ``admin`` for ``/admin`` and everything under it, ``secret`` for exactly
``/internal/secret``, ``public`` for the rest, each laid out the way the framework's
documentation shows. Every answer names the handler that ran (``X-Handler``) and the
route the router said it applied (``X-Seen-Route``, from the ``X-Router-Route`` request
header). Run one as ``python -m tests.frameworks.apps KIND FD``: it serves on the
listening socket ``FD`` inherited from the test.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Any

ROUTE_HEADER = "X-Router-Route"


def _answer_headers(name: str, seen: str | None) -> dict[str, str]:
    return {"X-Handler": name, "X-Seen-Route": seen or "-"}


def serve_aiohttp(fd: int) -> None:
    from aiohttp import web

    def report(name: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            headers = _answer_headers(name, request.headers.get(ROUTE_HEADER))
            return web.Response(text=name, headers=headers)

        return handler

    app = web.Application()
    app.router.add_route("*", "/admin", report("admin"))
    app.router.add_route("*", "/admin/{rest:.*}", report("admin"))
    app.router.add_route("*", "/internal/secret", report("secret"))
    app.router.add_route("*", "/{rest:.*}", report("public"))
    sock = socket.socket(fileno=fd)
    web.run_app(app, sock=sock, print=None, access_log=None)


def serve_starlette(fd: int, http: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def report(name: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> PlainTextResponse:
            headers = _answer_headers(name, request.headers.get(ROUTE_HEADER))
            return PlainTextResponse(name, headers=headers)

        return handler

    app = Starlette(
        routes=[
            Route("/admin", report("admin")),
            Route("/admin/{rest:path}", report("admin")),
            Route("/internal/secret", report("secret")),
            Route("/{rest:path}", report("public")),
        ]
    )
    uvicorn.run(app, fd=fd, http=http, lifespan="off", log_level="warning", access_log=False)


def serve_flask(fd: int) -> None:
    import logging

    from flask import Flask, Response, request
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    app = Flask(__name__)

    def report(name: str) -> Callable[..., Response]:
        def handler(**_: str) -> Response:
            headers = _answer_headers(name, request.headers.get(ROUTE_HEADER))
            return Response(name, headers=headers)

        return handler

    app.add_url_rule("/admin", "admin", report("admin"))
    app.add_url_rule("/admin/<path:rest>", "admin-under", report("admin"))
    app.add_url_rule("/internal/secret", "secret", report("secret"))
    app.add_url_rule("/", "public-root", report("public"))
    app.add_url_rule("/<path:rest>", "public", report("public"))
    make_server("127.0.0.1", 0, app, threaded=True, fd=fd).serve_forever()


def main(kind: str, fd: int) -> None:
    if kind == "aiohttp":
        serve_aiohttp(fd)
    elif kind in ("starlette-httptools", "starlette-h11"):
        serve_starlette(fd, kind.partition("-")[2])
    elif kind == "flask":
        serve_flask(fd)
    else:
        raise SystemExit(f"unknown framework {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
