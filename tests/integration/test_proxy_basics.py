"""End to end: a real router in front of a real backend."""

from __future__ import annotations

from aiohttp import ClientSession

from router.testing import Backend, run_router


def one_route(backend: Backend, **extra: object) -> dict[str, object]:
    return {"routes": [{"name": "app", "upstreams": [{"url": backend.url}], **extra}]}


async def test_proxies_get_and_logs_it(backend: Backend, client: ClientSession) -> None:
    async with run_router(one_route(backend)) as router:
        async with client.get(router.url + "/hello?x=1") as response:
            assert response.status == 200
            seen = await response.json()
            request_id = response.headers["X-Request-Id"]
        assert seen["target"] == "/hello?x=1"
        names = {name.lower(): value for name, value in seen["headers"]}
        assert names["x-request-id"] == request_id
        assert names["x-forwarded-for"] == "127.0.0.1"
        assert names["x-forwarded-proto"] == "http"
        # The port actually bound, also when the listener asked for port 0.
        assert names["x-forwarded-port"] == str(router.port)
        assert names["host"] == f"127.0.0.1:{router.port}"
        log = await router.access_log()
        assert log[-1]["request_id"] == request_id
        assert log[-1]["route"] == "app"
        assert log[-1]["status"] == 200
        assert log[-1]["upstream"] == backend.url
        assert log[-1]["path"] == "/hello"


async def test_no_route_is_404_with_json_for_api_clients(
    backend: Backend, client: ClientSession
) -> None:
    config = {
        "routes": [
            {"name": "app", "hosts": ["app.example.com"], "upstreams": [{"url": backend.url}]}
        ]
    }
    async with run_router(config) as router:
        async with client.get(
            router.url + "/", headers={"Host": "other.example.com", "Accept": "application/json"}
        ) as response:
            assert response.status == 404
            document = await response.json()
            assert document["status"] == 404
            assert "No route" in document["message"]
        async with client.get(router.url + "/", headers={"Host": "other.example.com"}) as response:
            assert response.status == 404
            assert response.content_type == "text/html"
            assert "No route matches" in await response.text()


async def test_post_body_reaches_backend(backend: Backend, client: ClientSession) -> None:
    async with run_router(one_route(backend)) as router:
        async with client.post(router.url + "/form", data=b"a=1&b=2") as response:
            seen = await response.json()
    assert seen["method"] == "POST"
    assert seen["body"] == "a=1&b=2"


async def test_route_header_rules_and_prefix_stripping(
    backend: Backend, client: ClientSession
) -> None:
    config = one_route(
        backend,
        path="/api",
        strip_prefix=True,
        request_headers={"set": {"X-Team": "blue"}, "remove": ["X-Drop-Me"]},
        response_headers={"set": {"X-Frame-Options": "DENY"}, "remove": ["X-Backend"]},
    )
    async with run_router(config) as router:
        async with client.get(
            router.url + "/api/items?q=1", headers={"X-Drop-Me": "1", "X-Keep": "2"}
        ) as response:
            assert response.headers["X-Frame-Options"] == "DENY"
            assert "X-Backend" not in response.headers
            seen = await response.json()
    names = {name.lower(): value for name, value in seen["headers"]}
    assert seen["target"] == "/items?q=1"
    assert names["x-team"] == "blue"
    assert names["x-keep"] == "2"
    assert names["x-forwarded-prefix"] == "/api"
    assert "x-drop-me" not in names


async def test_response_hop_by_hop_headers_removed_and_set_cookie_kept(
    backend: Backend, client: ClientSession
) -> None:
    async with run_router(one_route(backend)) as router:
        async with client.get(router.url + "/headers-out") as response:
            assert response.status == 200
            assert "X-Secret-Hop" not in response.headers
            assert "Keep-Alive" not in response.headers
            assert response.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


async def test_upstream_error_statuses_are_relayed(backend: Backend, client: ClientSession) -> None:
    async with run_router(one_route(backend)) as router:
        async with client.get(router.url + "/status/503") as response:
            assert response.status == 503
            assert await response.text() == "status"
