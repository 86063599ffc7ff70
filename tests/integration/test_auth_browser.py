"""A real browser (Debian's chromium driven by Playwright) signs in through the router at a
real OpenID provider, in two tabs at once, then signs out."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from router.testing import Backend, RunningRouter, run_router
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
