"""Bearer JWTs, per-route policy and identity headers, against a running router."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import ClientSession

from router.testing import Backend, RunningRouter, run_backend, run_router
from tests.support.issuer import Issuer


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    made = Issuer()
    async with run_backend(made.app()) as served:
        made.url = served.url
        yield made


def config(issuer: Issuer, backend: Backend, **auth: Any) -> dict[str, Any]:
    up = [{"url": backend.url}]
    return {
        "plugins": [
            {
                "name": "auth",
                "config": {
                    "bearer": {
                        "issuers": [
                            {
                                "issuer": issuer.name,
                                "jwks_url": issuer.jwks_url,
                                "audience": ["api://router"],
                                "algorithms": ["RS256"],
                                "leeway": "30s",
                            }
                        ],
                        "jwks_min_refetch": "1h",
                    },
                    **auth,
                },
            }
        ],
        "routes": [
            {"name": "api", "path": "/", "upstreams": up},
            {
                "name": "open",
                "path": "/public",
                "upstreams": up,
                "plugins": {"auth": {"policy": "public"}},
            },
            {
                "name": "admin",
                "path": "/admin",
                "upstreams": up,
                "plugins": {"auth": {"allow": {"groups": ["admins"]}}},
            },
            {
                "name": "corp",
                "path": "/corp",
                "upstreams": up,
                "plugins": {
                    "auth": {
                        "allow": {"domains": ["corp.test"]},
                        "deny": {"emails": ["mallory@corp.test"]},
                    }
                },
            },
            {
                "name": "claims",
                "path": "/claims",
                "upstreams": up,
                "plugins": {"auth": {"allow": {"claims": {"tier": ["gold"]}}}},
            },
            {
                "name": "keepauth",
                "path": "/keep",
                "upstreams": up,
                "plugins": {"auth": {"pass_authorization": True, "pass_access_token": True}},
            },
        ],
    }


@pytest.fixture
async def router(issuer: Issuer, backend: Backend) -> AsyncIterator[RunningRouter]:
    async with run_router(config(issuer, backend)) as running:
        yield running


def seen_headers(body: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in body["headers"]}


async def call(
    client: ClientSession,
    router: RunningRouter,
    path: str,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    sent = {"Accept": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with client.get(router.url + path, headers=sent) as response:
        body = await response.json(content_type=None)
        return response.status, body, dict(response.headers)


async def test_valid_token_reaches_backend_with_identity(
    router: RunningRouter, issuer: Issuer, client: ClientSession
) -> None:
    status, body, _ = await call(client, router, "/hello", issuer.token())
    assert status == 200
    seen = seen_headers(body)
    assert seen["x-forwarded-user"] == "alice"
    assert seen["x-forwarded-email"] == "alice@example.org"
    assert seen["x-forwarded-groups"] == "staff"
    assert "authorization" not in seen  # not passed on unless the route says so
    assert "x-forwarded-access-token" not in seen
    log = await router.access_log()
    assert log[-1]["user"] == "alice@example.org"


async def test_route_may_keep_authorization_and_pass_access_token(
    router: RunningRouter, issuer: Issuer, client: ClientSession
) -> None:
    token = issuer.token()
    status, body, _ = await call(client, router, "/keep", token)
    assert status == 200
    seen = seen_headers(body)
    assert seen["authorization"] == f"Bearer {token}"
    assert seen["x-forwarded-access-token"] == token


async def test_no_token_gets_401_with_challenge(
    router: RunningRouter, client: ClientSession
) -> None:
    status, body, headers = await call(client, router, "/hello")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert body["status"] == 401


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "attack",
    ["alg_none", "hs256_with_rsa_key", "jku", "x5u", "jwk", "unknown_issuer", "path_kid"],
)
async def test_forged_tokens_get_401_and_cause_no_fetch(
    router: RunningRouter, issuer: Issuer, client: ClientSession, attack: str
) -> None:
    claims = issuer.claims()
    if attack == "alg_none":
        token = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': issuer.kid})}.{b64(claims)}."
    elif attack == "hs256_with_rsa_key":
        import hashlib
        import hmac

        signing_input = f"{b64({'alg': 'HS256', 'kid': issuer.kid})}.{b64(claims)}"
        mac = hmac.new(issuer.public_pem(), signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    elif attack in ("jku", "x5u"):
        token = issuer.token(headers={attack: issuer.url + "/attacker-keys"})
    elif attack == "jwk":
        token = issuer.token(headers={"jwk": issuer.jwks()["keys"][0]})
    elif attack == "unknown_issuer":
        token = issuer.token(iss="https://evil.test")
    else:
        token = issuer.token(kid="../../../dev/null")
    status, body, headers = await call(client, router, "/hello", token)
    assert status == 401, body
    assert "invalid_token" in headers["WWW-Authenticate"]
    assert issuer.fetches == []


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": 1}, "expired"),
        ({"nbf": 2**31}, "not yet valid"),
        ({"aud": "api://other"}, "audience"),
        ({"exp": None}, "invalid"),
    ],
)
async def test_bad_claims_get_401(
    router: RunningRouter,
    issuer: Issuer,
    client: ClientSession,
    claims: dict[str, Any],
    reason: str,
) -> None:
    status, body, _ = await call(client, router, "/hello", issuer.token(**claims))
    assert status == 401
    assert reason in body["message"]


async def test_small_clock_skew_is_tolerated(
    router: RunningRouter, issuer: Issuer, client: ClientSession
) -> None:
    import time

    status, _, _ = await call(client, router, "/x", issuer.token(exp=int(time.time()) - 10))
    assert status == 200


async def test_garbage_tokens_get_401(router: RunningRouter, client: ClientSession) -> None:
    for token in ("x", "a.b.c", "....", "é" * 10, "e30." * 1500):
        status, _, _ = await call(client, router, "/x", token)
        assert status == 401


async def test_unknown_kid_refetches_once_per_interval(
    router: RunningRouter, issuer: Issuer, client: ClientSession
) -> None:
    assert (await call(client, router, "/x", issuer.token()))[0] == 200
    assert issuer.fetches == ["/jwks"]
    # A rotated key, announced in the key set: the unknown kid makes the router look again.
    from cryptography.hazmat.primitives.asymmetric import rsa

    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer.extra_keys.append(("key-2", new_key))
    # min_refetch is 1h in this config, so the new kid is not fetched again yet...
    status, _, _ = await call(client, router, "/x", issuer.token(key=new_key, kid="key-2"))
    assert status == 401
    # ...and a flood of unknown kids causes no fetch at all.
    for i in range(20):
        await call(client, router, "/x", issuer.token(kid=f"unknown-{i}"))
    assert issuer.fetches == ["/jwks"]


async def test_unknown_kid_refetch_finds_a_rotated_key(
    issuer: Issuer, backend: Backend, client: ClientSession
) -> None:
    cfg = config(issuer, backend)
    cfg["plugins"][0]["config"]["bearer"]["jwks_min_refetch"] = 0
    async with run_router(cfg) as router:
        assert (await call(client, router, "/x", issuer.token()))[0] == 200
        from cryptography.hazmat.primitives.asymmetric import rsa

        new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        issuer.extra_keys.append(("key-2", new_key))
        status, _, _ = await call(client, router, "/x", issuer.token(key=new_key, kid="key-2"))
        assert status == 200
        assert issuer.fetches == ["/jwks", "/jwks"]


async def test_group_policy_and_clear_403(
    router: RunningRouter, issuer: Issuer, client: ClientSession
) -> None:
    assert (await call(client, router, "/admin", issuer.token()))[0] == 403
    status, _, _ = await call(client, router, "/admin", issuer.token(groups=["admins"]))
    assert status == 200
    async with client.get(
        router.url + "/admin",
        headers={"Authorization": f"Bearer {issuer.token()}", "Accept": "text/html"},
    ) as response:
        assert response.status == 403
        page = await response.text()
        assert "alice@example.org" in page and "may not open this page" in page


@pytest.mark.parametrize(
    "path",
    [
        "/admin",
        "//admin",
        "/%61dmin",
        "/x/../admin",
        "/admin;x",
        "/admin?x=/public",
        "/public/../admin",
        "/admin/",
    ],
)
async def test_policy_uses_the_normalized_path(
    router: RunningRouter, issuer: Issuer, client: ClientSession, path: str
) -> None:
    status, _, _ = await call(client, router, path, issuer.token())
    assert status == 403


async def test_domain_allow_and_deny(
    router: RunningRouter, issuer: Issuer, client: ClientSession
) -> None:
    assert (await call(client, router, "/corp", issuer.token()))[0] == 403
    assert (await call(client, router, "/corp", issuer.token(email="bob@corp.test")))[0] == 200
    assert (await call(client, router, "/corp", issuer.token(email="bob@evilcorp.test")))[0] == 403
    denied = issuer.token(email="mallory@corp.test")
    assert (await call(client, router, "/corp", denied))[0] == 403
    unverified = issuer.token(email="eve@corp.test", email_verified=False)
    assert (await call(client, router, "/corp", unverified))[0] == 403


async def test_claim_rules(router: RunningRouter, issuer: Issuer, client: ClientSession) -> None:
    assert (await call(client, router, "/claims", issuer.token(tier="silver")))[0] == 403
    assert (await call(client, router, "/claims", issuer.token(tier="gold")))[0] == 200


async def test_public_route_needs_nothing(router: RunningRouter, client: ClientSession) -> None:
    status, _, _ = await call(client, router, "/public/page")
    assert status == 200


@pytest.mark.parametrize(
    "header",
    [
        "X-Forwarded-User",
        "x-forwarded-email",
        "X_Forwarded_Email",
        "X-FORWARDED_GROUPS",
        "Remote-User",
    ],
)
async def test_clients_cannot_set_identity_headers(
    router: RunningRouter, issuer: Issuer, client: ClientSession, header: str
) -> None:
    for path, token in (("/public/x", None), ("/x", issuer.token())):
        status, body, _ = await call(client, router, path, token, headers={header: "root"})
        assert status == 200
        assert "root" not in [v for _, v in body["headers"]], path


async def test_connection_header_cannot_remove_injected_identity(
    router: RunningRouter, issuer: Issuer, client: ClientSession
) -> None:
    status, body, _ = await call(
        client, router, "/x", issuer.token(), headers={"Connection": "X-Forwarded-User"}
    )
    assert status == 200
    assert seen_headers(body)["x-forwarded-user"] == "alice"


async def test_no_user_agent_or_probe_header_skips_authentication(
    router: RunningRouter, client: ClientSession
) -> None:
    for headers in (
        {"User-Agent": "kube-probe/1.29"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"X-Real-IP": "10.0.0.1"},
    ):
        status, _, _ = await call(client, router, "/x", headers=headers)
        assert status == 401


async def test_signed_identity_assertion(
    issuer: Issuer, backend: Backend, client: ClientSession
) -> None:
    cfg = config(issuer, backend, assertion={"algorithm": "ES256"})
    async with run_router(cfg) as router:
        status, body, _ = await call(client, router, "/x", issuer.token(groups=["a", "b"]))
        assert status == 200
        assertion = seen_headers(body)["x-commons-identity"]
        async with client.get(router.url + "/.well-known/commons-router/jwks.json") as response:
            keys = await response.json()
        jwk = jwt.PyJWK(keys["keys"][0])
        claims = jwt.decode(assertion, jwk.key, algorithms=["ES256"], audience="api")
        assert claims["sub"] == "alice"
        assert claims["groups"] == ["a", "b"]
        assert claims["iss"] == "commons-router"
        assert claims["exp"] - claims["iat"] == 60
        # Addressed to the route: another route's backend cannot replay it.
        with pytest.raises(jwt.InvalidAudienceError):
            jwt.decode(assertion, jwk.key, algorithms=["ES256"], audience="admin")
        # A client cannot send its own assertion.
        status, body, _ = await call(
            client, router, "/public/x", headers={"X-Commons-Identity": "forged"}
        )
        assert "x-commons-identity" not in seen_headers(body)


async def test_eddsa_assertion(issuer: Issuer, backend: Backend, client: ClientSession) -> None:
    cfg = config(issuer, backend, assertion={"algorithm": "EdDSA", "header": "X-Identity"})
    async with run_router(cfg) as router:
        status, body, _ = await call(client, router, "/x", issuer.token())
        assert status == 200
        async with client.get(router.url + "/.well-known/commons-router/jwks.json") as response:
            keys = await response.json()
        jwk = jwt.PyJWK(keys["keys"][0])
        claims = jwt.decode(
            seen_headers(body)["x-identity"], jwk.key, algorithms=["EdDSA"], audience="api"
        )
        assert claims["email"] == "alice@example.org"


async def test_forward_auth(router: RunningRouter, issuer: Issuer, client: ClientSession) -> None:
    url = router.url + "/.commons-router/auth"
    async with client.get(url) as response:
        assert response.status == 401
        assert "WWW-Authenticate" in response.headers
    async with client.get(url, headers={"Authorization": f"Bearer {issuer.token()}"}) as response:
        assert response.status == 202
        assert response.headers["X-Forwarded-User"] == "alice"
        assert response.headers["X-Forwarded-Email"] == "alice@example.org"
    async with client.get(
        url, headers={"Authorization": f"Bearer {issuer.token(iss='https://evil.test')}"}
    ) as response:
        assert response.status == 401


async def test_forward_auth_uses_the_hosts_route_policy(
    issuer: Issuer, backend: Backend, client: ClientSession
) -> None:
    cfg = config(issuer, backend)
    cfg["routes"].append(
        {
            "name": "guarded",
            "hosts": ["guarded.test"],
            "path": "/",
            "upstreams": [{"url": backend.url}],
            "plugins": {"auth": {"allow": {"groups": ["admins"]}}},
        }
    )
    async with run_router(cfg) as router:
        url = router.url + "/.commons-router/auth"
        headers = {"Authorization": f"Bearer {issuer.token()}", "Host": "guarded.test"}
        async with client.get(url, headers=headers) as response:
            assert response.status == 403
        headers["Authorization"] = f"Bearer {issuer.token(groups=['admins'])}"
        async with client.get(url, headers=headers) as response:
            assert response.status == 202


async def test_issuer_keys_unreachable_is_503_not_a_crash(
    backend: Backend, client: ClientSession
) -> None:
    dead = Issuer()
    dead.url = "http://127.0.0.1:9"  # discard port: nothing listens
    async with run_router(config(dead, backend)) as router:
        status, body, _ = await call(client, router, "/x", dead.token())
        assert status == 503
        assert "keys" in body["message"]


async def test_oversized_or_redirected_key_sets_are_not_used(
    backend: Backend, client: ClientSession
) -> None:
    from aiohttp import web

    from router.testing import run_backend

    issuer = Issuer()

    async def huge(request: web.Request) -> web.Response:
        keys = issuer.jwks()["keys"] * 200  # well over 256 KiB
        return web.json_response({"keys": keys, "padding": "x" * 300_000})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/huge")

    app = web.Application()
    app.router.add_get("/huge", huge)
    app.router.add_get("/moved", moved)
    async with run_backend(app) as served:
        for path in ("/huge", "/moved"):
            cfg = config(issuer, backend)
            cfg["plugins"][0]["config"]["bearer"]["issuers"][0]["jwks_url"] = served.url + path
            async with run_router(cfg) as router:
                status, _, _ = await call(client, router, "/x", issuer.token())
                assert status == 503, path


async def test_unauthenticated_websocket_is_refused_before_the_backend(
    issuer: Issuer, client: ClientSession
) -> None:
    from aiohttp import WSServerHandshakeError, web

    from router.testing import run_backend

    reached: list[str] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        reached.append(request.headers.get("X-Forwarded-User", ""))
        response = web.WebSocketResponse()
        await response.prepare(request)
        await response.send_str("hello")
        await response.close()
        return response

    app = web.Application()
    app.router.add_get("/ws", ws)
    async with run_backend(app) as served, run_router(config(issuer, served)) as router:
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect(router.url + "/ws")
        assert refused.value.status == 401
        assert reached == []
        headers = {"Authorization": f"Bearer {issuer.token()}"}
        async with client.ws_connect(router.url + "/ws", headers=headers) as socket:
            assert (await socket.receive_str()) == "hello"
        assert reached == ["alice"]


async def test_slow_key_set_times_out(backend: Backend, client: ClientSession) -> None:
    import asyncio

    from aiohttp import web

    from router.testing import run_backend

    issuer = Issuer()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response(issuer.jwks())

    app = web.Application()
    app.router.add_get("/jwks", slow)
    async with run_backend(app) as served:
        cfg = config(issuer, backend)
        bearer = cfg["plugins"][0]["config"]["bearer"]
        bearer["issuers"][0]["jwks_url"] = served.url + "/jwks"
        bearer["jwks_timeout"] = "300ms"
        async with run_router(cfg) as router:
            status, body, _ = await call(client, router, "/x", issuer.token())
            assert status == 503
            assert "keys" in body["message"]
        release.set()


async def test_claims_cannot_inject_headers(
    router: RunningRouter, issuer: Issuer, client: ClientSession
) -> None:
    token = issuer.token(preferred_username="mallory\r\nX-Injected: 1", email="m@x.test\n")
    status, body, _ = await call(client, router, "/x", token)
    assert status == 200
    seen = seen_headers(body)
    assert "x-injected" not in seen
    assert seen["x-forwarded-preferred-username"] == "malloryX-Injected: 1"
    assert seen["x-forwarded-email"] == "m@x.test"


async def test_scope_claim_is_matched_word_by_word(
    issuer: Issuer, backend: Backend, client: ClientSession
) -> None:
    cfg = config(issuer, backend)
    cfg["routes"].append(
        {
            "name": "scoped",
            "path": "/scoped",
            "upstreams": [{"url": backend.url}],
            "plugins": {"auth": {"methods": ["bearer"], "allow": {"claims": {"scope": ["r"]}}}},
        }
    )
    async with run_router(cfg) as router:
        assert (await call(client, router, "/scoped", issuer.token(scope="w r")))[0] == 200
        assert (await call(client, router, "/scoped", issuer.token(scope="w rr")))[0] == 403
        assert (await call(client, router, "/scoped", issuer.token()))[0] == 403


async def test_a_cached_token_does_not_outlive_its_exp(
    issuer: Issuer, backend: Backend, client: ClientSession
) -> None:
    cfg = config(issuer, backend)
    cfg["plugins"][0]["config"]["bearer"]["issuers"][0]["leeway"] = "0s"
    async with run_router(cfg) as router:
        token = issuer.token(exp=int(time.time()) + 2)
        for _ in range(3):  # verified once, then answered from the cache
            status, body, _ = await call(client, router, "/x", token)
            assert status == 200
            assert seen_headers(body)["x-forwarded-user"] == "alice"
        await asyncio.sleep(
            max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time())
            + 0.1
        )
        status, _, headers = await call(client, router, "/x", token)
        assert status == 401
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
