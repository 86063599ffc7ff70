"""Envoy ``ext_authz`` over HTTP (Envoy Gateway ``SecurityPolicy`` ``extAuth.http``, Gateway
API ``ExternalAuth``): a trusted gateway asks ``<prefix><original path and query>`` with the
original method, ``Host`` and the headers it was told to pass; the router answers 200 with
the identity to set upstream, or the denial the client gets. The requests below are the
ones Envoy sends (no Envoy runs here). A real OpenID provider signs the user in; sessions
live in a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
from aiohttp import ClientSession, TCPConnector

from router.testing import Backend, RunningRouter, run_backend, run_router
from tests.support.auth_flow import (  # noqa: F401 (fixtures)
    HTML,
    finish_login,
    new_browser,
    provider_fixture,
    redis_server_fixture,
    router_config,
    router_port_fixture,
    signed_in_cookie,
)
from tests.support.issuer import Issuer
from tests.support.oidc_provider import OidcProvider, sign_in_at_provider
from tests.support.rawhttp import RawResponse, parse_responses, request_bytes
from tests.support.redis_server import RedisServer

GATEWAY = "127.0.0.2"  # the trusted gateway's address; clients connect from 127.0.0.1
PREFIX = "/.commons-router/ext-authz"
REMOVE = "x-envoy-auth-headers-to-remove"


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    made = Issuer()
    async with run_backend(made.app()) as served:
        made.url = served.url
        yield made


@pytest.fixture
async def router(
    router_port: int,
    provider: OidcProvider,
    redis_server: RedisServer,
    backend: Backend,
    issuer: Issuer,
) -> AsyncIterator[RunningRouter]:
    cfg = router_config(
        router_port, provider, backend, store="redis", redis_url=redis_server.url, issuer=issuer
    )
    cfg["trusted_proxies"] = [f"{GATEWAY}/32"]
    cfg["plugins"][1]["config"]["ext_authz"] = True
    cfg["routes"].append(
        {
            "name": "guarded",
            "hosts": ["guarded.test"],
            "path": "/",
            "upstreams": [{"url": backend.url}],
            "plugins": {"auth": {"allow": {"groups": ["admins"]}}},
        }
    )
    # Routes that only carry policy for the gateway's traffic.
    for host, policy in (
        ("policy.test", {"allow": {"groups": ["admins"]}}),
        ("open.test", {"policy": "public"}),
    ):
        cfg["routes"].append(
            {"name": host, "hosts": [host], "builtin": "unavailable", "plugins": {"auth": policy}}
        )
    # Served over HTTPS only: plain-HTTP requests to it are redirected, checks are not.
    cfg["routes"].append(
        {
            "name": "secure.test",
            "hosts": ["secure.test"],
            "builtin": "unavailable",
            "https_redirect": True,
            "plugins": {"auth": {"policy": "public"}},
        }
    )
    async with run_router(cfg) as running:
        yield running


@pytest.fixture
async def alice(router: RunningRouter) -> str:
    return await signed_in_cookie(router)  # not in the admins group


@pytest.fixture
async def gateway() -> AsyncIterator[ClientSession]:
    async with ClientSession(connector=TCPConnector(local_addr=(GATEWAY, 0))) as session:
        yield session


async def check(
    client: ClientSession, router: RunningRouter, original: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str]]:
    """What Envoy sends for ``method original``: the same method, ``<prefix><original>``."""
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    url = router.url + PREFIX + original
    async with client.request(method, url, headers=sent, allow_redirects=False) as response:
        await response.read()
        return response.status, dict(response.headers)


async def raw_check(port: int, target: str, **headers: str) -> RawResponse:
    """A check whose target goes byte for byte (client libraries resolve dot segments)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(GATEWAY, 0))
    try:
        sent = [(k.replace("_", "-"), v) for k, v in headers.items()]
        writer.write(request_bytes("GET", target, sent, host="127.0.0.1"))
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    return parse_responses(data)[0]


