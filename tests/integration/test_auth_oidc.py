"""OIDC login against a real OpenID provider (npm oidc-provider), sessions in memory and in
a real Redis, logout (RP-initiated and back-channel)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs, quote, urlsplit

import pytest

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
    router_fixture,
    router_port_fixture,
    seen,
    session_cookie,
    start_login,
)
from tests.support.issuer import Issuer
from tests.support.oidc_provider import OidcProvider, parse_form, sign_in_at_provider
from tests.support.redis_server import RedisServer


async def test_login_round_trip(router: RunningRouter, provider: OidcProvider) -> None:
    async with new_browser() as browser:
        authorize = await start_login(browser, router, "/app/page?x=1&y=2")
        params = parse_qs(urlsplit(authorize).query)
        assert authorize.startswith(provider.issuer + "/auth?")
        assert params["code_challenge_method"] == ["S256"]
        assert len(params["state"][0]) >= 32 and len(params["nonce"][0]) >= 32
        assert "code_verifier" not in params
        callback = await sign_in_at_provider(browser, authorize, "alice")
        status, location, cookies = await finish_login(browser, callback)
        assert status == 302, location
        assert location == "/app/page?x=1&y=2"
        line = next(c for c in cookies.split("\n") if c.startswith("commons-router-session="))
        assert "HttpOnly" in line and "SameSite=Lax" in line and "Path=/" in line
        value = session_cookie(browser)
        assert len(value) >= 43 and "." not in value  # opaque id, not a token
        status, body = await get_json(browser, router.url + "/app/page", headers=HTML)
        assert status == 200
        headers = seen(body)
        assert headers["x-forwarded-user"] == "alice"
        assert headers["x-forwarded-email"] == "alice@example.org"
        assert headers["x-forwarded-groups"] == "staff"
        assert "commons-router-session" not in headers.get("cookie", "")
        # Not on public routes either.
        status, body = await get_json(browser, router.url + "/public/x", headers=HTML)
        assert status == 200
        assert "commons-router-session" not in seen(body).get("cookie", "")
        # Policy with groups from the ID token.
        status, _ = await get_json(browser, router.url + "/admin", headers=HTML)
        assert status == 403
    log = await router.access_log()
    assert any(line.get("user") == "alice@example.org" for line in log)


async def test_api_clients_get_401_not_a_redirect(router: RunningRouter) -> None:
    async with new_browser() as browser:
        for headers in (
            {"Accept": "application/json"},
            {**HTML, "X-Requested-With": "XMLHttpRequest"},
            {**HTML, "Sec-Fetch-Mode": "cors"},
        ):
            async with browser.get(
                router.url + "/x", headers=headers, allow_redirects=False
            ) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_two_tabs_log_in_at_once(router: RunningRouter) -> None:
    async with new_browser() as browser:
        first = await start_login(browser, router, "/tab-one")
        second = await start_login(browser, router, "/tab-two")
        callback_one = await sign_in_at_provider(browser, first, "alice")
        callback_two = await sign_in_at_provider(browser, second, "alice")
        results = await asyncio.gather(
            finish_login(browser, callback_two), finish_login(browser, callback_one)
        )
        assert sorted((s, loc) for s, loc, _ in results) == [(302, "/tab-one"), (302, "/tab-two")]
        status, body = await get_json(browser, router.url + "/tab-one")
        assert status == 200 and seen(body)["x-forwarded-user"] == "alice"
        # Each flow's cookie was removed by its callback: nothing piles up.
        names = [c.key for c in browser.cookie_jar if c.value]
        assert [n for n in names if "login-" in n] == []


async def test_callback_is_single_use(router: RunningRouter) -> None:
    async with new_browser() as browser, new_browser() as other:
        authorize = await start_login(browser, router, "/page?x=1")
        callback = await sign_in_at_provider(browser, authorize, "alice")
        assert (await finish_login(browser, callback))[0] == 302
        first = session_cookie(browser)
        # The signed-in user going Back to the callback gets the page, and no new session.
        status, location, cookies = await finish_login(browser, callback)
        assert (status, location) == (302, "/page?x=1")
        assert "commons-router-session=" not in cookies
        assert session_cookie(browser) == first
        # Anyone else replaying it gets nothing.
        status, page, cookies = await finish_login(other, callback)
        assert status == 400 and "already used" in page
        assert "commons-router-session=" not in cookies


async def test_callback_in_another_browser_is_refused(router: RunningRouter) -> None:
    async with new_browser() as attacker, new_browser() as victim:
        authorize = await start_login(attacker, router, "/")
        callback = await sign_in_at_provider(attacker, authorize, "mallory")
        status, _, cookies = await finish_login(victim, callback)
        assert status == 400
        assert "commons-router-session=" not in cookies


async def test_forged_or_missing_state_is_refused(router: RunningRouter) -> None:
    async with new_browser() as browser:
        for query in ("?code=x&state=forged", "?code=x", "?error=access_denied&state=x"):
            status, _ = await get_json(browser, router.url + "/.commons-router/callback" + query)
            assert status in (400, 403)


async def test_new_session_id_at_login_and_old_one_dies(router: RunningRouter) -> None:
    async with new_browser() as browser:
        await log_in(browser, router)
        first = session_cookie(browser)
        await log_in(browser, router)
        second = session_cookie(browser)
        assert first != second
    async with new_browser() as other:
        async with other.get(
            router.url + "/x",
            headers={"Accept": "application/json", "Cookie": f"commons-router-session={first}"},
        ) as response:
            assert response.status == 401
        async with other.get(
            router.url + "/x",
            headers={"Accept": "application/json", "Cookie": f"commons-router-session={second}"},
        ) as response:
            assert response.status == 200


async def test_attacker_chosen_session_id_is_not_adopted(router: RunningRouter) -> None:
    async with new_browser() as browser:
        authorize = await start_login(browser, router, "/", direct=True)
        callback = await sign_in_at_provider(browser, authorize, "alice")
        async with browser.get(
            callback,
            headers={"Cookie": "commons-router-session=attacker-fixed-value"},
            allow_redirects=False,
        ) as response:
            set_cookie = response.headers.getall("Set-Cookie", [])
        sessions = [c for c in set_cookie if c.startswith("commons-router-session=")]
        assert len(sessions) == 1
        assert "attacker-fixed-value" not in sessions[0]


@pytest.mark.parametrize(
    ("rd", "expected"),
    [
        ("/docs?a=1", "/docs?a=1"),
        ("SELF/same-origin", "SELF/same-origin"),
        ("https://docs.example.org/x", "https://docs.example.org/x"),
        ("//evil.test/x", "/"),
        ("/\\evil.test", "/"),
        ("/\t/evil.test", "/"),
        ("/%09/evil.test", "/"),
        ("/%2F/evil.test", "/"),
        ("https://docs.example.org.evil.test/", "/"),
        ("https://docs.example.org@evil.test/", "/"),
        ("https://docs.example.org:8443/", "/"),
        ("evil.test/x", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
async def test_return_url_is_validated(router: RunningRouter, rd: str, expected: str) -> None:
    rd, expected = rd.replace("SELF", router.url), expected.replace("SELF", router.url)
    async with new_browser() as browser:
        async with browser.get(
            router.url + "/.commons-router/login?rd=" + quote(rd, safe=""), allow_redirects=False
        ) as response:
            authorize = response.headers["Location"]
        callback = await sign_in_at_provider(browser, authorize, "alice")
        status, location, _ = await finish_login(browser, callback)
        assert (status, location) == (302, expected)


async def test_logout_requires_post_from_this_origin(
    router: RunningRouter, provider: OidcProvider
) -> None:
    async with new_browser() as browser:
        await log_in(browser, router)
        sid = session_cookie(browser)
        url = router.url + "/.commons-router/logout"
        async with browser.get(url, allow_redirects=False) as response:
            # A link only shows a page asking for the POST; it does not sign out.
            assert response.status == 200
            assert 'method="post"' in await response.text()
        async with browser.put(url, headers={"Origin": router.url}) as response:
            assert response.status == 405
        async with browser.post(
            url, headers={"Origin": "https://evil.test"}, allow_redirects=False
        ) as response:
            assert response.status == 403
        async with browser.post(url, allow_redirects=False) as response:
            assert response.status == 403  # neither Origin nor Referer
        assert (await get_json(browser, router.url + "/x"))[0] == 200
        async with browser.post(
            url, headers={"Origin": router.url}, allow_redirects=False
        ) as response:
            assert response.status == 303
            location = response.headers["Location"]
            assert (
                'commons-router-session=""' in response.headers["Set-Cookie"]
                or "Max-Age=0" in response.headers["Set-Cookie"]
            )
        end = urlsplit(location)
        assert location.startswith(provider.issuer + "/session/end")
        params = parse_qs(end.query)
        assert params["post_logout_redirect_uri"] == [router.url + "/public/logged-out"]
        assert params["id_token_hint"][0].count(".") == 2
    # The server-side session is gone: the old cookie does nothing any more.
    async with new_browser() as replay:
        async with replay.get(
            router.url + "/x",
            headers={"Accept": "application/json", "Cookie": f"commons-router-session={sid}"},
        ) as response:
            assert response.status == 401


async def test_backchannel_logout_ends_the_session(
    router: RunningRouter, provider: OidcProvider
) -> None:
    async with new_browser() as browser:
        await log_in(browser, router)
        assert (await get_json(browser, router.url + "/x"))[0] == 200
        before = (await provider.counters(browser))["backchannel_ok"]
        # The user signs out at the provider itself (another app, or the provider's page).
        async with browser.get(provider.issuer + "/session/end") as response:
            page = await response.text()

        action, fields = parse_form(page)
        fields["logout"] = "yes"
        async with browser.post(
            provider.issuer + action if action.startswith("/") else action,
            data=fields,
            allow_redirects=False,
        ) as response:
            assert response.status in (302, 303)
        deadline = time.monotonic() + 10
        while (await provider.counters(browser))["backchannel_ok"] == before:
            assert time.monotonic() < deadline, "the provider never called back"
            await asyncio.sleep(0.05)
        assert (await get_json(browser, router.url + "/x"))[0] == 401


async def test_forged_backchannel_logout_is_refused(router: RunningRouter) -> None:
    issuer = Issuer(name="http://127.0.0.1:1")
    forged = issuer.token(events={"http://schemas.openid.net/event/backchannel-logout": {}})
    async with new_browser() as browser:
        await log_in(browser, router)
        url = router.url + "/.commons-router/backchannel-logout"
        for data in ({"logout_token": forged}, {"logout_token": "x.y.z"}, {}):
            async with browser.post(url, data=data) as response:
                assert response.status == 400
        assert (await get_json(browser, router.url + "/x"))[0] == 200


async def test_garbled_cookie_is_no_session(router: RunningRouter) -> None:
    async with new_browser() as browser:
        for value in ("", "garbage", "a" * 500, "%00%ff", "..;/"):
            async with browser.get(
                router.url + "/x",
                headers={"Accept": "application/json", "Cookie": f"commons-router-session={value}"},
            ) as response:
                assert response.status == 401


async def test_tokens_are_encrypted_in_redis(
    router_port: int, provider: OidcProvider, redis_server: RedisServer, backend: Backend
) -> None:
    import redis.asyncio as aioredis

    cfg = router_config(router_port, provider, backend, store="redis", redis_url=redis_server.url)
    async with run_router(cfg) as router, new_browser() as browser:
        await log_in(browser, router)
        sid = session_cookie(browser)
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            values = [
                await client.get(k)
                async for k in client.scan_iter("commons-router:*")
                if await client.type(k) == b"string"
            ]
        finally:
            await client.aclose()
    stored = [v for v in values if v]
    assert stored
    for value in stored:
        assert sid.encode() not in value
        assert b"alice" not in value and b"eyJ" not in value  # no claims, no JWTs
