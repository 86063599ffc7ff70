"""Global middleware, reserved paths and upstream observers."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import ClientSession, web
from multidict import CIMultiDict

from router.api import Handler, Middleware, NoConfig, Plugin, RouterHTTPError, context_of
from router.config.loader import ConfigError
from router.testing import Backend, run_router


class CountingPlugin(Plugin[NoConfig]):
    name = "counting"
    seen: list[tuple[str, int]] = []  # noqa: RUF012
    attempts: list[tuple[str, int | None, str | None]] = []  # noqa: RUF012

    async def start(self) -> None:
        self.services.add_upstream_observer(self)

    def global_middleware(self) -> Middleware:
        async def count(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            response = await handler(request)
            CountingPlugin.seen.append((request.path, response.status))
            return response

        return count

    def reserved_paths(self) -> Mapping[str, Handler]:
        async def hello(request: web.BaseRequest) -> web.StreamResponse:
            route = context_of(request).route
            return web.json_response({"route": route.name if route else None})

        return {"/.well-known/commons-router/hello": hello}

    def attempt_started(
        self, request: web.BaseRequest, endpoint_url: str, headers: CIMultiDict[str]
    ) -> object:
        headers["X-Attempt"] = endpoint_url
        return endpoint_url

    def attempt_finished(self, token: object, status: int | None, error: str | None) -> None:
        CountingPlugin.attempts.append((str(token), status, error))


@pytest.fixture(autouse=True)
def _reset() -> None:
    CountingPlugin.seen.clear()
    CountingPlugin.attempts.clear()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_global_middleware_sees_every_routable_request(
    backend: Backend, client: ClientSession
) -> None:
    config: dict[str, Any] = {
        "plugins": [{"name": "counting"}],
        "routes": [
            {"name": "app", "hosts": ["app.test"], "upstreams": [{"url": backend.url}]}
        ],
    }
    async with run_router(config, plugins={"counting": CountingPlugin}) as router:
        await client.get(router.url + "/a", headers={"Host": "app.test"})
        await client.get(router.url + "/b", headers={"Host": "nowhere.test"})
        async with client.get(
            router.url + "/.well-known/commons-router/hello", headers={"Host": "app.test"}
        ) as response:
            assert await response.json() == {"route": "app"}
        async with client.get(
            router.url + "/.well-known/commons-router/hello", headers={"Host": "nowhere.test"}
        ) as response:
            assert await response.json() == {"route": None}
    assert CountingPlugin.seen == [
        ("/a", 200),
        ("/b", 404),
        ("/.well-known/commons-router/hello", 200),
        ("/.well-known/commons-router/hello", 200),
    ]


async def test_observer_sees_each_attempt_and_sets_headers(
    backend: Backend, client: ClientSession
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    config: dict[str, Any] = {
        "plugins": [{"name": "counting"}],
        "routes": [
            {
                "name": "app",
                "retries": 1,
                "health": {"max_failures": 100},
                "upstreams": [{"url": dead}, {"url": backend.url}],
            }
        ],
    }
    async with run_router(config, plugins={"counting": CountingPlugin}) as router:
        for _ in range(2):
            async with client.get(router.url + "/x") as response:
                seen = {k.lower(): v for k, v in (await response.json())["headers"]}
                assert seen["x-attempt"] == backend.url
    attempts = CountingPlugin.attempts
    assert attempts.count((backend.url, 200, None)) == 2
    # Round robin picks the dead endpoint first for at least one of the two requests, and
    # each failed attempt is followed by a retry on the live endpoint.
    failed = [i for i, attempt in enumerate(attempts) if attempt == (dead, None, "connect")]
    assert failed
    assert all(attempts[i + 1] == (backend.url, 200, None) for i in failed)
    assert len(attempts) == 2 + len(failed)


class BadReservation(Plugin[NoConfig]):
    name = "bad"

    def reserved_paths(self) -> Mapping[str, Handler]:
        async def nope(request: web.BaseRequest) -> web.StreamResponse:
            return web.Response()

        return {"/admin": nope}


async def test_reserved_paths_must_use_the_router_prefixes() -> None:
    config = {"plugins": [{"name": "bad"}], "routes": [{"name": "a", "builtin": "echo"}]}
    with pytest.raises(ConfigError, match="outside"):
        async with run_router(config, plugins={"bad": BadReservation}):
            pass


class IdentityPlugin(Plugin[NoConfig]):
    name = "identity"

    async def start(self) -> None:
        self.services.protect_header("X-Company-User")

    def middleware(self, route: Any, route_config: Any) -> Middleware:
        async def identify(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            ctx = context_of(request)
            ctx.add_upstream_header("X-Company-User", "alice")
            ctx.remove_upstream_header("Authorization")
            return await handler(request)

        return identify


async def test_plugin_identity_header_is_protected_and_authorization_dropped(
    backend: Backend, client: ClientSession
) -> None:
    config: dict[str, Any] = {
        "plugins": [{"name": "identity"}],
        "routes": [
            {"name": "app", "path": "/app", "upstreams": [{"url": backend.url}]},
            {
                "name": "bare",
                "path": "/bare",
                "upstreams": [{"url": backend.url}],
            },
        ],
    }
    spoof = {"x_company_user": "mallory", "Authorization": "Bearer secret"}
    async with run_router(config, plugins={"identity": IdentityPlugin}) as router:
        async with client.get(router.url + "/app", headers=spoof) as response:
            seen = (await response.json())["headers"]
    names = [(k.lower(), v) for k, v in seen]
    assert ("x-company-user", "alice") in names
    assert all(v != "mallory" for _, v in names)
    assert "authorization" not in dict(names)


# Exceptions raised by plugins, in global or route middleware, become the router's page.


def raise_for(path: str) -> None:
    if path.endswith("/router-error"):
        raise RouterHTTPError(429, "Slow down, please.", headers={"Retry-After": "7"})
    if path.endswith("/aiohttp-error"):
        raise web.HTTPForbidden()
    if path.endswith("/aiohttp-redirect"):
        raise web.HTTPFound("/elsewhere")


class RaisingPlugin(Plugin[NoConfig]):
    name = "raising"

    def global_middleware(self) -> Middleware:
        async def refuse(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/global/"):
                raise_for(request.path)
            return await handler(request)

        return refuse

    def middleware(self, route: Any, route_config: Any) -> Middleware:
        async def refuse(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/route/"):
                raise_for(request.path)
            return await handler(request)

        return refuse


@pytest.mark.parametrize("where", ["global", "route"])
async def test_plugin_exceptions_get_the_router_page_and_a_log_line(
    backend: Backend, client: ClientSession, where: str
) -> None:
    config: dict[str, Any] = {
        "plugins": [{"name": "raising"}],
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }
    json = {"Accept": "application/json"}
    async with run_router(config, plugins={"raising": RaisingPlugin}) as router:
        answers = {}
        for kind in ("router-error", "aiohttp-error", "aiohttp-redirect"):
            async with client.get(
                f"{router.url}/{where}/{kind}", headers=json, allow_redirects=False
            ) as response:
                assert response.headers["Content-Type"] == "application/json"
                assert response.headers["Cache-Control"] == "no-store"
                body = await response.json()
                assert body["request_id"] == response.headers["X-Request-Id"]
                answers[kind] = (response.status, body["message"], dict(response.headers))
        log = {line["request_id"]: line for line in await router.access_log()}
    status, message, headers = answers["router-error"]
    assert (status, message, headers["Retry-After"]) == (429, "Slow down, please.", "7")
    status, message, _ = answers["aiohttp-error"]
    assert (status, message) == (403, "Forbidden")
    status, _, headers = answers["aiohttp-redirect"]
    assert (status, headers["Location"]) == (302, "/elsewhere")
    logged = sorted((line["status"], line["route"]) for line in log.values())
    assert logged == [(302, "app"), (403, "app"), (429, "app")]
