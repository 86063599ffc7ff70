"""Load balancing, retries, passive health and upstream failures."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web

from router.testing import Backend, run_backend, run_router


def named_app(name: str) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=name, headers={"X-Backend": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.fixture
async def three() -> AsyncIterator[list[Backend]]:
    async with (
        run_backend(named_app("a")) as a,
        run_backend(named_app("b")) as b,
        run_backend(named_app("c")) as c,
    ):
        yield [a, b, c]


def closed_port() -> int:
    """A port with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def names(client: ClientSession, url: str, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(count):
        async with client.get(url) as response:
            assert response.status == 200
            seen[await response.text()] += 1
    return seen


async def test_round_robin_spreads_by_weight(three: list[Backend], client: ClientSession) -> None:
    config = {
        "routes": [
            {
                "name": "app",
                "upstreams": [
                    {"url": three[0].url},
                    {"url": three[1].url, "weight": 2},
                    {"url": three[2].url},
                ],
            }
        ]
    }
    async with run_router(config) as router:
        seen = await names(client, router.url + "/", 40)
    assert seen == Counter({"a": 10, "b": 20, "c": 10})


async def test_invalid_backend_share_answers_500(
    three: list[Backend], client: ClientSession
) -> None:
    """An upstream under ``.invalid`` (the Gateway API's invalid backendRefs) takes its
    weighted share of requests and answers it with 500, without connecting anywhere."""
    config = {
        "routes": [
            {
                "name": "app",
                "upstreams": [
                    {"url": three[0].url, "weight": 3},
                    {"url": "http://invalid-backend.invalid", "weight": 1},
                ],
            }
        ]
    }
    answers: Counter[tuple[int, str]] = Counter()
    async with run_router(config) as router:
        for _ in range(40):
            async with client.get(router.url + "/") as response:
                body = await response.text()
                answers[(response.status, body if response.status == 200 else "")] += 1
                if response.status == 500:
                    assert "invalid-backend" not in body  # no address in the answer
                    assert "not valid" in body
    assert answers == Counter({(200, "a"): 30, (500, ""): 10})


def slow_app(name: str, delay: float) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(text=name)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.mark.parametrize(
    ("balancer", "most_on_slow"), [("least_outstanding", 1), ("round_robin", 8)]
)
async def test_least_outstanding_avoids_a_busy_endpoint(
    client: ClientSession, balancer: str, most_on_slow: int
) -> None:
    async with run_backend(slow_app("slow", 1.0)) as slow, run_backend(slow_app("fast", 0)) as fast:
        config = {
            "routes": [
                {
                    "name": "app",
                    "balancer": balancer,
                    "upstreams": [{"url": slow.url}, {"url": fast.url}],
                }
            ]
        }
        async with run_router(config) as router:

            async def one(delay: float) -> str:
                await asyncio.sleep(delay)
                async with client.get(router.url + "/") as response:
                    return await response.text()

            answers = await asyncio.gather(*(one(i * 0.03) for i in range(16)))
    # The slow endpoint keeps its requests outstanding, so least-outstanding sends it at
    # most the first one; round robin blindly sends it half.
    on_slow = answers.count("slow")
    if balancer == "least_outstanding":
        assert on_slow <= most_on_slow
    else:
        assert on_slow == most_on_slow


async def test_retry_goes_to_another_endpoint_for_idempotent_requests(
    three: list[Backend], client: ClientSession
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    config = {
        "routes": [
            {
                "name": "app",
                "retries": 1,
                "health": {"max_failures": 100},
                "upstreams": [{"url": dead}, {"url": three[0].url}],
            }
        ]
    }
    async with run_router(config) as router:
        for _ in range(6):
            async with client.get(router.url + "/") as response:
                assert response.status == 200
                assert await response.text() == "a"
        # POST is not retried: it fails whenever the dead endpoint is picked.
        statuses = Counter()
        for _ in range(6):
            async with client.post(router.url + "/", data=b"x") as response:
                statuses[response.status] += 1
        assert statuses[502] == 3 and statuses[200] == 3
        metrics = await (await client.get(router.admin_url + "/metrics")).text()
        assert 'commons_router_upstream_errors_total{route="app",kind="connect"}' in metrics


async def test_passive_health_ejects_a_failing_endpoint(
    three: list[Backend], client: ClientSession
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    config = {
        "routes": [
            {
                "name": "app",
                "retries": 0,
                "health": {"max_failures": 2, "ejection": "60s"},
                "upstreams": [{"url": dead}, {"url": three[0].url}],
            }
        ]
    }
    async with run_router(config) as router:
        statuses = [(await client.get(router.url + "/")).status for _ in range(8)]
        # Two failures eject the dead endpoint; from then on every request succeeds.
        assert statuses.count(502) == 2
        assert statuses[-4:] == [200, 200, 200, 200]
        routes = await (await client.get(router.admin_url + "/routes")).json()
        health = {e["url"]: e["healthy"] for e in routes["routes"][0]["endpoints"]}
        assert health == {dead: False, three[0].url: True}


async def test_all_endpoints_down_is_503_after_ejection(client: ClientSession) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    config = {
        "routes": [
            {
                "name": "app",
                "health": {"max_failures": 1, "ejection": "60s"},
                "upstreams": [{"url": dead}],
            }
        ]
    }
    async with run_router(config) as router:
        async with client.get(router.url + "/", headers={"Accept": "application/json"}) as first:
            assert first.status == 502
            assert "could not be reached" in (await first.json())["message"]
        async with client.get(router.url + "/", headers={"Accept": "application/json"}) as second:
            assert second.status == 503
            assert "No healthy upstream" in (await second.json())["message"]


async def test_read_timeout_is_504(three: list[Backend], client: ClientSession) -> None:
    config = {
        "routes": [
            {"name": "app", "timeouts": {"read": "200ms"}, "upstreams": [{"url": three[0].url}]}
        ]
    }
    async with run_router(config) as router:
        async with client.get(router.url + "/?delay=2") as response:
            assert response.status == 504
            text = await response.text()
            assert "did not answer in time" in text
            assert "Traceback" not in text


async def test_broken_upstream_answer_is_502(client: ClientSession) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = {"routes": [{"name": "app", "upstreams": [{"url": f"http://127.0.0.1:{port}"}]}]}
        async with run_router(config) as router:
            async with client.get(router.url + "/") as response:
                assert response.status == 502
                assert "Traceback" not in await response.text()
    finally:
        server.close()
        await server.wait_closed()


async def test_truncated_upstream_body_is_not_passed_off_as_complete(
    client: ClientSession,
) -> None:
    async def truncating(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100_000)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(truncating, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = {"routes": [{"name": "app", "upstreams": [{"url": f"http://127.0.0.1:{port}"}]}]}
        async with run_router(config) as router:
            from aiohttp import ClientPayloadError

            async with client.get(router.url + "/") as response:
                assert response.status == 200
                with pytest.raises(ClientPayloadError):
                    await response.read()
    finally:
        server.close()
        await server.wait_closed()
