"""Ingress status written by one router of several, chosen by a Lease, against the test API
server enforcing the shipped RBAC (config/kubernetes/clusterrole.yaml and role.yaml)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from router.testing import RunningRouter, run_router
from router_plugins.kubernetes import KubernetesPlugin
from router_plugins.kubernetes.resources import (
    GATEWAY_API,
    GATEWAY_STATUS_WRITES,
    OWN_POD_READ,
    VERBS,
)
from tests.support.kubeapi import Grant, KubeApiServer, kubeconfig, run_kube_api
from tests.support.kubecluster import app_objects, eventually, plugin_config

MANIFESTS = Path(__file__).resolve().parents[2] / "config" / "kubernetes"
LEASE = ("commons-router", "commons-router-status")


def shipped_grants() -> set[Grant]:
    """What the shipped ClusterRole and Role grant (the Role in its namespace only; the
    test server does not tell namespaces apart)."""
    found = set()
    for name in ("clusterrole.yaml", "role.yaml"):
        role = yaml.safe_load((MANIFESTS / name).read_text())
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    found |= {(group, resource, verb) for verb in rule["verbs"]}
    return found


def gateway_api_grants() -> set[Grant]:
    """What only the Gateway API provider calls."""
    reads = {(r.group, r.plural, verb) for r in GATEWAY_API for verb in VERBS}
    return reads | set(GATEWAY_STATUS_WRITES)


def status_settings(**overrides: Any) -> dict[str, Any]:
    return {
        "addresses": ["lb.example.org", "198.51.100.200"],
        "lease_namespace": LEASE[0],
        "lease_duration": "3s",
        "renew_deadline": "2s",
        "retry_period": "100ms",
        **overrides,
    }


@contextlib.asynccontextmanager
async def router(tmp_path: Path, url: str, who: str, **status: Any) -> AsyncIterator[RunningRouter]:
    config = plugin_config(
        kubeconfig(tmp_path / f"kubeconfig-{who}", url, token=f"token-{who}"),
        status=status_settings(identity=who, **status),
    )
    plugins = [{"name": "kubernetes", "config": config}]
    async with run_router({"plugins": plugins}, plugins={"kubernetes": KubernetesPlugin}) as r:
        yield r


def holder(api: KubeApiServer) -> str | None:
    lease = api.objects["leases"].get("/".join(LEASE))
    return lease["spec"].get("holderIdentity") if lease else None


def published(api: KubeApiServer, ingress: str) -> list[dict[str, str]]:
    obj = api.objects["ingresses"].get(f"team-a/{ingress}") or {}
    return list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


def another_ingress(api: KubeApiServer, name: str) -> None:
    ingress = api.get("Ingress", "team-a", "app")
    ingress["metadata"] = {"name": name, "namespace": "team-a"}
    ingress.pop("status", None)
    ingress["spec"]["rules"][0]["host"] = f"{name}.test"
    api.apply(ingress)


def status_writers(api: KubeApiServer) -> set[str]:
    return {c.user for c in api.calls if c.resource == "ingresses/status"}


WANTED = [{"hostname": "lb.example.org"}, {"ip": "198.51.100.200"}]
WANTED_B = [{"hostname": "lb-b.example.org"}]


async def test_one_router_writes_the_status_and_another_takes_over_when_it_stops(
    tmp_path: Path,
) -> None:
    async with run_kube_api(granted=shipped_grants()) as (api, server):
        api.users = {"token-a": "a", "token-b": "b"}
        api.apply(*copy.deepcopy(app_objects(8080, "app-0")))
        first, second = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
        async with second:
            await first.enter_async_context(router(tmp_path, server.url, "a"))

            async def a_leads() -> bool:
                return holder(api) == "a" and published(api, "app") == WANTED

            await eventually(a_leads, "router a holds the Lease and wrote the status")
            # b publishes another address (the replicas would agree in a real cluster):
            # anything b wrote would show.
            await second.enter_async_context(
                router(tmp_path, server.url, "b", addresses=["lb-b.example.org"])
            )
            another_ingress(api, "second")

            async def second_published() -> bool:
                return published(api, "second") == WANTED

            await eventually(second_published, "the new Ingress gets its status")
            await asyncio.sleep(0.5)  # b had time to write, if it wrongly would
            assert holder(api) == "a"
            assert status_writers(api) == {"a"}  # b never wrote
            assert published(api, "app") == WANTED
            assert {c.user for c in api.calls if c.resource == "leases"} == {"a", "b"}

            # a stops: it hands the Lease over, b takes over and writes from now on.
            await first.aclose()

            async def b_leads() -> bool:
                return holder(api) == "b"

            await eventually(b_leads, "router b takes the Lease over", timeout=5)
            # a gave it up when it stopped (no holder), rather than letting it expire.
            holders = [
                obj["spec"].get("holderIdentity")
                for _, plural, _, obj in api.history
                if plural == "leases"
            ]
            assert holders[-2:] == ["", "b"]
            lease = api.objects["leases"]["/".join(LEASE)]
            assert lease["spec"]["leaseTransitions"] == 1
            another_ingress(api, "third")

            async def b_published() -> bool:
                return all(published(api, i) == WANTED_B for i in ("app", "second", "third"))

            await eventually(b_published, "the new leader writes the status")
            assert status_writers(api) == {"a", "b"}
        assert api.forbidden == []  # every call was one the shipped RBAC grants
        made = {(c.group, c.resource, c.verb) for c in api.calls}
        # Everything granted was used (reading the router's own Pod needs the downward
        # API's variables: test_kubernetes_selfimage.py; Secrets are read only for a TLS
        # listener: test_kubernetes_tls.py; the Gateway API only when enabled:
        # test_gateway_api.py).
        tls_secrets = {("", "secrets", "list"), ("", "secrets", "watch")}
        assert made == shipped_grants() - {OWN_POD_READ} - tls_secrets - gateway_api_grants()


async def test_a_leader_that_cannot_renew_is_replaced(tmp_path: Path) -> None:
    async with run_kube_api(granted=shipped_grants()) as (api, server):
        api.users = {"token-a": "a", "token-b": "b"}
        api.apply(*copy.deepcopy(app_objects(8080, "app-0")))
        async with router(tmp_path, server.url, "a"):

            async def a_leads() -> bool:
                return holder(api) == "a"

            await eventually(a_leads, "router a holds the Lease")
            async with router(tmp_path, server.url, "b"):
                # a is cut off from the API server (its token is refused): it stops
                # leading after renew_deadline; b takes over after lease_duration.
                del api.users["token-a"]

                async def b_leads() -> bool:
                    return holder(api) == "b"

                await eventually(b_leads, "router b takes the expired Lease", timeout=10)
                another_ingress(api, "second")

                async def second_published() -> bool:
                    return published(api, "second") == WANTED

                await eventually(second_published, "b writes the status")


async def test_the_status_follows_the_routers_own_service(tmp_path: Path) -> None:
    own = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "commons-router", "namespace": "commons-router"},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
        "status": {"loadBalancer": {}},
    }
    async with run_kube_api(granted=shipped_grants()) as (api, server):
        api.users = {"token-a": "a"}
        api.apply(*copy.deepcopy(app_objects(8080, "app-0")), own)
        settings = {"addresses": [], "service": "commons-router/commons-router"}
        async with router(tmp_path, server.url, "a", **settings):

            async def a_leads() -> bool:
                return holder(api) == "a"

            await eventually(a_leads, "router a holds the Lease")
            # The cloud's load balancer gets its address.
            own["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.9", "ipMode": "VIP"}]}}
            api.apply(own)

            async def follows() -> bool:
                return published(api, "app") == [{"ip": "198.51.100.9"}]

            await eventually(follows, "the Service's address is published")
            own["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb.cloud.example"}]}}
            api.apply(own)

            async def follows_again() -> bool:
                return published(api, "app") == [{"hostname": "lb.cloud.example"}]

            await eventually(follows_again, "the change is published")
