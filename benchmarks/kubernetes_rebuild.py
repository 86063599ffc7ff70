"""Kubernetes provider benchmark: route-table rebuild time and memory, and throughput while
endpoints churn, compared with a static table in the same run.

    .venv/bin/python benchmarks/kubernetes_rebuild.py [--duration 2] [--rounds 7]
        [--ingresses 1000] [--json FILE]

1. Rebuild (in this process): a cluster of 1,000 Ingresses / 1,000 Services / 5,000
   endpoints (5,000 Pods with code versions). Measures the build (objects -> routes ->
   compiled table, as the router does it): the very first one (which also creates every
   endpoint's state), a full rebuild of every route (median of 5: the target, < 200 ms),
   the rebuild after a relist and after one endpoint change; and the memory the objects,
   routes and table hold.
2. Churn: a router subprocess watching the test API server (tests/support/kubeapi.py) with
   the same 1,000 Ingresses; nginx serves the one Service under load on three pod
   addresses. wrk -c64 measures req/s with a static table, then while every 100 ms another
   endpoint of that Service becomes the terminating one (each change is a watch event ->
   rebuild -> table swap). Static and churn measurements alternate; the result is the
   median of the churn/static ratios of the pairs. Target: churn >= 0.95 x static, no errors.
   Also the router's CPU use without traffic, idle and under the same churn (less
   disturbed by other load on the machine than the throughput ratio).

Needs nginx and wrk for part 2 (part 1 runs without them). Exit 0 when everything ran,
2 when a measurement broke.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import json
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiohttp import web  # noqa: E402

from router.observability.metrics import Metrics  # noqa: E402
from router.proxy.upstream import EndpointRegistry  # noqa: E402
from router.routing.compiler import RouteCompiler  # noqa: E402
from router_plugins.kubernetes.builder import RouteBuilder  # noqa: E402
from router_plugins.kubernetes.mapping import ClassSelection, Cluster  # noqa: E402
from router_plugins.kubernetes.version import pod_info  # noqa: E402
from tests.support import netns  # noqa: E402
from tests.support.kubeapi import KubeApiServer, kubeconfig  # noqa: E402

INGRESSES = 1000
ENDPOINTS_PER_SERVICE = 5
SELECTION = ClassSelection("commons-router", "commons-router.io/ingress-controller")
REBUILD_TARGET_MS = 200.0
CHURN_TARGET = 0.95
TARGET_HOST = "app-0.example.com"
TARGET_IPS = tuple(netns.pod_addresses(3))
"""The pods nginx stands for: not loopback (a real API server refuses those), inside a
network namespace this benchmark makes (tests/support/netns.py)."""


def synthetic_objects(
    target_port: int = 8080,
    ingresses: int = INGRESSES,
    endpoints_per_service: int = ENDPOINTS_PER_SERVICE,
) -> list[dict[str, Any]]:
    """1,000 apps: Ingress, Service, one EndpointSlice of 5 endpoints, 5 Pods each."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "commons-router", "resourceVersion": "1"},
            "spec": {"controller": SELECTION.controller},
        }
    ]
    for i in range(ingresses):
        ns, app = f"team-{i % 50}", f"app-{i}"
        objects.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {
                    "name": app,
                    "namespace": ns,
                    "resourceVersion": str(10 + i),
                    "annotations": {"commons-router.io/read-timeout": "30s"},
                },
                "spec": {
                    "ingressClassName": "commons-router",
                    "rules": [
                        {
                            "host": f"{app}.example.com",
                            "http": {
                                "paths": [
                                    {
                                        "path": "/",
                                        "pathType": "Prefix",
                                        "backend": {
                                            "service": {"name": app, "port": {"number": 80}}
                                        },
                                    }
                                ]
                            },
                        }
                    ],
                },
            }
        )
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": app, "namespace": ns, "resourceVersion": str(5000 + i)},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            }
        )
        endpoints = []
        for j in range(endpoints_per_service):
            pod = f"{app}-{j}"
            address = (
                TARGET_IPS[j]
                if i == 0 and j < len(TARGET_IPS)
                else f"10.{i // 250}.{i % 250}.{j + 1}"
            )
            endpoints.append(
                {
                    "addresses": [address],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "nodeName": f"node-{j}",
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": pod},
                }
            )
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod,
                        "namespace": ns,
                        "resourceVersion": str(20000 + i * 10 + j),
                        "labels": {"app.kubernetes.io/version": "1.0.0"},
                        "annotations": {
                            "commons-router.io/repository": f"https://example.org/{app}",
                            "commons-router.io/commit": f"{i:040x}",
                        },
                    },
                    "spec": {
                        "nodeName": f"node-{j}",
                        "containers": [
                            {
                                "name": "app",
                                "image": f"registry.example.org/{app}:1.0.0",
                                "ports": [{"name": "http", "containerPort": target_port}],
                            }
                        ],
                    },
                    "status": {
                        "containerStatuses": [
                            {
                                "name": "app",
                                "imageID": f"registry.example.org/{app}@sha256:{i:064x}",
                            }
                        ]
                    },
                }
            )
        if i == 0:
            endpoints = endpoints[: len(TARGET_IPS)]
        objects.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{app}-abcde",
                    "namespace": ns,
                    "resourceVersion": str(10000 + i),
                    "labels": {"kubernetes.io/service-name": app},
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": [{"name": "http", "port": target_port, "protocol": "TCP"}],
            }
        )
    return objects


