"""Login flows a browser leaves behind, callbacks that fail, and what the pages say: against
a real OpenID provider (npm oidc-provider) and sessions in a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from aiohttp import ClientSession

from router.testing import Backend, RunningRouter, run_router
from tests.support.auth_flow import (  # noqa: F401 (fixtures)
    HTML,
    finish_login,
    get_json,
    log_in,
    new_browser,
    provider_fixture,
    redis_server_fixture,
    router_config,
    router_port_fixture,
    session_cookie,
    start_login,
)
from tests.support.oidc_provider import OidcProvider, parse_form, sign_in_at_provider
from tests.support.redis_server import RedisServer

FLOW_PREFIX = "commons-router-session-login-"
CALLBACK = "/.commons-router/callback"


@pytest.fixture
async def router(
    router_port: int, provider: OidcProvider, redis_server: RedisServer, backend: Backend
) -> AsyncIterator[RunningRouter]:
    cfg = router_config(router_port, provider, backend, store="redis", redis_url=redis_server.url)
    async with run_router(cfg) as running:
        yield running


def flow_cookies(browser: ClientSession) -> dict[str, str]:
    return {c.key: c.value for c in browser.cookie_jar if c.key.startswith(FLOW_PREFIX)}


def state_of(authorize: str) -> str:
    return parse_qs(urlsplit(authorize).query)["state"][0]


async def page(browser: ClientSession, url: str) -> tuple[int, str]:
    async with browser.get(url, headers=HTML, allow_redirects=False) as response:
        return response.status, await response.text()


async def test_started_logins_are_capped_per_browser_and_the_oldest_gives_way(
    router: RunningRouter,
) -> None:
    async with new_browser() as browser:
        started = [await start_login(browser, router, f"/tab-{i}", direct=True) for i in range(12)]
        cookies = flow_cookies(browser)
        assert len(cookies) == 5  # oidc.max_login_flows
        header = "; ".join(f"{k}={v}" for k, v in cookies.items())
        assert len(header) < 5 * 90
        # The newest sign-in still works; the oldest gave way to it.
        callback = await sign_in_at_provider(browser, started[-1], "alice")
        assert (await finish_login(browser, callback))[:2] == (302, "/tab-11")
        callback = await sign_in_at_provider(browser, started[0], "alice")
        status, text, _ = await finish_login(browser, callback)
        assert status == 400 and "newer sign-in" in text


async def test_every_failed_callback_drops_its_flow_cookie(
    router: RunningRouter, provider: OidcProvider
) -> None:
    failures = [
        {"error": "access_denied", "iss": provider.issuer},  # Cancel at the provider
        {"code": "tampered", "iss": provider.issuer},  # the provider refuses the code
        {"iss": provider.issuer},  # no code at all
        {"code": "x", "iss": "https://evil.test"},  # another issuer
    ]
    async with new_browser() as browser:
        for query in failures:
            state = state_of(await start_login(browser, router, "/", direct=True))
            assert len(flow_cookies(browser)) == 1
            url = f"{router.url}{CALLBACK}?{urlencode({**query, 'state': state})}"
            status, text = await page(browser, url)
            assert status in (400, 403), text
            assert flow_cookies(browser) == {}, query
            assert "Traceback" not in text


async def test_rfc9207_iss_is_checked_when_the_provider_sends_it(
    router: RunningRouter, provider: OidcProvider
) -> None:
    async with new_browser() as browser:
        status, metadata = await get_json(
            browser, provider.issuer + "/.well-known/openid-configuration"
        )
        assert metadata["authorization_response_iss_parameter_supported"] is True
        for forged in ("https://evil.test", None):
            callback = await sign_in_at_provider(
                browser, await start_login(browser, router, "/", direct=True), "alice"
            )
            parts = urlsplit(callback)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            assert params["iss"] == provider.issuer
            if forged is None:
                del params["iss"]
            else:
                params["iss"] = forged
            status, text, cookies = await finish_login(
                browser, f"{router.url}{CALLBACK}?{urlencode(params)}"
            )
            assert status == 400
            assert "does not come from the configured identity provider" in text
            assert "commons-router-session=" not in cookies
        # The genuine answer still signs in.
        assert await log_in(browser, router, "/ok") == "/ok"


async def test_provider_text_only_for_this_browsers_own_sign_in(
    router: RunningRouter, provider: OidcProvider
) -> None:
    spoof = "Your account is locked. Call helpdesk 555-0100"
    async with new_browser() as browser, new_browser() as other:
        # Anyone can send a link with any text: the page says only our words.
        for query in (
            {"error": spoof, "state": "x", "iss": provider.issuer},
            {"error": "access_denied", "error_description": spoof, "state": "x"},
            {"error": "access_denied", "error_description": spoof, "iss": provider.issuer},
        ):
            status, text = await page(other, f"{router.url}{CALLBACK}?{urlencode(query)}")
            assert status in (400, 403)
            assert "helpdesk" not in text and "locked" not in text
        status, text = await page(
            other, f"{router.url}{CALLBACK}?{urlencode({'error': spoof, 'state': 'x'})}"
        )
        assert "helpdesk" not in text
        # A live sign-in of another browser does not unlock the provider's text either.
        state = state_of(await start_login(other, router, "/", direct=True))
        query = {
            "error": "access_denied",
            "error_description": spoof,
            "state": state,
            "iss": provider.issuer,
        }
        status, text = await page(browser, f"{router.url}{CALLBACK}?{urlencode(query)}")
        assert status == 403 and "helpdesk" not in text
        assert "cancelled" in text
        # This browser's own sign-in: our words first, then the provider's, marked as such.
        state = state_of(await start_login(browser, router, "/docs", direct=True))
        query = {
            "error": "access_denied",
            "error_description": "Denied by policy <b>7</b>",
            "state": state,
            "iss": provider.issuer,
        }
        status, text = await page(browser, f"{router.url}{CALLBACK}?{urlencode(query)}")
        assert status == 403
        assert "The sign-in was cancelled, or the identity provider refused it." in text
        said = "The identity provider said: &quot;Denied by policy &lt;b&gt;7&lt;/b&gt;&quot;"
        assert said in text
        assert f'href="/.commons-router/login?rd={quote("/docs", safe="")}"' in text


async def test_callback_dead_ends_say_what_happened_and_offer_a_way_on(
    router: RunningRouter,
) -> None:
    async with new_browser() as browser:
        state = state_of(await start_login(browser, router, "/", direct=True))
        tampered = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
        status, text = await page(browser, f"{router.url}{CALLBACK}?code=x&state={tampered}")
        assert status == 400
        assert "not valid" in text and "expired" not in text
        assert 'href="/.commons-router/login?rd=%2F"' in text
        status, text = await page(browser, f"{router.url}{CALLBACK}?code=x")
        assert status == 400 and "expired" not in text


async def test_forbidden_page_offers_sign_out_and_another_account(router: RunningRouter) -> None:
    async with new_browser() as browser:
        await log_in(browser, router)
        status, text = await page(browser, router.url + "/admin/x?y=1")
        assert status == 403
        again = "/.commons-router/login?rd=" + quote("/admin/x?y=1", safe="")
        link = "/.commons-router/logout?rd=" + quote(again, safe="")
        assert f'href="{link}"' in text.replace("&amp;", "&")
        assert "Sign in as someone else" in text and "Sign out" in text
        # The link shows the sign-out button, which comes back to sign-in for that page.
        status, text = await page(browser, router.url + link)
        assert status == 200
        action, fields = parse_form(text)
        assert fields["rd"] == again
        async with browser.post(
            router.url + action, data=fields, headers={"Origin": router.url}, allow_redirects=False
        ) as response:
            assert response.status == 303


async def test_logout_rd_is_honoured_after_the_providers_logout(
    router_port: int, provider: OidcProvider, redis_server: RedisServer, backend: Backend
) -> None:
    cfg = router_config(router_port, provider, backend, store="redis", redis_url=redis_server.url)
    back = f"http://127.0.0.1:{router_port}/.commons-router/logged-out"
    cfg["plugins"][1]["config"]["oidc"]["post_logout_redirect_url"] = back
    async with run_router(cfg) as router:
        for rd, expected in (("/docs?a=1", "/docs?a=1"), ("//evil.test/x", "/")):
            async with new_browser() as browser:
                await log_in(browser, router)
                async with browser.post(
                    router.url + "/.commons-router/logout",
                    data={"rd": rd},
                    headers={"Origin": router.url},
                    allow_redirects=False,
                ) as response:
                    assert response.status == 303
                    end = response.headers["Location"]
                assert end.startswith(provider.issuer + "/session/end")
                assert parse_qs(urlsplit(end).query)["post_logout_redirect_uri"] == [back]
                async with browser.get(end) as response:
                    action, fields = parse_form(await response.text())
                fields["logout"] = "yes"
                url = provider.issuer + action if action.startswith("/") else action
                async with browser.post(url, data=fields, allow_redirects=False) as response:
                    assert response.status in (302, 303)
                    returned = response.headers["Location"]
                assert returned.startswith(back + "?")
                async with browser.get(returned, allow_redirects=False) as response:
                    assert response.status == 303
                    assert response.headers["Location"] == expected
                assert (await get_json(browser, router.url + "/x"))[0] == 401
        async with new_browser() as browser:
            # Without a sign-out behind it, the page sends the browser home.
            async with browser.get(back + "?state=forged", allow_redirects=False) as response:
                assert (response.status, response.headers["Location"]) == (303, "/")


async def test_a_dead_session_cookie_is_cleared(router: RunningRouter) -> None:
    async with new_browser() as browser:
        await log_in(browser, router)
        cookie = session_cookie(browser)
        await browser.post(
            router.url + "/.commons-router/logout",
            headers={"Origin": router.url},
            allow_redirects=False,
        )
    async with new_browser() as replay:
        async with replay.get(
            router.url + "/x",
            headers={**HTML, "Cookie": f"commons-router-session={cookie}"},
            allow_redirects=False,
        ) as response:
            assert response.status == 302
            cleared = [
                c
                for c in response.headers.getall("Set-Cookie", [])
                if c.startswith("commons-router-session=")
            ]
            assert cleared and "Max-Age=0" in cleared[0]
