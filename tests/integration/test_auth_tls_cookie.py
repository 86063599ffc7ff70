"""Over TLS the session cookie is ``__Host-`` prefixed and Secure."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector

from router.testing import Backend, run_router
from tests.support.tls import self_signed


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


async def test_session_cookie_over_tls(backend: Backend, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    config = {
        "listener": {"listen": "127.0.0.1:0", "tls_cert": str(cert), "tls_key": str(key)},
        "plugins": [{"name": "sessions"}, {"name": "auth", "config": {"dev_login": True}}],
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }
    trust = ssl.create_default_context(cafile=str(cert))
    async with (
        run_router(config, dev_mode=True) as router,
        ClientSession(connector=TCPConnector(ssl=trust)) as client,
    ):
        base = f"https://127.0.0.1:{router.port}"
        async with client.post(
            base + "/.commons-router/login",
            data={"name": "alice"},
            headers={"Origin": base},
            allow_redirects=False,
        ) as response:
            assert response.status == 303
            cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("__Host-commons-router-session=")
        attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
        assert "secure" in attributes and "httponly" in attributes
        assert "path=/" in attributes and "samesite=lax" in attributes
        assert not any(a.startswith("domain") for a in attributes)
        value = cookie.split(";")[0].split("=", 1)[1]
        # The unprefixed name is not accepted over TLS (a sibling could have set it).
        async with client.get(
            base + "/x",
            headers={"Accept": "application/json", "Cookie": f"commons-router-session={value}"},
        ) as response:
            assert response.status == 401
        async with client.get(
            base + "/x",
            headers={
                "Accept": "application/json",
                "Cookie": f"__Host-commons-router-session={value}",
            },
        ) as response:
            assert response.status == 200
