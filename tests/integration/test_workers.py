"""``workers: 2``: a supervisor and two worker processes sharing the public port."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import psutil
from aiohttp import ClientSession, TCPConnector, UnixConnector

from router.testing import Backend
from tests.support.processes import (
    RouterProcess,
    base_config,
    eventually,
    get,
    started,
    write_config,
)


def workers_config(tmp_path: Path, backend: Backend) -> tuple[Path, str, str]:
    config = base_config(
        tmp_path,
        [{"name": "app", "upstreams": [{"url": backend.url}]}],
        workers=2,
        drain={"delay": 0, "grace": 5},
    )
    path = tmp_path / "router.yaml"
    write_config(path, config)
    return path, f"http://{config['listener']['listen']}", f"http://{config['admin']['listen']}"


def workers_of(router: RouterProcess) -> dict[int, psutil.Process]:
    """Live worker processes by --worker-index."""
    found: dict[int, psutil.Process] = {}
    for child in psutil.Process(router.pid).children():
        try:
            cmdline = child.cmdline()
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            continue
        if "--worker-index" in cmdline:
            found[int(cmdline[cmdline.index("--worker-index") + 1])] = child
    return found


def admin_socket(worker: psutil.Process) -> str:
    cmdline = worker.cmdline()
    return cmdline[cmdline.index("--admin-socket") + 1]


def requests_total(metrics: str) -> int:
    return sum(
        int(value)
        for value in re.findall(
            r'^commons_router_requests_total\{route="app",method="GET",code="200"\} (\d+)$',
            metrics,
            re.MULTILINE,
        )
    )


def restarts(metrics: str) -> dict[str, int]:
    """``commons_router_worker_restarts_total`` by worker index."""
    assert metrics.count("# TYPE commons_router_worker_restarts_total counter") == 1
    return {
        worker: int(value)
        for worker, value in re.findall(
            r'^commons_router_worker_restarts_total\{worker="(\d+)"\} (\d+)$',
            metrics,
            re.MULTILINE,
        )
    }


async def admin_metrics(client: ClientSession, admin: str) -> str:
    status, text, _ = await get(client, admin + "/metrics")
    assert status == 200
    return text


async def worker_metrics(worker: psutil.Process) -> str:
    async with ClientSession(connector=UnixConnector(path=admin_socket(worker))) as session:
        return (await get(session, "http://worker/metrics"))[1]


async def new_connection_requests(public: str, count: int) -> None:
    """``count`` requests, each on its own connection so the kernel spreads them."""
    async with ClientSession(connector=TCPConnector(force_close=True)) as session:
        for start in range(0, count, 10):
            answers = await asyncio.gather(
                *(get(session, f"{public}/n/{i}") for i in range(start, start + 10))
            )
            assert {status for status, _, _ in answers} == {200}


async def test_two_workers_serve_and_the_supervisor_merges_them(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    path, public, admin = workers_config(tmp_path, backend)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        workers = workers_of(router)
        assert sorted(workers) == [0, 1]
        assert router.pid not in {w.pid for w in workers.values()}
        assert (await get(client, admin + "/healthz"))[:2] == (200, "ok\n")

        await new_connection_requests(public, 60)

        per_worker = [requests_total(await worker_metrics(w)) for w in workers.values()]
        assert sum(per_worker) == 60
        assert all(count > 0 for count in per_worker), per_worker

        _, merged, _ = await get(client, admin + "/metrics")
        assert requests_total(merged) == 60
        assert merged.count("# TYPE commons_router_requests_total counter") == 1
        # A per-process state gauge is not summed across workers.
        assert re.search(r"^commons_router_route_table_generation 1$", merged, re.MULTILINE)

        status, body, _ = await get(client, admin + "/routes")
        assert status == 200 and '"app"' in body

        # SIGHUP reaches every worker.
        router.send(signal.SIGHUP)
        await eventually(
            lambda: _contains(client, admin, 'commons_router_config_reloads_total{result="ok"} 2'),
            message="both workers reloaded",
        )

        pids = [w.pid for w in workers.values()]
        router.send(signal.SIGTERM)
        assert await router.wait_exit() == 0
        _gone, alive = psutil.wait_procs(
            [psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=5
        )
        assert not alive
        assert "Traceback" not in router.stderr()


async def test_supervisor_restarts_a_killed_worker(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    path, public, admin = workers_config(tmp_path, backend)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        assert restarts(await admin_metrics(client, admin)) == {"0": 0, "1": 0}
        workers = workers_of(router)
        victim = workers[1]
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)

        async def replaced() -> bool:
            current = workers_of(router)
            return 1 in current and current[1].pid != victim.pid

        await eventually(replaced, message="worker 1 restarted")
        await router.wait_ready(client, admin)
        assert workers_of(router)[0].pid == workers[0].pid
        assert (await get(client, admin + "/healthz"))[0] == 200
        assert "worker 1 exited with -9" in router.stderr()
        assert restarts(await admin_metrics(client, admin)) == {"0": 0, "1": 1}
        await new_connection_requests(public, 10)

        router.send(signal.SIGTERM)
        assert await router.wait_exit() == 0


async def test_sigterm_while_a_worker_awaits_restart_stops_everything(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    path, _, admin = workers_config(tmp_path, backend)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        workers = workers_of(router)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(5)
        await eventually(
            lambda: _says(router, "worker 0 exited"), message="supervisor saw the worker die"
        )
        router.send(signal.SIGTERM)
        assert await router.wait_exit() == 0
        _gone, alive = psutil.wait_procs([w for w in workers.values() if w.is_running()], timeout=5)
        assert not alive
        assert psutil.pid_exists(router.pid) is False or not psutil.Process(router.pid).children()


async def _says(router: RouterProcess, text: str) -> bool:
    return text in router.stderr()


async def _contains(client: ClientSession, admin: str, text: str) -> bool:
    return text in (await get(client, admin + "/metrics"))[1]


async def test_workers_stop_when_the_supervisor_is_killed(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    path, _, admin = workers_config(tmp_path, backend)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        workers = list(workers_of(router).values())
        assert len(workers) == 2
        router.send(signal.SIGKILL)
        await router.wait_exit()

        async def all_gone() -> bool:
            return not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)

        await eventually(all_gone, message="orphaned workers drained and exited")
