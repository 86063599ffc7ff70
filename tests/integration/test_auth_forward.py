"""Forward-auth (nginx ``auth_request``, Traefik ForwardAuth): the router decides on the
original method, host and URI a trusted proxy names, normalized and routed exactly like a
direct request, and ignores those headers from anyone else. A real OpenID provider signs
the user in; sessions live in a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, TCPConnector

from router.testing import Backend, RunningRouter, run_router
from tests.support.auth_flow import (  # noqa: F401 (fixtures)
    provider_fixture,
    redis_server_fixture,
    router_config,
    router_port_fixture,
    signed_in_cookie,
)
from tests.support.oidc_provider import OidcProvider
from tests.support.redis_server import RedisServer

PROXY = "127.0.0.2"  # the trusted proxy's address; tests connect from it or from 127.0.0.1
AUTH = "/.commons-router/auth"


@pytest.fixture
async def router(
    router_port: int, provider: OidcProvider, redis_server: RedisServer, backend: Backend
) -> AsyncIterator[RunningRouter]:
    cfg = router_config(router_port, provider, backend, store="redis", redis_url=redis_server.url)
    cfg["trusted_proxies"] = [f"{PROXY}/32"]
    cfg["routes"].append(
        {
            "name": "guarded",
            "hosts": ["guarded.test"],
            "path": "/",
            "upstreams": [{"url": backend.url}],
            "plugins": {"auth": {"allow": {"groups": ["admins"]}}},
        }
    )
    async with run_router(cfg) as running:
        yield running


@pytest.fixture
async def alice(router: RunningRouter) -> str:
    return await signed_in_cookie(router)  # not in the admins group


@pytest.fixture
async def proxy() -> AsyncIterator[ClientSession]:
    async with ClientSession(connector=TCPConnector(local_addr=(PROXY, 0))) as session:
        yield session


async def ask(client: ClientSession, router: RunningRouter, **headers: str) -> int:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    async with client.get(router.url + AUTH, headers=headers, allow_redirects=False) as response:
        return response.status


@pytest.mark.parametrize(
    "uri",
    ["/admin", "/admin/x", "//admin", "/%61dmin", "/x/../admin", "/admin;x", "/admin?x=/public"],
)
async def test_the_original_path_decides_from_a_trusted_proxy(
    router: RunningRouter, proxy: ClientSession, alice: str, uri: str
) -> None:
    # Traefik ForwardAuth's headers, then nginx auth_request's conventional ones.
    assert (
        await ask(proxy, router, Cookie=alice, X_Forwarded_Method="GET", X_Forwarded_Uri=uri) == 403
    )
    assert (
        await ask(proxy, router, Cookie=alice, X_Original_Method="GET", X_Original_URI=uri) == 403
    )


async def test_allowed_paths_get_the_identity(
    router: RunningRouter, proxy: ClientSession, alice: str
) -> None:
    headers = {"Cookie": alice, "X-Forwarded-Uri": "/reports?id=7", "X-Forwarded-Method": "POST"}
    async with proxy.get(router.url + AUTH, headers=headers) as response:
        assert response.status == 202
        assert response.headers["X-Forwarded-User"] == "alice"
    # Without a session: a public path passes, a protected one needs a sign-in.
    assert await ask(proxy, router, X_Forwarded_Uri="/public/x") == 202
    assert await ask(proxy, router, X_Original_URI="/reports") == 401
    log = await router.access_log()
    assert any(line.get("auth_for") == "POST 127.0.0.1/reports" for line in log)


async def test_the_original_host_picks_its_routes(
    router: RunningRouter, proxy: ClientSession, alice: str
) -> None:
    assert await ask(proxy, router, Cookie=alice, X_Forwarded_Uri="/x") == 202
    forwarded = {"X_Forwarded_Host": "guarded.test", "X_Forwarded_Uri": "/x"}
    assert await ask(proxy, router, Cookie=alice, **forwarded) == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-Uri": "/%2Fadmin"},
        {"X-Forwarded-Uri": "/admin%00"},
        # Encoded controls and delimiters are refused as for a direct request.
        {"X-Forwarded-Uri": "/admin%0A"},
        {"X-Forwarded-Uri": "/admin%3B"},
        {"X-Forwarded-Uri": "admin"},
        {"X-Forwarded-Uri": "/x", "X-Forwarded-Method": "get /admin"},
        {"X-Forwarded-Uri": "/x", "X-Forwarded-Host": "a.test, guarded.test"},
    ],
)
async def test_malformed_original_requests_are_refused(
    router: RunningRouter, proxy: ClientSession, alice: str, headers: dict[str, str]
) -> None:
    async with proxy.get(router.url + AUTH, headers={"Cookie": alice, **headers}) as response:
        assert response.status == 400
        text = await response.text()
        assert "Traceback" not in text and "guarded" not in text


async def test_repeated_original_uri_is_refused(
    router: RunningRouter, proxy: ClientSession, alice: str
) -> None:
    headers = [("Cookie", alice), ("X-Forwarded-Uri", "/x"), ("X-Forwarded-Uri", "/admin")]
    async with proxy.get(router.url + AUTH, headers=headers) as response:
        assert response.status == 400


async def test_untrusted_peers_cannot_name_another_request(router: RunningRouter) -> None:
    async with ClientSession() as client:  # from 127.0.0.1, not a trusted proxy
        assert await ask(client, router, X_Forwarded_Uri="/public/x") == 401
        assert await ask(client, router, X_Original_URI="/public/x") == 401


async def test_a_client_cannot_add_the_other_proxys_headers(
    router: RunningRouter, proxy: ClientSession, alice: str
) -> None:
    # Behind nginx a client adds Traefik's headers, or the other way round: they disagree.
    nginx_set = {"X_Original_URI": "/admin", "X_Original_Method": "GET"}
    assert await ask(proxy, router, Cookie=alice, X_Forwarded_Uri="/x", **nginx_set) == 400
    assert await ask(proxy, router, X_Forwarded_Uri="/admin", X_Original_URI="/public/x") == 400
    methods = {"X_Original_Method": "GET", "X_Forwarded_Method": "POST"}
    assert await ask(proxy, router, X_Original_URI="/x", **methods) == 400
    # nginx names the host in Host: another host in X-Forwarded-Host is the client's.
    other_host = {"X_Original_URI": "/x", "X_Forwarded_Host": "guarded.test"}
    assert await ask(proxy, router, Cookie=alice, **other_host) == 400
    # Agreeing values are fine.
    same = {"X_Original_URI": "/x", "X_Forwarded_Uri": "/x", "X_Forwarded_Host": "127.0.0.1"}
    assert await ask(proxy, router, Cookie=alice, **same) == 202


@pytest.mark.parametrize("family", ["nginx", "traefik"])
async def test_only_the_named_proxys_headers_are_read(
    family: str,
    router_port: int,
    provider: OidcProvider,
    redis_server: RedisServer,
    backend: Backend,
    proxy: ClientSession,
) -> None:
    cfg = router_config(router_port, provider, backend, store="redis", redis_url=redis_server.url)
    cfg["trusted_proxies"] = [f"{PROXY}/32"]
    cfg["plugins"][1]["config"]["forward_auth_headers"] = family
    own, foreign = (
        ("X_Original_URI", "X_Forwarded_Uri")
        if family == "nginx"
        else ("X_Forwarded_Uri", "X_Original_URI")
    )
    async with run_router(cfg) as router:
        assert await ask(proxy, router, **{own: "/public/x"}) == 202
        # The other family's headers are the client's: ignored, not believed.
        assert await ask(proxy, router, **{foreign: "/public/x"}) == 401
        assert await ask(proxy, router, **{own: "/reports", foreign: "/public/x"}) == 401
