"""Plugins can add headers to every response, streamed or not, just before it is sent."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession, web

from router.api import Handler, Middleware, NoConfig, Plugin, context_of
from router.config.models import Route
from router.testing import Backend, run_router


class StampPlugin(Plugin[NoConfig]):
    name = "stamp"

    def middleware(self, route: Route, route_config: Any) -> Middleware:
        async def stamp(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            def add_header(request: web.BaseRequest, response: web.StreamResponse) -> None:
                response.headers["X-Stamp"] = f"{route.name}:{response.status}"

            context_of(request).on_response(add_header)
            return await handler(request)

        return stamp


async def test_hook_runs_for_small_streamed_and_error_responses(
    backend: Backend, client: ClientSession
) -> None:
    config = {
        "plugins": [{"name": "stamp"}],
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}], "max_body_size": 10}],
    }
    async with run_router(config, plugins={"stamp": StampPlugin}) as router:
        async with client.get(router.url + "/small") as response:
            assert response.headers["X-Stamp"] == "app:200"
        async with client.get(router.url + "/bytes/1000000") as response:
            assert response.headers["X-Stamp"] == "app:200"
            assert len(await response.read()) == 1_000_000
        async with client.get(router.url + "/status/418") as response:
            assert response.headers["X-Stamp"] == "app:418"
        async with client.post(router.url + "/upload", data=b"x" * 100) as response:
            assert response.status == 413
            assert response.headers["X-Stamp"] == "app:413"
        async with client.ws_connect(router.url + "/ws") as ws:
            await ws.send_str("close:1000")
            await ws.receive()
        # A 404 has no route, so no route plugin ran: no stamp.
        async with client.get(router.url + "/x", headers={"Host": "bad_host!"}) as response:
            assert response.status == 400
            assert "X-Stamp" not in response.headers
