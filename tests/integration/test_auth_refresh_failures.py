"""Token refresh once across requests and replicas; behaviour when the identity provider or
Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession

from router.config.loader import ConfigError
from router.testing import Backend, run_backend, run_router
from tests.support.auth_flow import (  # noqa: F401 (fixtures)
    HTML,
    get_json,
    log_in,
    new_browser,
    provider_fixture,
    redis_server_fixture,
    router_config,
    router_port_fixture,
    session_cookie,
)
from tests.support.issuer import Issuer
from tests.support.oidc_provider import OidcProvider, router_client
from tests.support.redis_server import RedisServer, free_port


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    made = Issuer()
    async with run_backend(made.app()) as served:
        made.url = served.url
        yield made


async def wait_for_access_token_expiry(seconds: float = 4.5) -> None:
    # The provider's "short" client gets 4-second access tokens.
    await asyncio.sleep(seconds)


async def access_token_seen_by_backend(browser: ClientSession, url: str) -> str:
    status, body = await get_json(browser, url + "/withtoken")
    assert status == 200
    token: str = {k.lower(): v for k, v in body["headers"]}["x-forwarded-access-token"]
    return token


def replica(cfg: dict[str, Any], port: int) -> dict[str, Any]:
    return {**cfg, "listener": {"listen": f"127.0.0.1:{port}"}}


async def test_fifty_concurrent_requests_on_two_replicas_refresh_once(
    router_port: int, provider: OidcProvider, redis_server: RedisServer, backend: Backend
) -> None:
    cfg = router_config(
        router_port,
        provider,
        backend,
        store="redis",
        redis_url=redis_server.url,
        client_id="short",
    )
    async with run_router(cfg) as first, run_router(replica(cfg, free_port())) as second:
        async with new_browser() as browser:
            await log_in(browser, first)
            cookie = {
                "Cookie": f"commons-router-session={session_cookie(browser)}",
                "Accept": "application/json",
            }
            before = (await provider.counters(browser))["refresh_token"]
            old_token = await access_token_seen_by_backend(browser, first.url)
            await wait_for_access_token_expiry()

            async def one(url: str) -> int:
                async with ClientSession() as fresh:
                    async with fresh.get(url + "/x", headers=cookie) as response:
                        return response.status

            statuses = await asyncio.gather(*(one(r.url) for r in [first, second] * 25))
            assert statuses == [200] * 50
            after = (await provider.counters(browser))["refresh_token"]
            assert after - before == 1
            # Both replicas now send the new access token upstream.
            new_token = await access_token_seen_by_backend(browser, first.url)
            assert new_token != old_token
            assert await access_token_seen_by_backend(browser, second.url) == new_token


async def test_failed_refresh_sends_the_user_to_login(
    router_port: int, redis_server: RedisServer, backend: Backend
) -> None:
    op = OidcProvider([router_client("short", router_port)])
    op.start()
    try:
        cfg = router_config(router_port, op, backend, client_id="short")
        async with run_router(cfg) as router:
            async with new_browser() as browser:
                await log_in(browser, router)
                assert (await get_json(browser, router.url + "/x"))[0] == 200
                # The provider forgets every grant (in-memory storage): the refresh token
                # is refused once the access token expires.
                op.stop()
                op.start()
                await wait_for_access_token_expiry()
                sid = session_cookie(browser)
                async with browser.get(
                    router.url + "/x", headers=HTML, allow_redirects=False
                ) as response:
                    assert response.status == 302
                    assert response.headers["Location"].startswith("/.commons-router/login")
                    # The dead cookie is cleared with the redirect.
                    cleared = [
                        c
                        for c in response.headers.getall("Set-Cookie", [])
                        if c.startswith("commons-router-session=")
                    ]
                    assert cleared and "Max-Age=0" in cleared[0]
                assert not [c for c in browser.cookie_jar if c.key == "commons-router-session"]
                # The session is gone server-side, not only refused once.
                status, _ = await get_json(
                    browser, router.url + "/x", headers={"Cookie": f"commons-router-session={sid}"}
                )
                assert status == 401
    finally:
        op.stop()


async def test_identity_provider_down_gives_a_503_page(router_port: int, backend: Backend) -> None:
    down = OidcProvider([])  # never started: nothing listens on its port
    cfg = router_config(router_port, down, backend)
    async with run_router(cfg) as router:
        async with new_browser() as browser:
            async with browser.get(router.url + "/page", headers=HTML) as response:
                assert response.status == 503
                page = await response.text()
                assert "identity provider cannot be reached" in page
                assert "Traceback" not in page
            async with browser.get(router.url + "/public/x") as response:
                assert response.status == 200


async def test_redis_down_session_routes_503_others_work_and_recovery(
    router_port: int, provider: OidcProvider, backend: Backend, issuer: Issuer
) -> None:
    server = RedisServer()
    server.start()
    try:
        cfg = router_config(
            router_port, provider, backend, store="redis", redis_url=server.url, issuer=issuer
        )
        async with run_router(cfg) as router:
            async with new_browser() as browser:
                await log_in(browser, router)
                assert (await get_json(browser, router.url + "/x"))[0] == 200
                server.stop()
                status, body = await get_json(
                    browser, router.url + "/x", headers={"Accept": "application/json"}
                )
                assert status == 503
                assert "session store" in body["message"]
                # Public and bearer-token routes do not need Redis; optional identity
                # carries on anonymously.
                assert (await get_json(browser, router.url + "/public/x"))[0] == 200
                status, body = await get_json(browser, router.url + "/maybe/x")
                assert status == 200
                assert "x-forwarded-user" not in {k.lower() for k, _ in body["headers"]}
                bearer = {"Authorization": f"Bearer {issuer.token()}"}
                async with ClientSession() as api:
                    status, _ = await get_json(api, router.url + "/x", headers=bearer)
                    assert status == 200
                # Redis comes back (empty): the router recovers by itself.
                server.start()
                deadline = time.monotonic() + 15
                while True:
                    status, _ = await get_json(
                        browser, router.url + "/x", headers={"Accept": "application/json"}
                    )
                    if status != 503:
                        break
                    assert time.monotonic() < deadline, "no recovery"
                    await asyncio.sleep(0.1)
                assert status == 401  # that session died with Redis' memory
                await log_in(browser, router)
                assert (await get_json(browser, router.url + "/x"))[0] == 200
    finally:
        server.close()


async def test_memory_store_refuses_several_workers(
    router_port: int, provider: OidcProvider, backend: Backend
) -> None:
    cfg = router_config(router_port, provider, backend)
    cfg["workers"] = 2
    with pytest.raises(ConfigError, match="workers"):
        async with run_router(cfg):
            pass


async def test_a_login_started_on_one_replica_finishes_on_another(
    router_port: int, provider: OidcProvider, redis_server: RedisServer, backend: Backend
) -> None:
    from urllib.parse import urlsplit

    from tests.support.auth_flow import finish_login, start_login
    from tests.support.oidc_provider import sign_in_at_provider

    cfg = router_config(router_port, provider, backend, store="redis", redis_url=redis_server.url)
    async with run_router(cfg) as first, run_router(replica(cfg, free_port())) as second:
        async with new_browser() as browser:
            authorize = await start_login(browser, first, "/from-first", direct=True)
            callback = await sign_in_at_provider(browser, authorize, "alice")
            parts = urlsplit(callback)
            status, location, _ = await finish_login(
                browser, f"{second.url}{parts.path}?{parts.query}"
            )
            assert (status, location) == (302, "/from-first")
            status, body = await get_json(browser, second.url + "/x")
            assert status == 200
            assert {k.lower(): v for k, v in body["headers"]}["x-forwarded-user"] == "alice"
            assert (await get_json(browser, first.url + "/x"))[0] == 200


async def test_discovery_for_another_issuer_is_refused_and_logged(
    router_port: int,
    provider: OidcProvider,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = router_config(router_port, provider, backend)
    # The document at this URL names the provider's real issuer, not this one.
    cfg["plugins"][1]["config"]["oidc"]["issuer"] = provider.issuer + "/"
    async with run_router(cfg) as router:
        async with new_browser() as browser:
            async with browser.get(router.url + "/.commons-router/login") as response:
                assert response.status == 503
    assert any("names issuer" in record.getMessage() for record in caplog.records)