async def test_allowed_requests_get_the_identity_to_set_upstream(
    router: RunningRouter, gateway: ClientSession, alice: str
) -> None:
    cookie = f"theme=dark; {alice}"
    status, headers = await check(gateway, router, "/reports?id=7", "POST", Cookie=cookie)
    assert status == 200  # Envoy allows on 200 only (202 would be a denial)
    assert headers["X-Forwarded-User"] == "alice"
    assert headers["X-Forwarded-Email"] == "alice@example.org"
    assert headers["X-Forwarded-Groups"] == "staff"
    removed = {name.strip() for name in headers[REMOVE].split(",")}
    # The client's Authorization and every other spelling of the identity headers go.
    assert {"authorization", "x_forwarded_user", "x-forwarded_user"} <= removed
    assert "x-forwarded-user" not in removed
    # The backend sees the client's other cookies, never the router's session.
    assert headers["Cookie"] == "theme=dark"
    status, headers = await check(gateway, router, "/reports", Cookie=alice)
    assert status == 200 and "cookie" in headers[REMOVE].split(", ")
    log = await router.access_log()
    assert any(line.get("auth_for") == "POST 127.0.0.1/reports" for line in log)


async def test_public_and_optional_paths_blank_the_identity_headers(
    router: RunningRouter, gateway: ClientSession
) -> None:
    forged = {"X_Forwarded_User": "root", "Cookie": "theme=dark"}
    for path in ("/public/x", "/maybe"):
        status, headers = await check(gateway, router, path, **forged)
        assert status == 200
        # Set empty (a gateway that ignores the removal list still overwrites a forged
        # value) and removed.
        assert headers["X-Forwarded-User"] == ""
        assert "x-forwarded-user" in headers[REMOVE].split(", ")
        assert "Cookie" not in headers and "cookie" not in headers[REMOVE].split(", ")


@pytest.mark.parametrize(
    "original",
    ["/admin", "/admin/x", "//admin", "/%61dmin", "/x/../admin", "/admin;x", "/admin?x=/public"],
)
async def test_the_original_path_decides_per_route(
    router: RunningRouter, gateway: ClientSession, alice: str, original: str
) -> None:
    status, headers = await check(gateway, router, original, Cookie=alice)
    assert status == 403
    assert "X-Forwarded-User" not in headers


async def test_dot_segments_cannot_leave_the_prefix(
    router: RunningRouter, gateway: ClientSession, alice: str
) -> None:
    port = router.port
    assert (await raw_check(port, PREFIX + "/x/../admin", Cookie=alice)).status == 403
    # Resolved inside the original path: still /admin's decision, and /public/x's is an
    # allow from the router itself (not the answer of the route /public/x as a request).
    assert (await raw_check(port, PREFIX + "/../../admin", Cookie=alice)).status == 403
    allowed = await raw_check(port, PREFIX + "/../../public/x", Cookie=alice)
    assert allowed.status == 200 and REMOVE in allowed.headers
    # A spelling of the prefix that is not the prefix as sent is no check at all.
    assert (await raw_check(port, "/.commons-router/x/../ext-authz/public/x")).status == 400
    assert (await raw_check(port, "/.commons-router/%65xt-authz/public/x")).status == 400


async def test_the_original_host_picks_its_routes(
    router: RunningRouter, gateway: ClientSession, alice: str
) -> None:
    assert (await check(gateway, router, "/x", Cookie=alice))[0] == 200
    guarded = {"Cookie": alice, "Host": "guarded.test"}
    assert (await check(gateway, router, "/x", **guarded))[0] == 403
    # Only Host (Envoy's :authority) names the host; X-Forwarded-Host is the client's.
    forwarded = {"Cookie": alice, "X_Forwarded_Host": "127.0.0.1", "Host": "guarded.test"}
    assert (await check(gateway, router, "/x", **forwarded))[0] == 403
    # Policy-only routes decide checks; traffic for them that reaches the router gets 503.
    assert (await check(gateway, router, "/x", Cookie=alice, Host="policy.test"))[0] == 403
    status, headers = await check(gateway, router, "/x", Host="open.test")
    assert status == 200 and REMOVE in headers
    async with gateway.get(router.url + "/x", headers={"Host": "open.test"}) as response:
        assert response.status == 503


