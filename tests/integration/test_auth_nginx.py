"""A real nginx in front, as the README's ``auth_request`` snippet sets it up: the router
signs the user in (real OpenID provider, sessions in real Redis) and decides each request
nginx asks about on its original URI, with that path's policy."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from aiohttp import ClientSession

from router.testing import Backend, RunningRouter, run_router
from tests.support.auth_flow import (  # noqa: F401 (fixtures)
    HTML,
    finish_login,
    get_json,
    new_browser,
    provider_fixture,
    redis_server_fixture,
    router_config,
    router_port_fixture,
    seen,
)
from tests.support.oidc_provider import OidcProvider, sign_in_at_provider
from tests.support.redis_server import RedisServer, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# The README's snippet, with the test's addresses (``Host $http_host`` keeps the port).
SITE = """
    location = /.commons-router/auth {{
        internal;
        proxy_pass http://127.0.0.1:{router};
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Original-Method $request_method;
    }}
    location /.commons-router/ {{
        proxy_pass http://127.0.0.1:{router};
        proxy_set_header Host $http_host;
    }}
    location / {{
        auth_request /.commons-router/auth;
        auth_request_set $user $upstream_http_x_forwarded_user;
        proxy_set_header X-Forwarded-User $user;
        error_page 401 = @login;
        proxy_pass http://127.0.0.1:{app};
    }}
    location @login {{ return 302 /.commons-router/login?rd=$request_uri; }}
"""


def nginx_conf(prefix: Path, port: int, router: int, app: int) -> str:
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    site = SITE.format(router=router, app=app)
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temps}
    server {{
        listen 127.0.0.1:{port};
{site}
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path: Path, router_port: int, backend: Backend) -> Iterator[tuple[str, int]]:
    """nginx on the port the provider knows; the router behind it on another port."""
    if not Path(NGINX).exists():
        raise RuntimeError("nginx is missing: run tests/run.sh (it installs nginx-light)")
    behind = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, router_port, behind, backend.port))
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{router_port}", behind
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
async def router(
    nginx: tuple[str, int], provider: OidcProvider, redis_server: RedisServer, backend: Backend
) -> AsyncIterator[RunningRouter]:
    behind = nginx[1]
    cfg = router_config(behind, provider, backend, store="redis", redis_url=redis_server.url)
    cfg["trusted_proxies"] = ["127.0.0.1/32"]  # nginx
    async with run_router(cfg) as running:
        yield running


async def until_up(browser: ClientSession, url: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            async with browser.get(url + "/.commons-router/logout"):
                return
        except OSError:
            assert time.monotonic() < deadline, "nginx did not start"
            await asyncio.sleep(0.05)


async def test_nginx_auth_request_decides_on_the_original_uri(
    nginx: tuple[str, int], router: RunningRouter
) -> None:
    public = nginx[0]
    async with new_browser() as browser:
        await until_up(browser, public)
        async with browser.get(public + "/reports?id=7", headers=HTML, allow_redirects=False) as r:
            assert r.status == 302
            login = r.headers["Location"]
        async with browser.get(urljoin(public, login), allow_redirects=False) as response:
            authorize = response.headers["Location"]
        callback = await sign_in_at_provider(browser, authorize, "alice")
        assert (await finish_login(browser, callback))[:2] == (302, "/reports?id=7")
        status, body = await get_json(browser, public + "/reports?id=7")
        assert status == 200 and seen(body)["x-forwarded-user"] == "alice"
        # alice is not in the admins group: /admin's policy refuses her, however spelled.
        for path in ("/admin", "/admin/x", "/%61dmin/x", "//admin", "/x/../admin"):
            status, _ = await get_json(browser, public + path)
            assert status == 403, path
        # Headers a client adds that this nginx does not set never pick another policy.
        for injected in (
            {"X-Forwarded-Uri": "/public/x"},
            {"X-Original-URI": "/public/x"},
            {"X-Forwarded-Host": "elsewhere.test", "X-Forwarded-Uri": "/admin"},
        ):
            status, _ = await get_json(browser, public + "/admin", headers=injected)
            assert status in (403, 500), injected  # nginx answers 500 to the auth's 400
        # A public path needs no session at all.
        async with new_browser() as anonymous:
            assert (await get_json(anonymous, public + "/public/x"))[0] == 200
            assert (await get_json(anonymous, public + "/reports"))[0] == 302