def cluster_of(objects: list[dict[str, Any]]) -> Cluster:
    def key(o: dict[str, Any]) -> str:
        return f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}".lstrip("/")

    by_kind: dict[str, dict[str, Any]] = {}
    for obj in objects:
        value = pod_info(obj) if obj["kind"] == "Pod" else obj
        by_kind.setdefault(obj["kind"], {})[key(obj)] = value
    return Cluster(
        ingresses=by_kind["Ingress"],
        ingress_classes=by_kind["IngressClass"],
        services=by_kind["Service"],
        slices=by_kind["EndpointSlice"],
        pods=by_kind["Pod"],
    )


def compiler(endpoints: EndpointRegistry | None = None) -> RouteCompiler:
    async def terminal(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    registry = endpoints if endpoints is not None else EndpointRegistry()
    return RouteCompiler([], terminal, {}, registry, Metrics(), 100 * 1024 * 1024)


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args)
    return (time.perf_counter() - started) * 1000, result


def full_build(
    cluster: Cluster, endpoints: EndpointRegistry | None = None
) -> tuple[float, float, Any, RouteBuilder, RouteCompiler]:
    """Every Ingress mapped and every route compiled anew (no cached results); with
    ``endpoints`` the router's endpoint states already exist, as after start-up.
    Returns mapping ms, compile ms, table, builder, compiler."""
    builder, compile_routes = RouteBuilder(SELECTION), compiler(endpoints)
    mapping_ms, (routes, problems) = timed(builder.build, cluster)
    assert not problems, problems[:3]
    compile_ms, (table, _) = timed(compile_routes, routes)
    return mapping_ms, compile_ms, table, builder, compile_routes


def rebuild_benchmark(repeat: int = 5) -> dict[str, Any]:
    objects = synthetic_objects()
    # Memory: what the kept objects, the routes and the compiled table hold.
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cluster = cluster_of(objects)
    _, _, table, builder, compile_routes = full_build(cluster)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del table, builder, compile_routes

    cold = [full_build(cluster)[:2] for _ in range(3)]
    endpoints = EndpointRegistry()
    full_build(cluster, endpoints)
    full_builds = [full_build(cluster, endpoints)[:3] for _ in range(repeat)]
    mapping_ms = statistics.median(m for m, _, _ in full_builds)
    compile_ms = statistics.median(c for _, c, _ in full_builds)
    full_ms = statistics.median(m + c for m, c, _ in full_builds)
    full_min_ms = min(m + c for m, c, _ in full_builds)
    table = full_builds[-1][2]

    _, _, _, builder, compile_routes = full_build(cluster)
    # A relist: every object arrives again (new objects, same resource versions).
    relist: list[float] = []
    for _ in range(3):
        cluster = cluster_of(copy.deepcopy(objects))
        build_ms, (relisted, _) = timed(builder.build, cluster, None)
        swap_ms, _ = timed(compile_routes, relisted)
        relist.append(build_ms + swap_ms)

    # One endpoint changes (a new resource version of one slice), as a watch event does,
    # and the provider says which slice changed.
    incremental: list[float] = []
    slice_key = "team-7/app-7-abcde"
    for step in range(9):
        changed = copy.deepcopy(cluster.slices[slice_key])
        changed["metadata"]["resourceVersion"] = str(900000 + step)
        changed["endpoints"][0]["conditions"]["terminating"] = step % 2 == 0
        cluster.slices = {**cluster.slices, slice_key: changed}
        build_ms, (new_routes, _) = timed(builder.build, cluster, {("endpointslices", slice_key)})
        swap_ms, _ = timed(compile_routes, new_routes)
        incremental.append(build_ms + swap_ms)
    return {
        "ingresses": len(cluster.ingresses),
        "routes": len(table.routes),
        "endpoints": sum(len(r.spec.upstreams) for r in table.routes),
        "start_up_build_ms": round(statistics.median(m + c for m, c in cold), 1),
        "full_build_ms": round(full_ms, 1),
        "full_build_min_ms": round(full_min_ms, 1),
        "full_build_mapping_ms": round(mapping_ms, 1),
        "full_build_compile_ms": round(compile_ms, 1),
        "rebuild_after_relist_ms": round(statistics.median(relist), 1),
        "rebuild_after_one_change_ms": round(statistics.median(incremental), 1),
        "memory_held_mib": round((held - base) / 2**20, 1),
        "memory_peak_mib": round((peak - base) / 2**20, 1),
        "pass": full_ms < REBUILD_TARGET_MS,
    }


