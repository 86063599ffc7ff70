"""Kubernetes provider at scale: 5,000 Ingresses and 50,000 endpoints.

    .venv/bin/python benchmarks/kubernetes_scale.py [--ingresses 5000]
        [--endpoints-per-service 10] [--changes 5] [--json FILE]

The test API server (tests/support/kubeapi.py) serves 5,000 Ingresses, 5,000 Services,
5,000 EndpointSlices of 10 endpoints and 50,000 Pods with code versions, in this process.
A router (`commons-router serve`, a subprocess) watches it, first with one process, then
with `workers: 4`. For each it reports:

- initial sync: from the process start to `/readyz` (everything listed, routes compiled
  and applied), next to the baseline measured in the same run: the same lists fetched by
  a plain client (the API server's and the wire's share);
- memory: RSS and PSS (shared pages counted once) of the router's processes when ready,
  next to the baseline of an idle router without the plugin; with workers, per process;
- time to apply one change (one endpoint stops serving): from the API write to the new
  route table in the router (every worker's), median of `--changes`;
- the watches the API server sees (one per resource, whatever the worker count).

Bounded: every wait has a timeout; about a minute or two on a 2-core machine. Exit 0 when
everything ran, 2 when a measurement broke.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiohttp import web  # noqa: E402

from benchmarks.kubernetes_rebuild import free_port, synthetic_objects  # noqa: E402
from tests.support.kubeapi import KubeApiServer, kubeconfig  # noqa: E402

RESOURCES = (
    "/apis/networking.k8s.io/v1/ingresses",
    "/apis/networking.k8s.io/v1/ingressclasses",
    "/api/v1/services",
    "/apis/discovery.k8s.io/v1/endpointslices",
    "/api/v1/pods",
)
GENERATION = re.compile(r"^commons_router_route_table_generation (\d+)$", re.MULTILINE)
MIB = 1024 * 1024


async def list_everything(url: str) -> float:
    """Seconds a plain client takes to list every resource in pages of 500."""
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-token"}) as client:
        for path in RESOURCES:
            params = {"limit": "500"}
            while True:
                async with client.get(url + path, params=params) as response:
                    page = json.loads(await response.read())
                token = page["metadata"].get("continue")
                if not token:
                    break
                params = {"limit": "500", "continue": token}
    return time.perf_counter() - started


def memory_of(pid: int) -> dict[str, Any]:
    """RSS and PSS of the process and its children (MiB), and each process's RSS."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    rss = pss = 0.0
    each = []
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        each.append(round(info.rss / MIB, 1))
    return {"rss_mib": round(rss / MIB, 1), "pss_mib": round(pss / MIB, 1), "each_rss_mib": each}


def admin_targets(pid: int, admin_url: str) -> list[tuple[str, str | None]]:
    """Where to read each serving process's metrics: its admin socket, or the admin URL."""
    workers = []
    for child in psutil.Process(pid).children():
        cmdline = child.cmdline()
        if "--admin-socket" in cmdline:
            workers.append(("http://worker", cmdline[cmdline.index("--admin-socket") + 1]))
    return workers or [(admin_url, None)]


async def generations(targets: list[tuple[str, str | None]]) -> list[int]:
    found = []
    for url, socket_path in targets:
        connector = aiohttp.UnixConnector(path=socket_path) if socket_path else None
        async with (
            aiohttp.ClientSession(connector=connector) as client,
            client.get(url + "/metrics") as response,
        ):
            match = GENERATION.search(await response.text())
            found.append(int(match.group(1)) if match else 0)
    return found


