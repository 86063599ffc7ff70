"""When access tokens are refreshed, that each refresh is logged, and that a burst of
requests makes exactly one refresh grant at the real provider, across two workers and
across two routers sharing one real Redis. The provider's "short" client gets 4-second
access tokens; the routers keep the default refresh_margin (60 s)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import ClientSession, TCPConnector

from router.testing import Backend, RunningRouter, run_router
from tests.integration.test_workers import worker_metrics, workers_of
from tests.support.auth_flow import (  # noqa: F401 (fixtures)
    get_json,
    log_in,
    new_browser,
    provider_fixture,
    redis_server_fixture,
    router_config,
    router_port_fixture,
    session_cookie,
)
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import started, write_config
from tests.support.redis_server import RedisServer, free_port

# Effective margin: min(60 s, 4 s / 4) = 1 s, so a token is due 3 s after it was issued.
DUE_AFTER = 3.5


def short_token_config(
    port: int, provider: OidcProvider, backend: Backend, redis_url: str
) -> dict[str, Any]:
    cfg = router_config(
        port, provider, backend, store="redis", redis_url=redis_url, client_id="short"
    )
    del cfg["plugins"][1]["config"]["oidc"]["refresh_margin"]  # the default, 60 s
    return cfg


async def grants(provider: OidcProvider, client: ClientSession) -> int:
    return (await provider.counters(client))["refresh_token"]


async def burst(url: str, cookie: str, count: int) -> list[int]:
    """``count`` requests at once, each on its own connection (spread over workers)."""
    headers = {"Cookie": f"commons-router-session={cookie}", "Accept": "application/json"}
    async with ClientSession(connector=TCPConnector(force_close=True, limit=0)) as client:

        async def one(i: int) -> int:
            async with client.get(f"{url}/burst/{i}", headers=headers) as response:
                return response.status

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_margin_is_capped_by_the_token_lifetime_and_each_refresh_is_logged(
    router_port: int,
    provider: OidcProvider,
    redis_server: RedisServer,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="commons_router.auth")
    cfg = short_token_config(router_port, provider, backend, redis_server.url)
    async with run_router(cfg) as router, new_browser() as browser:
        await log_in(browser, router)
        signed_in = time.monotonic()
        before = await grants(provider, browser)
        # A 60 s margin on a 4 s token would refresh on every one of these.
        for _ in range(3):
            assert (await get_json(browser, router.url + "/x"))[0] == 200
        assert await grants(provider, browser) == before
        await asyncio.sleep(max(0.0, DUE_AFTER - (time.monotonic() - signed_in)))
        assert (await get_json(browser, router.url + "/x"))[0] == 200
        assert await grants(provider, browser) == before + 1
        cookie = session_cookie(browser)
    lines = [r.getMessage() for r in caplog.records if "refreshed" in r.getMessage()]
    assert len(lines) == 1
    match = re.fullmatch(
        r"session ([0-9a-f]{16}): access token refreshed in \d+ ms \(valid 4 s\)", lines[0]
    )
    assert match is not None, lines
    pseudonym = match.group(1)
    assert pseudonym not in cookie
    assert pseudonym not in hashlib.sha256(cookie.encode()).hexdigest()  # not the store key


async def test_a_burst_on_two_workers_makes_one_refresh_grant(
    tmp_path: Path,
    router_port: int,
    provider: OidcProvider,
    redis_server: RedisServer,
    backend: Backend,
) -> None:
    cfg = short_token_config(router_port, provider, backend, redis_server.url)
    admin = f"127.0.0.1:{free_port()}"
    cfg.update(
        workers=2,
        admin={"listen": admin},
        drain={"delay": 0, "grace": 5},
        access_log={"path": str(tmp_path / "access.log")},
        file_provider={"watch": False},
    )
    path = tmp_path / "router.yaml"
    write_config(path, cfg)
    url = f"http://127.0.0.1:{router_port}"
    with started(["serve", "--config", str(path)], tmp_path) as process:
        async with new_browser() as browser:
            await process.wait_ready(browser, f"http://{admin}")
            await log_in(browser, cast(RunningRouter, SimpleNamespace(url=url)))
            cookie = session_cookie(browser)
            for _ in range(2):
                issued = time.monotonic()
                before = await grants(provider, browser)
                await asyncio.sleep(max(0.0, DUE_AFTER - (time.monotonic() - issued)))
                assert await burst(url, cookie, 20) == [200] * 20
                assert await grants(provider, browser) == before + 1
            # Both workers took part in the bursts.
            for worker in workers_of(process).values():
                lines = re.findall(
                    r"commons_router_requests_total\{([^}]*)\} (\d+)", await worker_metrics(worker)
                )
                served = [
                    n for labels, n in lines if 'route="app"' in labels and 'code="200"' in labels
                ]
                assert sum(int(n) for n in served) > 0


async def test_a_burst_on_two_routers_sharing_redis_makes_one_refresh_grant(
    router_port: int, provider: OidcProvider, redis_server: RedisServer, backend: Backend
) -> None:
    cfg = short_token_config(router_port, provider, backend, redis_server.url)
    other = {**cfg, "listener": {"listen": f"127.0.0.1:{free_port()}"}}
    async with run_router(cfg) as first, run_router(other) as second:
        async with new_browser() as browser:
            await log_in(browser, first)
            cookie = session_cookie(browser)
            signed_in = time.monotonic()
            before = await grants(provider, browser)
            await asyncio.sleep(max(0.0, DUE_AFTER - (time.monotonic() - signed_in)))
            answers = await asyncio.gather(
                burst(first.url, cookie, 10), burst(second.url, cookie, 10)
            )
            assert answers == [[200] * 10, [200] * 10]
            assert await grants(provider, browser) == before + 1
