"""Tracing and provenance with the real authentication plugin (its development login):
the signed-in user reaches the backend as a pseudonymous baggage entry, and the inspector
verifies a protected page with the session cookie."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import unquote

from aiohttp import ClientSession, CookieJar

from router.inspect import inspect
from router.testing import Backend, run_router

HASH_KEY = "identity-test-key"


def config(backend: Backend) -> dict[str, Any]:
    return {
        "plugins": [
            {"name": "sessions"},
            {"name": "auth", "config": {"dev_login": True, "default": {"policy": "authenticated"}}},
            {
                "name": "tracing",
                "config": {"exporter": "none", "user_baggage": {"hash_key": HASH_KEY}},
            },
            {"name": "provenance"},
        ],
        "routes": [
            {
                "name": "app",
                "upstreams": [{"url": backend.url, "version": {"commit": "4f2a9c1d0e"}}],
            }
        ],
    }


def pseudonym(identity: str) -> str:
    digest = hmac.new(HASH_KEY.encode(), identity.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def test_signed_in_user_is_a_pseudonym_downstream_and_pages_verify(
    backend: Backend,
) -> None:
    async with run_router(config(backend), dev_mode=True) as router:
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as browser:
            async with browser.post(
                router.url + "/.commons-router/login",
                data={"name": "bob", "rd": "/page"},
                headers={"Origin": router.url},
                allow_redirects=False,
            ) as response:
                assert response.status == 303
            async with browser.get(
                router.url + "/page", headers={"baggage": "user.id=mallory"}
            ) as response:
                seen = {k.lower(): v for k, v in (await response.json())["headers"]}
            cookie = "; ".join(f"{c.key}={c.value}" for c in browser.cookie_jar)
        # The access-log "user" field of the auth plugin (its e-mail or its user id).
        expected = {pseudonym(seen["x-forwarded-email"]), pseudonym(seen["x-forwarded-user"])}
        entries = dict(item.split("=", 1) for item in seen["baggage"].split(","))
        assert unquote(entries["user.id"]) in expected
        assert "bob" not in seen["baggage"] and "mallory" not in seen["baggage"]

        anonymous = await inspect(router.url + "/page")
        assert anonymous.status in (302, 401)  # not signed in: sent to the login
        assert anonymous.signature.result == "valid"  # ...and that answer is signed too
        signed_in = await inspect(router.url + "/page", cookie=cookie)
        assert signed_in.status == 200
        assert signed_in.signature.result == "valid", signed_in.signature.reason
        assert signed_in.provenance is not None
        assert signed_in.provenance["commit"] == "4f2a9c1d0e"
        assert signed_in.trace_id is not None