@contextlib.asynccontextmanager
async def router(tmp: Path, config: dict[str, Any]) -> AsyncIterator[tuple[Any, str, float]]:
    """A router subprocess; yields (process, admin URL, seconds until ready)."""
    admin = config["admin"]["listen"]
    path = tmp / f"router-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp / f"{path.stem}.log").open("w")
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "serve",
        "--config",
        str(path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    try:
        deadline = time.monotonic() + 180
        async with aiohttp.ClientSession() as client:
            while True:
                if process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"router not ready; see {log.name}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with client.get(f"http://{admin}/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield process, f"http://{admin}", time.perf_counter() - started
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def change_latency(
    api: KubeApiServer, pid: int, admin_url: str, changes: int, first: int
) -> list[float]:
    """Seconds from an EndpointSlice write (of apps ``first``, ``first + 1``...) to every
    serving process's new table."""
    targets = admin_targets(pid, admin_url)
    seconds = []
    for index in range(first, first + changes):
        before = await generations(targets)
        endpoint_slice = api.get("EndpointSlice", f"team-{index % 50}", f"app-{index}-abcde")
        endpoint_slice["endpoints"][0]["conditions"]["serving"] = False
        endpoint_slice["endpoints"][0]["conditions"]["ready"] = False
        started = time.perf_counter()
        api.apply(endpoint_slice)
        deadline = time.monotonic() + 30
        while True:
            now = await generations(targets)
            if all(n > b for n, b in zip(now, before, strict=True)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"a change was not applied within 30 s ({before} -> {now})")
            await asyncio.sleep(0.005)
        seconds.append(time.perf_counter() - started)
        await asyncio.sleep(0.3)
    return seconds


async def run(ingresses: int, per_service: int, changes: int) -> dict[str, Any]:
    built = time.perf_counter()
    objects = synthetic_objects(8080, ingresses, per_service)
    api = KubeApiServer()
    api.apply(*objects)
    loaded_s = time.perf_counter() - built
    endpoints = sum(len(o.get("endpoints", [])) for o in objects if o["kind"] == "EndpointSlice")
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    api_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", api_port).start()
    api_url = f"http://127.0.0.1:{api_port}"
    result: dict[str, Any] = {
        "ingresses": ingresses,
        "endpoints": endpoints,
        "pods": sum(1 for o in objects if o["kind"] == "Pod"),
    }
    del objects
    try:
        with tempfile.TemporaryDirectory(prefix="k8s-scale-") as tmp_name:
            tmp = Path(tmp_name)
            result["baseline_list_s"] = round(await list_everything(api_url), 2)

            def config(workers: int, with_plugin: bool) -> dict[str, Any]:
                base: dict[str, Any] = {
                    "listener": {"listen": f"127.0.0.1:{free_port()}"},
                    "admin": {"listen": f"127.0.0.1:{free_port()}"},
                    "access_log": {"enabled": False},
                    "drain": {"delay": 0, "grace": 1},
                    "workers": workers,
                }
                if with_plugin:
                    settings = {
                        "credentials": "kubeconfig",
                        "kubeconfig": str(kubeconfig(tmp / "kubeconfig", api_url)),
                        "sync_timeout": "150s",
                    }
                    base["plugins"] = [{"name": "kubernetes", "config": settings}]
                else:
                    base["routes"] = [{"name": "idle", "builtin": "echo"}]
                return base

            async with router(tmp, config(1, with_plugin=False)) as (process, _, _):
                await asyncio.sleep(1)
                result["baseline_idle_router"] = memory_of(process.pid)
            for workers in (1, 4):
                calls_before = len(api.calls_of("watch"))
                async with router(tmp, config(workers, with_plugin=True)) as (
                    process,
                    admin_url,
                    ready_s,
                ):
                    await asyncio.sleep(2)  # let start-up garbage settle
                    memory = memory_of(process.pid)
                    first = 0 if workers == 1 else changes
                    latency = await change_latency(api, process.pid, admin_url, changes, first)
                    result[f"workers_{workers}"] = {
                        "initial_sync_s": round(ready_s, 2),
                        "memory": memory,
                        "apply_one_change_ms_median": round(statistics.median(latency) * 1000, 1),
                        "apply_one_change_ms": [round(s * 1000, 1) for s in latency],
                        "watches_seen_by_the_api_server": len(api.calls_of("watch"))
                        - calls_before,
                    }
                api.close_watches()
            result["objects_loaded_into_the_api_server_s"] = round(loaded_s, 1)
    finally:
        api.close_watches()
        await runner.cleanup()
    return result


def report(result: dict[str, Any]) -> None:
    idle = result["baseline_idle_router"]
    print(
        f"scale: {result['ingresses']} Ingresses, {result['endpoints']} endpoints, "
        f"{result['pods']} pods; baseline: a plain client lists everything in "
        f"{result['baseline_list_s']} s; an idle router without the plugin: "
        f"RSS {idle['rss_mib']} MiB"
    )
    for workers in (1, 4):
        entry = result[f"workers_{workers}"]
        memory = entry["memory"]
        print(
            f"workers={workers}: initial sync (start -> ready) {entry['initial_sync_s']} s; "
            f"memory RSS {memory['rss_mib']} MiB, PSS {memory['pss_mib']} MiB "
            f"(per process {memory['each_rss_mib']}); one change applied in "
            f"{entry['apply_one_change_ms_median']} ms (median; {entry['apply_one_change_ms']}); "
            f"watches seen by the API server: {entry['watches_seen_by_the_api_server']}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingresses", type=int, default=5000)
    parser.add_argument("--endpoints-per-service", type=int, default=10)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args.ingresses, args.endpoints_per_service, args.changes))
    except RuntimeError as exc:
        print(f"kubernetes_scale: {exc}", file=sys.stderr)
        return 2
    report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
