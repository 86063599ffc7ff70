"""Fixtures and helpers for the OIDC tests: a real provider, Redis, routers, a scripted browser."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientSession, CookieJar

from router.testing import Backend, RunningRouter, run_router
from tests.support.issuer import Issuer
from tests.support.oidc_provider import OidcProvider, router_client, sign_in_at_provider
from tests.support.redis_server import RedisServer, free_port

SECRET = "router-secret"
KEY = "q2sOGb1pb0mjzK0WxKtDc2MG0oLytk7WQqGbEaRv3Yw="


@pytest.fixture(scope="module", name="router_port")
def router_port_fixture() -> int:
    return free_port()


@pytest.fixture(scope="module", name="provider")
def provider_fixture(router_port: int) -> Iterator[OidcProvider]:
    op = OidcProvider([router_client("router", router_port), router_client("short", router_port)])
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="module", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def router_config(
    port: int,
    provider: OidcProvider,
    backend: Backend,
    *,
    store: str = "memory",
    redis_url: str | None = None,
    client_id: str = "router",
    issuer: Issuer | None = None,
    cache: float = 0,
) -> dict[str, Any]:
    sessions: dict[str, Any] = {"store": store, "cache": cache}
    if store == "redis":
        sessions.update({"redis": {"url": redis_url, "timeout": "500ms"}, "encryption_keys": [KEY]})
    auth: dict[str, Any] = {
        "oidc": {
            "issuer": provider.issuer,
            "client_id": client_id,
            "client_secret": SECRET,
            "scopes": ["openid", "email", "profile", "groups", "offline_access"],
            "post_logout_redirect_url": f"http://127.0.0.1:{port}/public/logged-out",
            "refresh_margin": 0,
            "timeout": "2s",
        },
        "allowed_redirect_hosts": ["docs.example.org"],
    }
    if issuer is not None:
        auth["bearer"] = {
            "issuers": [
                {"issuer": issuer.name, "jwks_url": issuer.jwks_url, "audience": ["api://router"]}
            ]
        }
    up = [{"url": backend.url}]
    return {
        "listener": {"listen": f"127.0.0.1:{port}"},
        "plugins": [{"name": "sessions", "config": sessions}, {"name": "auth", "config": auth}],
        "routes": [
            {"name": "app", "path": "/", "upstreams": up},
            {
                "name": "public",
                "path": "/public",
                "upstreams": up,
                "plugins": {"auth": {"policy": "public"}},
            },
            {
                "name": "withtoken",
                "path": "/withtoken",
                "upstreams": up,
                "plugins": {"auth": {"pass_access_token": True}},
            },
            {
                "name": "maybe",
                "path": "/maybe",
                "upstreams": up,
                "plugins": {"auth": {"policy": "optional"}},
            },
            {
                "name": "admin",
                "path": "/admin",
                "upstreams": up,
                "plugins": {"auth": {"allow": {"groups": ["admins"]}}},
            },
        ],
    }


@pytest.fixture(params=["memory", "redis"], name="router")
async def router_fixture(
    request: pytest.FixtureRequest,
    router_port: int,
    provider: OidcProvider,
    redis_server: RedisServer,
    backend: Backend,
) -> AsyncIterator[RunningRouter]:
    cfg = router_config(
        router_port, provider, backend, store=request.param, redis_url=redis_server.url
    )
    async with run_router(cfg) as running:
        yield running


def new_browser() -> ClientSession:
    return ClientSession(cookie_jar=CookieJar(unsafe=True))


HTML = {"Accept": "text/html,application/xhtml+xml"}


async def start_login(
    browser: ClientSession, router: RunningRouter, path: str, *, direct: bool = False
) -> str:
    """Open a protected page; return the provider URL the router sends the browser to."""
    if direct:
        login = "/.commons-router/login?rd=" + quote(path, safe="")
    else:
        async with browser.get(router.url + path, headers=HTML, allow_redirects=False) as response:
            assert response.status == 302
            login = response.headers["Location"]
    assert login.startswith("/.commons-router/login?rd=")
    async with browser.get(router.url + login, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def finish_login(browser: ClientSession, callback: str) -> tuple[int, str, str]:
    async with browser.get(callback, allow_redirects=False) as response:
        cookies = response.headers.getall("Set-Cookie", [])
        location = response.headers.get("Location") or await response.text()
        return response.status, location, "\n".join(cookies)


async def log_in(
    browser: ClientSession, router: RunningRouter, path: str = "/", user: str = "alice"
) -> str:
    authorize = await start_login(browser, router, path, direct=True)
    callback = await sign_in_at_provider(browser, authorize, user)
    status, location, _ = await finish_login(browser, callback)
    assert status == 302, location
    return location


def session_cookie(browser: ClientSession) -> str:
    for cookie in browser.cookie_jar:
        if cookie.key == "commons-router-session":
            return cookie.value
    raise AssertionError("no session cookie")


async def signed_in_cookie(router: RunningRouter, user: str = "alice") -> str:
    """A ``Cookie`` header value of a fresh session of ``user`` (a whole login)."""
    async with new_browser() as browser:
        await log_in(browser, router, user=user)
        return f"commons-router-session={session_cookie(browser)}"


async def get_json(browser: ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with browser.get(url, allow_redirects=False, **kwargs) as response:
        try:
            return response.status, await response.json(content_type=None)
        except ValueError:
            return response.status, None


def seen(body: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in body["headers"]}
