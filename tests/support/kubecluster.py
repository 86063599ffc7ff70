"""A small fake cluster for end-to-end tests: the test API server, pods as real backends
(one shared port, like pods behind a Service) on addresses a real cluster could have,
inside a network namespace of the test's own (:mod:`tests.support.netns`), and a router
watching both."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from router.testing import RunningRouter, run_router
from router_plugins.kubernetes import KubernetesPlugin
from tests.support import netns
from tests.support.kubeapi import KubeApiServer, kubeconfig, load_objects, run_kube_api

POD_IPS = dict(zip(("app-0", "app-1", "app-2"), netns.pod_addresses(3), strict=True))


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


@dataclass
class Pods:
    port: int
    release: dict[str, asyncio.Event] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)


def pod_app(pod: str, pods: Pods) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"pod": pod, "path": request.path})

    async def hold(request: web.Request) -> web.Response:
        pods.held[pod] = pods.held.get(pod, 0) + 1
        await pods.release.setdefault(pod, asyncio.Event()).wait()
        return web.json_response({"pod": pod, "held": True})

    app = web.Application()
    app.router.add_get("/hold", hold)
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def pod_network() -> netns.PodNetwork:
    """The pods' network namespace; skips the test (saying why) when none can be made."""
    try:
        return netns.shared(len(POD_IPS))
    except netns.Unavailable as exc:
        pytest.skip(f"pods need a network namespace of their own: {exc}")


@contextlib.asynccontextmanager
async def run_pods() -> AsyncIterator[Pods]:
    network = pod_network()
    sockets: list[socket.socket] = []
    for ip in POD_IPS.values():
        sockets.append(network.listen(ip, sockets[0].getsockname()[1] if sockets else 0))
    pods = Pods(sockets[0].getsockname()[1])
    runners = []
    try:
        for (pod, _), sock in zip(POD_IPS.items(), sockets, strict=True):
            runner = web.AppRunner(pod_app(pod, pods))
            await runner.setup()
            runners.append(runner)
            await web.SockSite(runner, sock).start()
        yield pods
    finally:
        for event in pods.release.values():
            event.set()
        for runner in runners:
            await runner.cleanup()
        for sock in sockets:
            sock.close()


def endpoint(pod: str, *, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    return {
        "addresses": [POD_IPS[pod]],
        "conditions": {
            "ready": ready and not terminating,
            "serving": ready,
            "terminating": terminating,
        },
        "nodeName": "node-" + pod[-1],
        "targetRef": {"kind": "Pod", "namespace": "team-a", "name": pod},
    }


def app_objects(port: int, *pods: str) -> list[dict[str, Any]]:
    """The app fixture with its EndpointSlice pointing at ``pods`` on ``port``."""
    objects = load_objects("app.yaml")
    for obj in objects:
        if obj["kind"] == "EndpointSlice":
            obj["ports"][0]["port"] = port
            obj["endpoints"] = [endpoint(pod) for pod in pods]
        if obj["kind"] == "Pod":
            obj["spec"]["containers"][0]["ports"][0]["containerPort"] = port
    return objects


def set_endpoints(api: KubeApiServer, endpoints: list[dict[str, Any]]) -> None:
    endpoint_slice = api.get("EndpointSlice", "team-a", "app-k8s7d")
    endpoint_slice["endpoints"] = endpoints
    api.apply(endpoint_slice)


def plugin_config(path: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "credentials": "kubeconfig",
        "kubeconfig": str(path),
        "watch_timeout": 30,
        "backoff_initial": "20ms",
        "backoff_max": "200ms",
        "sync_timeout": 10,
        **overrides,
    }


@dataclass
class KubeCluster:
    api: KubeApiServer
    pods: Pods
    router: RunningRouter
    client: ClientSession

    async def get(self, path: str, host: str = "app.test") -> tuple[int, Any]:
        async with self.client.get(self.router.url + path, headers={"Host": host}) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def routes(self) -> dict[str, Any]:
        async with self.client.get(self.router.admin_url + "/routes") as response:
            document: dict[str, Any] = await response.json()
            return document

    async def endpoint_urls(self, route: str) -> list[str] | None:
        for entry in (await self.routes())["routes"]:
            if entry["name"] == route:
                return [e["url"] for e in entry["endpoints"]]
        return None


@contextlib.asynccontextmanager
async def run_cluster(
    tmp_path: Path, *pods: str, router: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[KubeCluster]:
    """``router``: more router configuration (e.g. ``listeners``); ``settings``: the
    kubernetes plugin's."""
    async with run_pods() as running_pods, run_kube_api() as (api, server):
        api.apply(*copy.deepcopy(app_objects(running_pods.port, *pods)))
        config: dict[str, Any] = {
            **(router or {}),
            "plugins": [
                {
                    "name": "kubernetes",
                    "config": plugin_config(
                        kubeconfig(tmp_path / "kubeconfig", server.url), **settings
                    ),
                }
            ],
        }
        async with run_router(config, plugins={"kubernetes": KubernetesPlugin}) as running:
            async with ClientSession() as client:
                yield KubeCluster(api, running_pods, running, client)
