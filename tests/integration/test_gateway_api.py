"""The Gateway API end to end: the test API server (enforcing the shipped RBAC) serves a
GatewayClass, a Gateway and HTTPRoutes (tests/fixtures/kubernetes/gateway-api.yaml); the
router routes real HTTP to pods in a network namespace and the Lease holder writes the
status of every object back through the status subresources."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from router.config.loader import ConfigError
from router.testing import RunningRouter, run_backend, run_router
from router_plugins.kubernetes import KubernetesPlugin
from tests.integration.test_kubernetes_status import (
    gateway_api_grants,
    shipped_grants,
    status_settings,
)
from tests.support.issuer import Issuer
from tests.support.kubeapi import KubeApiServer, kubeconfig, load_objects, run_kube_api
from tests.support.kubecluster import (
    Pods,
    app_objects,
    endpoint,
    eventually,
    plugin_config,
    run_pods,
    set_endpoints,
)
from tests.support.kubevalidation import Invalid
from tests.support.processes import base_config, free_port, started, write_config
from tests.support.processes import eventually as processes_eventually
from tests.support.tls import TestCA, served_common_name

CONTROLLER = "commons-router.io/gateway-controller"
THEIRS = {
    "parentRef": {"name": "their-gateway", "namespace": "infra"},
    "controllerName": "example.net/gateway-controller",
    "conditions": [
        {
            "type": "Accepted",
            "status": "True",
            "reason": "Accepted",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
    ],
}


def conditions(entry: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: f"{c['status']}/{c['reason']}" for c in entry.get("conditions") or []}


def status_of(api: KubeApiServer, kind: str, namespace: str | None, name: str) -> Any:
    return api.get(kind, namespace, name).get("status") or {}


def our_parent(api: KubeApiServer, route: str) -> dict[str, Any]:
    parents = status_of(api, "HTTPRoute", "team-a", route).get("parents") or []
    ours = [p for p in parents if p["controllerName"] == CONTROLLER]
    return ours[0] if ours else {}


class Gateway:
    def __init__(self, api: KubeApiServer, url: str, client: ClientSession) -> None:
        self.api, self.url, self.client = api, url, client

    async def get(self, path: str, host: str) -> tuple[int, Any, dict[str, str]]:
        async with self.client.get(self.url + path, headers={"Host": host}) as response:
            body = (
                await response.json()
                if response.content_type == "application/json"
                else await response.text()
            )
            return response.status, body, dict(response.headers)


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    listeners: list[dict[str, Any]],
    ports: dict[int, str],
    *more: dict[str, Any],
    plugins: list[dict[str, Any]] | None = None,
) -> AsyncIterator[tuple[Gateway, RunningRouter]]:
    pods: Pods
    async with run_pods() as pods, run_kube_api(granted=shipped_grants()) as (api, server):
        api.apply(*copy.deepcopy(app_objects(pods.port, "app-0")))
        objects = load_objects("gateway-api.yaml")
        for obj in objects:
            if obj["kind"] == "HTTPRoute" and obj["metadata"]["name"] == "app":
                obj["status"] = {"parents": [THEIRS]}  # another controller's entry
        api.apply(*objects, *more)
        config = plugin_config(
            kubeconfig(tmp_path / "kubeconfig", server.url),
            status=status_settings(identity="a"),
            gateway_api={"enabled": True, "ports": ports},
        )
        router_config = {
            "listeners": listeners,
            "plugins": [{"name": "kubernetes", "config": config}, *(plugins or [])],
        }
        async with (
            run_router(router_config, plugins={"kubernetes": KubernetesPlugin}) as running,
            ClientSession() as client,
        ):
            yield Gateway(api, running.url, client), running
        assert api.forbidden == []  # every call was one the shipped RBAC grants


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    listeners = [{"name": "web", "listen": "127.0.0.1:0"}]
    async with running_gateway(tmp_path, listeners, {80: "web"}) as (running, _):
        yield running


async def test_http_route_serves_through_the_gateway_with_its_filters(gateway: Gateway) -> None:
    status, body, headers = await gateway.get("/api/items", "app.gw.test")
    assert status == 200
    assert body == {"pod": "app-0", "path": "/api/items"}
    assert headers["X-Served-By"] == "gateway-api"  # ResponseHeaderModifier
    # A header match takes precedence over the same path without one.
    async with gateway.client.get(
        gateway.url + "/api/items", headers={"Host": "app.gw.test", "Version": "two"}
    ) as response:
        assert response.status == 200
        assert response.headers["X-Served-By"] == "version-two"
    # Only the route's paths: no rule for /other on this host.
    assert (await gateway.get("/other", "app.gw.test"))[0] == 404
    # The Ingress of the same cluster still serves its own host.
    assert (await gateway.get("/", "app.test"))[0] == 200


async def test_redirect_and_rewrite_filters(gateway: Gateway) -> None:
    async with gateway.client.get(
        gateway.url + "/old/page?a=1", headers={"Host": "app.gw.test"}, allow_redirects=False
    ) as response:
        assert response.status == 301
        # The listener's port (80) is the scheme's default: not shown.
        assert response.headers["Location"] == "http://new.gw.test/new/page?a=1"
    status, body, headers = await gateway.get("/v1/items", "app.gw.test")
    assert status == 200
    assert body == {"pod": "app-0", "path": "/internal/v1/items"}
    assert headers["Cache-Control"] == "no-store"


async def test_invalid_backend_answers_500(gateway: Gateway) -> None:
    status, body, _ = await gateway.get("/broken", "app.gw.test")
    assert status == 500
    assert "10." not in str(body)  # no internal address in the answer


async def test_route_whose_hostnames_the_listener_does_not_accept_is_not_served(
    gateway: Gateway,
) -> None:
    assert (await gateway.get("/", "other.example.com"))[0] == 404


async def test_status_is_written_for_every_object(gateway: Gateway) -> None:
    api = gateway.api

    async def written() -> bool:
        return bool(our_parent(api, "elsewhere")) and bool(
            status_of(api, "Gateway", "infra", "shared").get("listeners")
        )

    await eventually(written, "the status of the Gateway and the HTTPRoutes is written")
    assert conditions(status_of(api, "GatewayClass", None, "commons-router")) == {
        "Accepted": "True/Accepted",
        "SupportedVersion": "True/SupportedVersion",
    }
    assert status_of(api, "GatewayClass", None, "other") == {}  # not ours
    shared = status_of(api, "Gateway", "infra", "shared")
    assert conditions(shared) == {"Accepted": "True/Accepted", "Programmed": "True/Programmed"}
    # The addresses published for Ingresses too (status.addresses of the settings).
    assert shared["addresses"] == [
        {"type": "Hostname", "value": "lb.example.org"},
        {"type": "IPAddress", "value": "198.51.100.200"},
    ]
    (listener,) = shared["listeners"]
    assert listener["attachedRoutes"] == 1
    assert conditions(listener)["Programmed"] == "True/Programmed"

    app = our_parent(api, "app")
    assert conditions(app) == {
        "Accepted": "True/Accepted",
        "ResolvedRefs": "False/BackendNotFound",
    }
    generation = api.get("HTTPRoute", "team-a", "app")["metadata"]["generation"]
    assert {c["observedGeneration"] for c in app["conditions"]} == {generation}
    # The other controller's entry is left as it was.
    parents = status_of(api, "HTTPRoute", "team-a", "app")["parents"]
    assert THEIRS in parents
    assert conditions(our_parent(api, "elsewhere")) == {
        "Accepted": "False/NoMatchingListenerHostname",
        "ResolvedRefs": "True/ResolvedRefs",
    }
    made = {(c.group, c.resource, c.verb) for c in api.calls}
    assert gateway_api_grants() <= made  # every Gateway API grant is used

    # A route that leaves our Gateways loses our entry.
    elsewhere = api.get("HTTPRoute", "team-a", "elsewhere")
    elsewhere["spec"]["parentRefs"] = [{"name": "their-gateway", "namespace": "infra"}]
    api.apply(elsewhere)

    async def dropped() -> bool:
        return our_parent(api, "elsewhere") == {}

    await eventually(dropped, "our entry of a route no longer ours is removed")


async def test_a_spec_change_is_routed_and_its_generation_observed(gateway: Gateway) -> None:
    api = gateway.api
    route = api.get("HTTPRoute", "team-a", "app")
    route["spec"]["rules"][1]["backendRefs"] = [{"name": "app", "port": 80}]
    api.apply(route)
    generation = api.get("HTTPRoute", "team-a", "app")["metadata"]["generation"]

    async def fixed() -> bool:
        observed = {
            c.get("observedGeneration") for c in our_parent(api, "app").get("conditions", [])
        }
        return (await gateway.get("/broken", "app.gw.test"))[0] == 200 and observed == {generation}

    await eventually(fixed, "the fixed backend serves and the status shows the new generation")
    assert conditions(our_parent(api, "app"))["ResolvedRefs"] == "True/ResolvedRefs"


def tls_secret(namespace: str, name: str, chain: bytes, key: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(chain).decode(),
            "tls.key": base64.b64encode(key).decode(),
        },
    }


def secure_objects(ca: TestCA) -> list[dict[str, Any]]:
    """A Gateway with an HTTPS listener (its certificate in a Secret) and a route to it."""
    secure_gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "secure", "namespace": "infra"},
        "spec": {
            "gatewayClassName": "commons-router",
            "listeners": [
                {
                    "name": "https",
                    "protocol": "HTTPS",
                    "port": 443,
                    "hostname": "secure.gw.test",
                    "tls": {"certificateRefs": [{"name": "secure-tls"}]},
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "secure", "namespace": "team-a"},
        "spec": {
            "parentRefs": [{"name": "secure", "namespace": "infra"}],
            "rules": [{"backendRefs": [{"name": "app", "port": 80}]}],
        },
    }
    secret = tls_secret("infra", "secure-tls", *ca.issue("secure.gw.test", common_name="gw"))
    return [secure_gateway, route, secret]


async def test_https_listener_serves_the_certificate_of_its_secret(tmp_path: Path) -> None:
    ca = TestCA()
    listeners = [
        {"name": "web", "listen": "127.0.0.1:0"},
        {"name": "websecure", "listen": "127.0.0.1:0", "tls": {}},
    ]
    ports = {80: "web", 443: "websecure"}
    async with running_gateway(tmp_path, listeners, ports, *secure_objects(ca)) as (
        gateway,
        running,
    ):
        port = running.port_of("websecure")

        async def served() -> bool:
            name = await asyncio.to_thread(served_common_name, port, "secure.gw.test", ca)
            return name == "gw"

        await eventually(served, "the Gateway's certificate Secret is served by SNI")
        trust = ssl.create_default_context(cadata=ca.pem.decode())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=trust, server_hostname="secure.gw.test"
        )
        writer.write(b"GET /x HTTP/1.1\r\nHost: secure.gw.test\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert b'"pod": "app-0"' in answer
        # The route attached to the HTTPS listener only: not served over plain HTTP.
        plain = f"http://127.0.0.1:{running.port_of('web')}/x"
        async with gateway.client.get(plain, headers={"Host": "secure.gw.test"}) as response:
            assert response.status == 404


async def test_a_port_mapped_to_no_router_listener_stops_the_start(tmp_path: Path) -> None:
    async with run_kube_api() as (_, server):
        config = plugin_config(
            kubeconfig(tmp_path / "kubeconfig", server.url),
            gateway_api={"enabled": True, "ports": {80: "nope"}},
        )
        router_config = {
            "listeners": [{"name": "web", "listen": "127.0.0.1:0"}],
            "plugins": [{"name": "kubernetes", "config": config}],
        }
        with pytest.raises(ConfigError) as raised:
            async with run_router(router_config, plugins={"kubernetes": KubernetesPlugin}):
                pass
        assert str(raised.value).endswith(
            "plugins[0].config.gateway_api.ports[80]: no router listener is named 'nope' "
            "(listeners: web)"
        )


async def test_every_worker_serves_the_certificates_of_gateway_secrets(tmp_path: Path) -> None:
    """With workers, each one terminates TLS: each loads the Secrets of our Gateways'
    HTTPS listeners (watching classes, Gateways and ReferenceGrants, not the routes)."""
    ca = TestCA()
    async with run_kube_api() as (api, server):
        api.apply(*load_objects("gateway-api.yaml"), *secure_objects(ca))
        https_port = free_port()
        settings = plugin_config(
            kubeconfig(tmp_path / "kubeconfig", server.url),
            gateway_api={"enabled": True, "ports": {80: "http", 443: "https"}},
        )
        config = base_config(
            tmp_path, [], workers=2, plugins=[{"name": "kubernetes", "config": settings}]
        )
        config.pop("listener")
        config["listeners"] = [
            {"name": "http", "listen": f"127.0.0.1:{free_port()}"},
            {"name": "https", "listen": f"127.0.0.1:{https_port}", "tls": {}},
        ]
        path = tmp_path / "router.yaml"
        write_config(path, config)
        async with ClientSession() as client:
            with started(["serve", "--config", str(path)], tmp_path) as router:
                await router.wait_ready(client, f"http://{config['admin']['listen']}", timeout=30)

                async def every_handshake_served() -> bool:
                    names = [
                        await asyncio.to_thread(
                            served_common_name, https_port, "secure.gw.test", ca
                        )
                        for _ in range(12)  # new connections, spread over both workers
                    ]
                    return names == ["gw"] * 12

                await processes_eventually(
                    every_handshake_served, message="both workers serve the Secret"
                )
                # HTTPRoutes are watched once, by the supervisor.
                assert len([c for c in api.calls_of("watch") if c.resource == "httproutes"]) == 1
                router.send(signal.SIGTERM)
                assert await router.wait_exit() == 0
                assert "Traceback" not in router.stderr()


async def test_endpoint_changes_reach_the_gateway_routes(gateway: Gateway) -> None:
    set_endpoints(gateway.api, [endpoint("app-1"), endpoint("app-0", terminating=True)])

    async def moved() -> bool:
        _, body, _ = await gateway.get("/api/items", "app.gw.test")
        return isinstance(body, dict) and body.get("pod") == "app-1"

    await eventually(moved, "the route follows the EndpointSlice to app-1")
    # Only app-1 serves now.
    for _ in range(4):
        assert (await gateway.get("/api/items", "app.gw.test"))[1]["pod"] == "app-1"


def router_policy(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "commons-router.io/v1alpha1",
        "kind": "RouterPolicy",
        "metadata": {"name": "admins-only", "namespace": "team-a"},
        "spec": spec,
    }


ADMINS_ONLY = {"auth": {"policy": "authenticated", "allow": {"groups": ["admins"]}}}
GUARDED_ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "guarded", "namespace": "team-a"},
    "spec": {
        "parentRefs": [{"name": "shared", "namespace": "infra"}],
        "hostnames": ["guarded.gw.test"],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                "filters": [
                    {
                        "type": "ExtensionRef",
                        "extensionRef": {
                            "group": "commons-router.io",
                            "kind": "RouterPolicy",
                            "name": "admins-only",
                        },
                    }
                ],
                "backendRefs": [{"name": "app", "port": 80}],
            },
            {"backendRefs": [{"name": "app", "port": 80}]},
        ],
    },
}


async def test_router_policy_protects_one_rule_of_an_http_route(tmp_path: Path) -> None:
    issuer = Issuer()
    async with run_backend(issuer.app()) as served:
        issuer.url = served.url
        auth = {
            "name": "auth",
            "config": {
                "bearer": {
                    "issuers": [
                        {
                            "issuer": issuer.name,
                            "jwks_url": issuer.jwks_url,
                            "audience": ["api://router"],
                        }
                    ]
                },
                # Routes without a RouterPolicy are public.
                "default": {"policy": "public"},
            },
        }
        listeners = [{"name": "web", "listen": "127.0.0.1:0"}]
        async with running_gateway(
            tmp_path,
            listeners,
            {80: "web"},
            router_policy(ADMINS_ONLY),
            GUARDED_ROUTE,
            plugins=[auth],
        ) as (gateway, _):
            await check_router_policy(gateway, issuer)


async def check_router_policy(gateway: Gateway, issuer: Issuer) -> None:
    api, host = gateway.api, "guarded.gw.test"

    async def status_with(token: str | None) -> int:
        headers = {"Host": host}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with gateway.client.get(gateway.url + "/admin/x", headers=headers) as response:
            return response.status

    async def served() -> bool:
        return (await gateway.get("/", host))[0] == 200

    await eventually(served, "the guarded route is served")
    assert (await gateway.get("/", host))[1] == {"pod": "app-0", "path": "/"}  # public rule
    assert await status_with(None) == 401
    assert await status_with(issuer.token(groups=["staff"])) == 403
    assert await status_with(issuer.token(groups=["admins"])) == 200

    def guarded_parent() -> dict[str, Any]:
        parents = status_of(api, "HTTPRoute", "team-a", "guarded").get("parents") or []
        return next((p for p in parents if p["controllerName"] == CONTROLLER), {})

    # Settings the CRD's schema refuses never reach the router.
    with pytest.raises(Invalid):
        api.apply(router_policy({"auth": {"policy": "required"}}))
    # Settings the schema lets through but the router cannot use: the rule answers 500
    # and the route's status says why; the public rule is still served.
    api.apply(router_policy({"ip_filter": {"allow": ["not-a-cidr"]}}))

    async def refused() -> bool:
        found = conditions(guarded_parent())
        return await status_with(None) == 500 and found.get("PartiallyInvalid") == (
            "True/UnsupportedValue"
        )

    await eventually(refused, "an unusable RouterPolicy makes its rule answer 500")
    message = next(
        c["message"] for c in guarded_parent()["conditions"] if c["type"] == "PartiallyInvalid"
    )
    assert "RouterPolicy 'admins-only': spec.ip_filter.allow" in message
    assert (await gateway.get("/", host))[0] == 200

    # A missing RouterPolicy is never skipped: 500, and ResolvedRefs says so.
    api.delete("RouterPolicy", "team-a", "admins-only")

    async def missing() -> bool:
        found = conditions(guarded_parent())
        return await status_with(None) == 500 and found.get("ResolvedRefs") == (
            "False/BackendNotFound"
        )

    await eventually(missing, "a missing RouterPolicy makes its rule answer 500")
    assert (await gateway.get("/", host))[0] == 200
