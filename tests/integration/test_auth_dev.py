"""The development login of ``commons-router dev``: any name, no identity provider, loud."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, CookieJar

from router.cli import dev_config
from router.config.loader import ConfigError
from router.testing import Backend, run_router
from tests.support.processes import free_port, started


def config(
    backend: Backend, listen: str = "127.0.0.1:0", policy: str = "authenticated"
) -> dict[str, Any]:
    return {
        "listener": {"listen": listen},
        "plugins": [
            {"name": "sessions"},
            {"name": "auth", "config": {"dev_login": True, "default": {"policy": policy}}},
        ],
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }


async def test_dev_login_signs_in_anyone_and_says_it_is_insecure(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with run_router(config(backend), dev_mode=True) as router:
        assert any("INSECURE" in r.getMessage() for r in caplog.records)
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as browser:
            async with browser.get(
                router.url + "/page?a=1", headers={"Accept": "text/html"}, allow_redirects=False
            ) as response:
                assert response.status == 302
                login = response.headers["Location"]
            async with browser.get(router.url + login) as response:
                page = await response.text()
                assert "INSECURE DEVELOPMENT LOGIN" in page
                assert 'value="/page?a=1"' in page
            form = {"name": "bob", "groups": "dev, ops", "rd": "/page?a=1"}
            async with browser.post(
                router.url + "/.commons-router/login",
                data=form,
                headers={"Origin": "https://evil.test"},
                allow_redirects=False,
            ) as response:
                assert response.status == 403
            async with browser.post(
                router.url + "/.commons-router/login",
                data=form,
                headers={"Origin": router.url},
                allow_redirects=False,
            ) as response:
                assert response.status == 303
                assert response.headers["Location"] == "/page?a=1"
            async with browser.get(router.url + "/page") as response:
                seen = {k.lower(): v for k, v in (await response.json())["headers"]}
            assert seen["x-forwarded-user"] == "dev:bob"
            assert seen["x-forwarded-email"] == "bob@dev.localhost"
            assert seen["x-forwarded-groups"] == "dev,ops"
    assert any("INSECURE development login as 'dev:bob'" in r.getMessage() for r in caplog.records)


async def test_dev_login_rejects_odd_names(backend: Backend) -> None:
    async with run_router(config(backend), dev_mode=True) as router:
        async with ClientSession() as browser:
            for name in ("", "a b", "<script>", "x" * 65):
                async with browser.post(
                    router.url + "/.commons-router/login",
                    data={"name": name},
                    headers={"Origin": router.url},
                    allow_redirects=False,
                ) as response:
                    assert response.status == 400


async def test_dev_login_refuses_to_run_outside_dev_mode(backend: Backend) -> None:
    with pytest.raises(ConfigError, match="commons-router dev"):
        async with run_router(config(backend)):
            pass


async def test_dev_login_refuses_non_loopback_listeners(backend: Backend) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        async with run_router(config(backend, listen="0.0.0.0:0"), dev_mode=True):
            pass


async def test_optional_policy_passes_anonymous_requests_untouched(backend: Backend) -> None:
    async with run_router(config(backend, policy="optional"), dev_mode=True) as router:
        async with ClientSession() as client:
            async with client.get(
                router.url + "/x", headers={"Authorization": "Bearer app-own-token"}
            ) as response:
                assert response.status == 200
                seen = {k.lower(): v for k, v in (await response.json())["headers"]}
            assert seen["authorization"] == "Bearer app-own-token"
            assert "x-forwarded-user" not in seen


def test_dev_command_enables_the_login_on_loopback_only() -> None:
    names = [p.name for p in dev_config(None, "127.0.0.1:8080", "127.0.0.1:9901").plugins]
    assert "sessions" in names and "auth" in names
    auth = next(
        p for p in dev_config(None, "127.0.0.1:8080", "127.0.0.1:9901").plugins if p.name == "auth"
    )
    assert auth.config["dev_login"] is True
    public = [p.name for p in dev_config(None, "0.0.0.0:8080", "127.0.0.1:9901").plugins]
    assert "auth" not in public


async def test_commons_router_dev_command_signs_in_end_to_end(
    tmp_path: Path, backend: Backend
) -> None:
    port, admin = free_port(), free_port()
    args = ["dev", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
    base = f"http://127.0.0.1:{port}"
    with started([*args, backend.url], tmp_path) as router:
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as browser:
            await router.wait_ready(browser, f"http://127.0.0.1:{admin}")
            async with browser.get(base + "/.commons-router/login") as response:
                assert "INSECURE DEVELOPMENT LOGIN" in await response.text()
            async with browser.post(
                base + "/.commons-router/login",
                data={"name": "carol", "rd": "/app"},
                headers={"Origin": base},
            ) as response:
                assert response.status == 200
                seen = {k.lower(): v for k, v in (await response.json())["headers"]}
            assert seen["x-forwarded-user"] == "dev:carol"
            assert seen["x-forwarded-email"] == "carol@dev.localhost"
        router.send(signal.SIGTERM)
        assert await router.wait_exit() == 0
    assert "INSECURE" in router.stderr()
