"""The ``unavailable`` builtin: a route that keeps its host and path but answers 503."""

from __future__ import annotations

from aiohttp import ClientSession

from router.testing import Backend, run_router


async def test_unavailable_route_answers_503_and_holds_its_host(
    backend: Backend, client: ClientSession
) -> None:
    config = {
        "routes": [
            {"name": "down", "hosts": ["shop.example.com"], "builtin": "unavailable"},
            {"name": "wildcard", "hosts": ["*.example.com"], "upstreams": [{"url": backend.url}]},
        ]
    }
    async with run_router(config) as router:
        async with client.get(
            router.url + "/cart", headers={"Host": "shop.example.com", "Accept": "application/json"}
        ) as response:
            assert response.status == 503
            assert "'down'" in (await response.json())["message"]
        async with client.get(router.url + "/", headers={"Host": "other.example.com"}) as response:
            assert response.status == 200
        (line,) = [e for e in await router.access_log() if e["path"] == "/cart"]
        assert (line["route"], line["status"]) == ("down", 503)
