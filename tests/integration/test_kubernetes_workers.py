"""``workers: 3`` with the kubernetes plugin: the cluster is watched once (by the
supervisor), and every worker serves the same routes, a restarted one at once."""

from __future__ import annotations

import asyncio
import copy
import json
import signal
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, UnixConnector

from tests.integration.test_kubernetes_tls import tls_secret
from tests.integration.test_workers import admin_socket, workers_of
from tests.support.kubeapi import KubeApiServer, kubeconfig, run_kube_api
from tests.support.kubecluster import (
    POD_IPS,
    app_objects,
    endpoint,
    plugin_config,
    run_pods,
    set_endpoints,
)
from tests.support.processes import (
    base_config,
    eventually,
    free_port,
    get,
    started,
    write_config,
)
from tests.support.tls import TestCA, served_common_name

ROUTE = "team-a.app.rule0.path0"
RESOURCES = {"ingresses", "ingressclasses", "services", "endpointslices", "pods"}


async def worker_endpoints(worker: Any) -> list[str] | None:
    """The endpoints of ROUTE in this worker's own table (its admin socket)."""
    async with ClientSession(connector=UnixConnector(path=admin_socket(worker))) as session:
        status, body, _ = await get(session, "http://worker/routes")
    assert status == 200, body
    for entry in json.loads(body)["routes"]:
        if entry["name"] == ROUTE:
            return [e["url"] for e in entry["endpoints"]]
    return None


def watches_by_resource(api: KubeApiServer) -> dict[str, int]:
    counts = dict.fromkeys(RESOURCES, 0)
    for call in api.calls_of("watch"):
        counts[call.resource] += 1
    return counts


async def test_three_workers_share_one_set_of_watches(tmp_path: Path) -> None:
    async with run_pods() as pods, run_kube_api() as (api, server):
        api.apply(*copy.deepcopy(app_objects(pods.port, "app-0")))
        config = base_config(
            tmp_path,
            [],
            workers=3,
            plugins=[
                {
                    "name": "kubernetes",
                    "config": plugin_config(kubeconfig(tmp_path / "kubeconfig", server.url)),
                }
            ],
        )
        path = tmp_path / "router.yaml"
        write_config(path, config)
        public, admin = (
            f"http://{config['listener']['listen']}",
            f"http://{config['admin']['listen']}",
        )
        url = lambda pod: f"http://{POD_IPS[pod]}:{pods.port}"  # noqa: E731
        async with ClientSession() as client:
            with started(["serve", "--config", str(path)], tmp_path) as router:
                await router.wait_ready(client, admin, timeout=30)
                workers = workers_of(router)
                assert sorted(workers) == [0, 1, 2]
                # Seen from the API server: one list and one open watch per resource.
                assert len(api.watches) == len(RESOURCES)
                assert watches_by_resource(api) == dict.fromkeys(RESOURCES, 1)
                assert len(api.calls_of("list")) == len(RESOURCES)
                for worker in workers.values():
                    assert await worker_endpoints(worker) == [url("app-0")]
                status, body, _ = await get(client, public + "/", headers={"Host": "app.test"})
                assert status == 200 and '"app-0"' in body

                set_endpoints(api, [endpoint("app-1")])

                async def everywhere() -> bool:
                    found = [await worker_endpoints(w) for w in workers.values()]
                    return found == [[url("app-1")]] * 3

                await eventually(everywhere, message="every worker has the change")

                # A worker dies; its replacement serves the current table from its start.
                victim = workers[1]
                victim.send_signal(signal.SIGKILL)
                victim.wait(5)

                async def replaced() -> bool:
                    current = workers_of(router)
                    if 1 not in current or current[1].pid == victim.pid:
                        return False
                    try:
                        return await worker_endpoints(current[1]) is not None
                    except (OSError, AssertionError):
                        return False  # not listening yet

                await eventually(replaced, timeout=30, message="worker 1 restarted")
                assert await worker_endpoints(workers_of(router)[1]) == [url("app-1")]
                assert watches_by_resource(api) == dict.fromkeys(RESOURCES, 1)
                assert len(api.watches) == len(RESOURCES)

                router.send(signal.SIGTERM)
                assert await router.wait_exit() == 0
                assert "Traceback" not in router.stderr()


async def test_every_worker_serves_the_certificates_of_secrets(tmp_path: Path) -> None:
    """The supervisor watches the routes; each worker terminates TLS, so each one loads the
    certificates of the Secrets our Ingresses name (watching only Ingresses, classes and
    those Secrets)."""
    ca = TestCA()
    async with run_pods() as pods, run_kube_api() as (api, server):
        objects = copy.deepcopy(app_objects(pods.port, "app-0"))
        for obj in objects:
            if obj["kind"] == "Ingress":
                obj["spec"]["tls"] = [{"hosts": ["app.test"], "secretName": "app-tls"}]
        api.apply(*objects, tls_secret("app-tls", *ca.issue("app.test", common_name="w")))
        https_port = free_port()
        config = base_config(
            tmp_path,
            [],
            workers=2,
            plugins=[
                {
                    "name": "kubernetes",
                    "config": plugin_config(kubeconfig(tmp_path / "kubeconfig", server.url)),
                }
            ],
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
                assert sorted(workers_of(router)) == [0, 1]

                async def every_handshake_served() -> bool:
                    names = [
                        await asyncio.to_thread(served_common_name, https_port, "app.test", ca)
                        for _ in range(12)  # new connections, spread over both workers
                    ]
                    return names == ["w"] * 12

                await eventually(every_handshake_served, message="both workers serve the Secret")
                # Routes are still watched once, by the supervisor.
                slices = [c for c in api.calls_of("watch") if c.resource == "endpointslices"]
                assert len(slices) == 1
                router.send(signal.SIGTERM)
                assert await router.wait_exit() == 0
                assert "Traceback" not in router.stderr()