# -- part 2: throughput under churn ------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        {listens}
        location / {{ return 200 "Hello, world\\n"; }}
    }}
}}
"""


async def wrk(wrk_path: str, url: str, host: str, duration: float) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        wrk_path,
        "-t1",
        "-c64",
        f"-d{duration:g}s",
        "-H",
        f"Host: {host}",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await process.communicate())[0].decode()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests_per_s": float(rate.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


async def churn_benchmark(duration: float, rounds: int, ingresses: int) -> dict[str, Any]:
    nginx, wrk_path = shutil.which("nginx") or "/usr/sbin/nginx", shutil.which("wrk")
    if not Path(nginx).exists() or wrk_path is None:
        return {"skipped": "nginx and wrk are needed (apt-get install nginx-light wrk)"}
    try:
        network = netns.create(len(TARGET_IPS))
    except netns.Unavailable as exc:
        return {"skipped": f"the pods need a network namespace: {exc}"}
    pod_port = 8080  # the namespace is this benchmark's own
    objects = synthetic_objects(pod_port, ingresses)
    api = KubeApiServer()
    api.apply(*objects)
    runner = web.AppRunner(api.app())
    await runner.setup()
    api_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", api_port).start()
    processes: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="k8s-bench-") as tmp:
        try:
            listens = " ".join(f"listen {ip}:{pod_port};" for ip in TARGET_IPS)
            Path(tmp, "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, listens=listens))
            processes.append(
                await asyncio.create_subprocess_exec(
                    "ip",
                    "netns",
                    "exec",
                    network.name,
                    nginx,
                    "-c",
                    f"{tmp}/nginx.conf",
                    "-p",
                    tmp,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
            router_port, admin_port = free_port(), free_port()
            config = {
                "listener": {"listen": f"127.0.0.1:{router_port}"},
                "admin": {"listen": f"127.0.0.1:{admin_port}"},
                "access_log": {"path": f"{tmp}/access.log"},
                "plugins": [
                    {
                        "name": "kubernetes",
                        "config": {
                            "credentials": "kubeconfig",
                            "kubeconfig": str(
                                kubeconfig(Path(tmp, "kubeconfig"), f"http://127.0.0.1:{api_port}")
                            ),
                        },
                    }
                ],
            }
            Path(tmp, "router.yaml").write_text(yaml.safe_dump(config))
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "router",
                    "serve",
                    "--config",
                    f"{tmp}/router.yaml",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=open(f"{tmp}/router.log", "w"),  # noqa: SIM115
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
            )
            await wait_routed(admin_port, ingresses)
            cpu = await churn_cpu(processes[-1].pid, api)
            url = f"http://127.0.0.1:{router_port}/"
            await wrk(wrk_path, url, TARGET_HOST, 1.0)  # warm-up
            static: list[dict[str, float]] = []
            churn: list[dict[str, float]] = []
            flips = 0
            for _ in range(rounds):
                static.append(await wrk(wrk_path, url, TARGET_HOST, duration))
                stop = asyncio.Event()
                flipper = asyncio.create_task(flip_endpoints(api, stop))
                churn.append(await wrk(wrk_path, url, TARGET_HOST, duration))
                stop.set()
                flips += await flipper
            generation = await table_generation(admin_port)
        finally:
            for process in processes:
                if process.returncode is None:
                    process.terminate()
            for process in processes:
                await process.wait()
            api.close_watches()
            await runner.cleanup()
            network.delete()
    static_rps = statistics.median(r["requests_per_s"] for r in static)
    churn_rps = statistics.median(r["requests_per_s"] for r in churn)
    errors = sum(r["non_2xx"] + r["socket_errors"] for r in static + churn)
    # Pairs measured back to back: the median of their ratios cancels slow drift in what
    # else the machine is doing.
    ratio = statistics.median(
        c["requests_per_s"] / st["requests_per_s"] if st["requests_per_s"] else 0.0
        for st, c in zip(static, churn, strict=True)
    )
    return {
        "static_requests_per_s": round(static_rps),
        "churn_requests_per_s": round(churn_rps),
        "ratio": round(ratio, 3),
        "endpoint_changes": flips,
        "table_generation": generation,
        "router_cpu_idle_percent": cpu["idle"],
        "router_cpu_churn_percent": cpu["churn"],
        "errors": errors,
        "rounds": {"static": static, "churn": churn},
        "pass": ratio >= CHURN_TARGET and errors == 0,
    }


async def flip_endpoints(api: KubeApiServer, stop: asyncio.Event) -> int:
    """Every 100 ms another endpoint of the loaded Service is the terminating one (so no two
    consecutive states are the same, whatever the debounce)."""
    flips = 0
    while not stop.is_set():
        endpoint_slice = api.get("EndpointSlice", "team-0", "app-0-abcde")
        for index, entry in enumerate(endpoint_slice["endpoints"]):
            terminating = index == flips % len(TARGET_IPS)
            entry["conditions"] = {
                "ready": not terminating,
                "serving": True,
                "terminating": terminating,
            }
        api.apply(endpoint_slice)
        flips += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    return flips


async def churn_cpu(pid: int, api: KubeApiServer, seconds: float = 5.0) -> dict[str, float]:
    """The router's CPU use (% of one core) without traffic, idle and under churn: what
    following the changes costs, less disturbed by other load than a throughput ratio."""
    process = psutil.Process(pid)

    async def used() -> float:
        before = sum(process.cpu_times()[:2])
        await asyncio.sleep(seconds)
        return round(100 * (sum(process.cpu_times()[:2]) - before) / seconds, 1)

    idle = await used()
    stop = asyncio.Event()
    flipper = asyncio.create_task(flip_endpoints(api, stop))
    churn = await used()
    stop.set()
    await flipper
    return {"idle": idle, "churn": churn}


async def table_generation(admin_port: int) -> int:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{admin_port}/routes") as response,
    ):
        return int((await response.json())["generation"])


async def wait_routed(admin_port: int, routes: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            try:
                async with client.get(f"http://127.0.0.1:{admin_port}/routes") as response:
                    if len((await response.json())["routes"]) >= routes:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the router did not load the routes in time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="static/churn pairs")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--ingresses", type=int, default=INGRESSES, help="table size for the churn part"
    )
    args = parser.parse_args()
    try:
        rebuild = rebuild_benchmark()
        print(
            f"rebuild: {rebuild['ingresses']} Ingresses, {rebuild['endpoints']} endpoints: "
            f"first build at start-up {rebuild['start_up_build_ms']} ms; "
            f"full rebuild {rebuild['full_build_ms']} ms (median of 5, min "
            f"{rebuild['full_build_min_ms']}; mapping {rebuild['full_build_mapping_ms']}, "
            f"compile {rebuild['full_build_compile_ms']}); after a relist "
            f"{rebuild['rebuild_after_relist_ms']} ms; after one change "
            f"{rebuild['rebuild_after_one_change_ms']} ms; memory held "
            f"{rebuild['memory_held_mib']} MiB (peak {rebuild['memory_peak_mib']}) -> "
            f"{'PASS' if rebuild['pass'] else 'FAIL'} (target < {REBUILD_TARGET_MS:g} ms)"
        )
        churn = asyncio.run(churn_benchmark(args.duration, args.rounds, args.ingresses))
        if "skipped" in churn:
            print(f"churn: skipped: {churn['skipped']}")
        else:
            print(
                f"churn: static {churn['static_requests_per_s']} req/s, churn "
                f"{churn['churn_requests_per_s']} req/s ({churn['endpoint_changes']} endpoint "
                f"changes), ratio {churn['ratio']}, errors {churn['errors']} -> "
                f"{'PASS' if churn['pass'] else 'FAIL'} (target >= {CHURN_TARGET})"
            )
            print(
                f"churn: router CPU without traffic: idle {churn['router_cpu_idle_percent']}%, "
                f"one endpoint change per 100 ms {churn['router_cpu_churn_percent']}% of a core"
            )
    except Exception as exc:
        print(f"kubernetes_rebuild: measurement broke: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps({"rebuild": rebuild, "churn": churn}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
