"""A real browser (Debian's chromium driven by Playwright) signs in through the router at a
real OpenID provider, in two tabs at once, then signs out; pages full of frames and
abandoned sign-ins never grow its Cookie header."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, Cookie, Page, async_playwright

from router.testing import Backend, RunningRouter, run_backend, run_router
from tests.support.auth_flow import (  # noqa: F401 (fixtures)
    provider_fixture,
    redis_server_fixture,
    router_config,
    router_port_fixture,
)
from tests.support.oidc_provider import OidcProvider
from tests.support.redis_server import RedisServer

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not os.path.exists(CHROMIUM):
    # tests/run.sh installs chromium; a missing browser is a broken setup, not a skip.
    raise RuntimeError(f"{CHROMIUM} is missing: run tests/run.sh (it installs chromium)")


@pytest.fixture
async def browser() -> AsyncIterator[BrowserContext]:
    with tempfile.TemporaryDirectory(prefix="commons-router-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS
            )
            try:
                yield context
            finally:
                await context.close()


@pytest.fixture
async def router(
    router_port: int, provider: OidcProvider, redis_server: RedisServer, backend: Backend
) -> AsyncIterator[RunningRouter]:
    cfg = router_config(router_port, provider, backend, store="redis", redis_url=redis_server.url)
    async with run_router(cfg) as running:
        yield running


async def at_provider_login(page: Page, provider: OidcProvider) -> None:
    await page.wait_for_url(provider.issuer + "/interaction/**")
    await page.wait_for_selector("input[name=login]")


async def submit_login(page: Page, user: str) -> None:
    await page.fill("input[name=login]", user)
    await page.fill("input[name=password]", "any password")
    await page.click("button[type=submit]")


async def echo_of(page: Page) -> dict[str, str]:
    body = json.loads(await page.inner_text("body"))
    return {k.lower(): v for k, v in body["headers"]}


async def test_sign_in_two_tabs_at_once_then_sign_out(
    browser: BrowserContext, router: RunningRouter, provider: OidcProvider
) -> None:
    first = browser.pages[0] if browser.pages else await browser.new_page()
    second = await browser.new_page()
    # Both tabs hit protected pages before either has signed in: two login flows at once.
    await first.goto(router.url + "/tab-one?x=1")
    await second.goto(router.url + "/tab-two")
    await at_provider_login(first, provider)
    await at_provider_login(second, provider)
    await submit_login(second, "alice")
    await second.wait_for_url(router.url + "/tab-two")
    await submit_login(first, "alice")
    await first.wait_for_url(router.url + "/tab-one?x=1")
    for page in (first, second):
        seen = await echo_of(page)
        assert seen["x-forwarded-user"] == "alice"
        assert seen["x-forwarded-email"] == "alice@example.org"
        assert "commons-router-session" not in seen.get("cookie", "")
    cookies = {c["name"]: c for c in await browser.cookies(router.url)}
    session = cookies["commons-router-session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert not [name for name in cookies if "-login-" in name]  # no flow cookies left over

    # JavaScript cannot read the session cookie.
    assert "commons-router-session" not in await first.evaluate("document.cookie")

    # Sign out with a same-origin POST; the provider asks to confirm, then sends us back.
    await first.evaluate(
        """() => { const f = document.createElement('form'); f.method = 'POST';
        f.action = '/.commons-router/logout'; document.body.appendChild(f); f.submit(); }"""
    )
    await first.wait_for_url(provider.issuer + "/session/end**")
    await first.click("button[autofocus], button[type=submit]")
    await first.wait_for_url(router.url + "/public/logged-out")
    # Signed out everywhere: the other tab is sent to the provider's login again.
    await second.goto(router.url + "/tab-two")
    await at_provider_login(second, provider)
    assert "commons-router-session" not in {c["name"] for c in await browser.cookies(router.url)}


def frames_app(count: int) -> web.Application:
    """A public page with ``count`` same-site iframes of protected pages."""

    async def frames(request: web.Request) -> web.Response:
        body = "".join(f'<iframe src="/frame-{i}"></iframe>' for i in range(count))
        return web.Response(text=f"<!doctype html><body>{body}</body>", content_type="text/html")

    async def other(request: web.Request) -> web.Response:
        return web.json_response({"headers": list(request.headers.items())})

    app = web.Application()
    app.router.add_get("/public/frames", frames)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


def cookie_header(cookies: list[Cookie]) -> str:
    return "; ".join(f"{c['name']}={c['value']}" for c in cookies)


async def test_a_page_full_of_frames_or_abandoned_logins_keeps_the_cookie_header_small(
    browser: BrowserContext,
    router_port: int,
    provider: OidcProvider,
    redis_server: RedisServer,
) -> None:
    async with run_backend(frames_app(20)) as backend:
        cfg = router_config(
            router_port, provider, backend, store="redis", redis_url=redis_server.url
        )
        async with run_router(cfg) as router:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            # The frames' logins happen at the router (each sets its flow cookie with the
            # redirect); the provider's pages need not load in twenty frames.
            provider_pages = f"{provider.issuer}/**"
            await page.route(provider_pages, lambda route: route.fulfill(body="provider"))
            for _ in range(2):
                # Each frame is a signed-out navigation to a protected page: a login each.
                await page.goto(router.url + "/public/frames", wait_until="load")
                cookies = await browser.cookies(router.url)
                flows = [c for c in cookies if "-login-" in c["name"]]
                assert 1 <= len(flows) <= 5
                assert len(cookie_header(cookies)) < 500
            await page.unroute(provider_pages)
            for i in range(7):  # logins started and abandoned at the provider
                await page.goto(f"{router.url}/abandoned-{i}")
                await at_provider_login(page, provider)
            cookies = await browser.cookies(router.url)
            assert len([c for c in cookies if "-login-" in c["name"]]) == 5
            assert len(cookie_header(cookies)) < 500
            # The last one is still good to finish, and leaves nothing behind.
            await submit_login(page, "alice")
            await page.wait_for_url(router.url + "/abandoned-6")
            assert (await echo_of(page))["x-forwarded-user"] == "alice"
            cookies = await browser.cookies(router.url)
            assert len([c for c in cookies if "-login-" in c["name"]]) == 4
