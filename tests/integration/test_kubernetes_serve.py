"""`commons-router serve` with the kubernetes plugin, as a real process."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from tests.support.kubeapi import kubeconfig, run_kube_api
from tests.support.kubecluster import app_objects, run_pods
from tests.support.processes import (
    base_config,
    eventually,
    get,
    router_env,
    run_cli,
    started,
    write_config,
)


def kubernetes_config(tmp_path: Path, server_url: str, **settings: object) -> dict[str, Any]:
    return base_config(
        tmp_path,
        [],
        plugins=[
            {
                "name": "kubernetes",
                "config": {
                    "credentials": "kubeconfig",
                    "kubeconfig": str(kubeconfig(tmp_path / "kubeconfig", server_url)),
                    "backoff_initial": "50ms",
                    "backoff_max": "200ms",
                    **settings,
                },
            }
        ],
    )


async def test_serve_routes_every_ingress_and_logs_the_pod_version(tmp_path: Path) -> None:
    async with run_pods() as pods, run_kube_api() as (api, server):
        api.apply(*app_objects(pods.port, "app-1"))
        config = kubernetes_config(tmp_path, server.url)
        write_config(tmp_path / "router.yaml", config)
        public = f"http://{config['listener']['listen']}"
        admin = f"http://{config['admin']['listen']}"
        with started(["serve", "--config", str(tmp_path / "router.yaml")], tmp_path) as router:
            async with ClientSession() as client:
                await router.wait_ready(client, admin)
                # Ready means routed: no waiting for the first table.
                status, body, _ = await get(client, public + "/hello", headers={"Host": "app.test"})
                assert status == 200
                assert json.loads(body)["pod"] == "app-1"
            router.send(signal.SIGTERM)
            assert await router.wait_exit() == 0
        (line,) = [
            json.loads(text)
            for text in (tmp_path / "access.log").read_text().splitlines()
            if '"/hello"' in text
        ]
        assert line["code_version"]["pod"] == "app-1"
        assert line["code_version"]["commit"] == "2" * 40


async def test_serve_without_a_reachable_api_server_says_why_and_exits_1(tmp_path: Path) -> None:
    config = kubernetes_config(tmp_path, "http://127.0.0.1:9", sync_timeout="1s")
    write_config(tmp_path / "router.yaml", config)
    with started(["serve", "--config", str(tmp_path / "router.yaml")], tmp_path) as router:
        assert await router.wait_exit() == 1
        stderr = router.stderr()
    assert "cannot start: kubernetes: no complete list from http://127.0.0.1:9" in stderr
    assert "Traceback" not in stderr


def test_check_reports_bad_kubernetes_settings(tmp_path: Path) -> None:
    config = kubernetes_config(
        tmp_path, "http://127.0.0.1:9", namespaces=["Not_A_Namespace"], page_size=0
    )
    write_config(tmp_path / "router.yaml", config)
    result = run_cli("check", "--config", str(tmp_path / "router.yaml"))
    assert result.returncode == 1
    assert "invalid namespace 'Not_A_Namespace'" in result.stderr + result.stdout
    assert "page_size" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_check_reports_bad_status_settings(tmp_path: Path) -> None:
    config = kubernetes_config(
        tmp_path,
        "http://127.0.0.1:9",
        status={"addresses": ["not an address!"], "service": "x/y", "retry_period": "20s"},
    )
    write_config(tmp_path / "router.yaml", config)
    result = run_cli("check", "--config", str(tmp_path / "router.yaml"))
    output = result.stderr + result.stdout
    assert result.returncode == 1
    assert "'not an address!' is neither an IP address nor a DNS name" in output
    assert "Traceback" not in result.stderr
    config["plugins"][0]["config"]["status"] = {"addresses": ["lb.example.org"], "service": "x/y"}
    write_config(tmp_path / "router.yaml", config)
    result = run_cli("check", "--config", str(tmp_path / "router.yaml"))
    assert result.returncode == 1
    assert "set exactly one of addresses and service" in result.stderr + result.stdout


ROUTER_DIGEST = "sha256:" + "5e" * 32


def router_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": "commons-router", "name": "commons-router-7d9f-x2x"},
        "spec": {"containers": [{"name": "router", "image": "ghcr.io/c/r:0.1.0"}]},
        "status": {
            "containerStatuses": [
                {"name": "sidecar", "imageID": "docker.io/envoy@sha256:" + "11" * 32},
                {"name": "router", "imageID": "ghcr.io/c/r@" + ROUTER_DIGEST},
            ]
        },
    }


async def test_serve_publishes_its_own_image_digest_read_from_its_pod(tmp_path: Path) -> None:
    async with run_pods() as pods, run_kube_api() as (api, server):
        api.apply(*app_objects(pods.port, "app-1"), router_pod())
        config = kubernetes_config(tmp_path, server.url)
        config["plugins"].append({"name": "provenance", "config": {"sign": "never"}})
        write_config(tmp_path / "router.yaml", config)
        public = f"http://{config['listener']['listen']}"
        admin = f"http://{config['admin']['listen']}"
        env = {
            **router_env(),
            "COMMONS_ROUTER_POD_NAME": "commons-router-7d9f-x2x",
            "COMMONS_ROUTER_POD_NAMESPACE": "commons-router",
            "COMMONS_ROUTER_CONTAINER_NAME": "router",
        }
        with started(
            ["serve", "--config", str(tmp_path / "router.yaml")], tmp_path, env=env
        ) as router:
            async with ClientSession() as client:
                await router.wait_ready(client, admin)

                async def digest_published() -> bool:
                    async with client.get(public + "/hello", headers={"Host": "app.test"}) as r:
                        return f'router-image-digest="{ROUTER_DIGEST}"' in r.headers.get(
                            "Provenance", ""
                        )

                await eventually(digest_published, message="router-image-digest in Provenance")
            router.send(signal.SIGTERM)
            assert await router.wait_exit() == 0
        assert [c.resource for c in api.calls_of("get")] == ["pods"]


async def test_without_its_pod_name_the_router_publishes_no_image_digest(tmp_path: Path) -> None:
    async with run_pods() as pods, run_kube_api() as (api, server):
        api.apply(*app_objects(pods.port, "app-1"), router_pod())
        config = kubernetes_config(tmp_path, server.url)
        config["plugins"].append({"name": "provenance", "config": {"sign": "never"}})
        write_config(tmp_path / "router.yaml", config)
        public = f"http://{config['listener']['listen']}"
        admin = f"http://{config['admin']['listen']}"
        with started(["serve", "--config", str(tmp_path / "router.yaml")], tmp_path) as router:
            async with ClientSession() as client:
                await router.wait_ready(client, admin)
                status, _, headers = await get(
                    client, public + "/hello", headers={"Host": "app.test"}
                )
                assert status == 200
                assert "router-commit=" in headers["Provenance"]
                assert "router-image-digest" not in headers["Provenance"]
            router.send(signal.SIGTERM)
            assert await router.wait_exit() == 0
        assert api.calls_of("get") == []