async def test_api_clients_get_401_and_browsers_the_login(
    router: RunningRouter, gateway: ClientSession
) -> None:
    status, headers = await check(gateway, router, "/reports?id=7")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, headers = await check(gateway, router, "/reports?id=7", **HTML)
    assert status == 302
    location = headers["Location"]
    assert location == "/.commons-router/login?rd=" + quote("/reports?id=7", safe="")
    # The gateway sends the browser there (the sign-in paths are routed to the router) and
    # the sign-in ends on the page first asked for.
    async with new_browser() as browser:
        async with browser.get(router.url + location, allow_redirects=False) as response:
            assert response.status == 302
            authorize = response.headers["Location"]
        callback = await sign_in_at_provider(browser, authorize, "alice")
        status, back, _ = await finish_login(browser, callback)
        assert (status, back) == (302, "/reports?id=7")
    # Not for XHR or other methods: they cannot follow a redirect to a sign-in page.
    xhr = {**HTML, "X_Requested_With": "XMLHttpRequest"}
    assert (await check(gateway, router, "/reports", **xhr))[0] == 401
    assert (await check(gateway, router, "/reports", "POST", **HTML))[0] == 401


async def test_sign_in_paths_pass_and_decision_endpoints_do_not(
    router: RunningRouter, gateway: ClientSession, alice: str
) -> None:
    for path in ("/.commons-router/login?rd=%2F", "/.commons-router/callback?code=x"):
        assert (await check(gateway, router, path))[0] == 200
    # Through the gateway, the decision endpoints would tell a client other paths' decisions.
    for path in (PREFIX + "/admin", PREFIX + "/public/x", "/.commons-router/auth"):
        assert (await check(gateway, router, path, Cookie=alice))[0] == 403


@pytest.mark.parametrize(
    "original", ["/%2Fadmin", "/admin%00", "/admin%0A", "/admin%0d", "/admin%3B", "/admin%5C"]
)
async def test_encoded_controls_and_delimiters_are_refused(
    router: RunningRouter, alice: str, original: str
) -> None:
    # Refused as for a direct request (a denial for Envoy), byte for byte as Envoy sends it.
    assert (await raw_check(router.port, PREFIX + original, Cookie=alice)).status == 400


async def test_untrusted_peers_cannot_choose_the_path(router: RunningRouter, alice: str) -> None:
    async with ClientSession() as client:  # from 127.0.0.1, not a trusted proxy
        for path in ("/public/x", "/reports"):
            status, headers = await check(client, router, path, Cookie=alice)
            assert status == 403
            assert "X-Forwarded-User" not in headers


async def test_bearer_tokens(router: RunningRouter, gateway: ClientSession, issuer: Issuer) -> None:
    token = {"Authorization": f"Bearer {issuer.token()}"}
    status, headers = await check(gateway, router, "/reports", **token)
    assert status == 200
    assert headers["X-Forwarded-User"] == "alice"
    assert "authorization" in headers[REMOVE].split(", ")
    assert (await check(gateway, router, "/admin", **token))[0] == 403
    status, headers = await check(gateway, router, "/reports", Authorization="Bearer x.y.z")
    assert status == 401
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]


async def test_off_unless_configured(
    router_port: int, provider: OidcProvider, backend: Backend, gateway: ClientSession
) -> None:
    cfg = router_config(router_port, provider, backend)
    cfg["trusted_proxies"] = [f"{GATEWAY}/32"]
    async with run_router(cfg) as running:
        # No decision endpoint: the path is an ordinary request for the catch-all route.
        status, headers = await check(gateway, running, "/public/x")
        assert status == 401 and REMOVE not in headers


async def test_without_trusted_proxies_every_check_is_denied_and_said(
    router_port: int,
    provider: OidcProvider,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = router_config(router_port, provider, backend)
    cfg["plugins"][1]["config"]["ext_authz"] = True
    async with run_router(cfg) as running, ClientSession() as client:
        assert (await check(client, running, "/public/x"))[0] == 403
    assert "trusted_proxies is empty" in caplog.text


async def test_a_check_on_plain_http_is_answered_not_redirected_to_https(
    router: RunningRouter, gateway: ClientSession
) -> None:
    async with gateway.get(
        router.url + "/x", headers={"Host": "secure.test"}, allow_redirects=False
    ) as response:
        assert response.status == 308  # the route itself wants HTTPS
    status, _ = await check(gateway, router, "/x", Host="secure.test")
    assert status == 200
