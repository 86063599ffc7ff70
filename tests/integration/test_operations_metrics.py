"""/metrics as Prometheus expects it, read with prometheus_client's own parser."""

from __future__ import annotations

import base64
import signal
from pathlib import Path

from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from router.buildinfo import build_info
from router.testing import Backend, run_router
from router.workers import merge_metrics, monotonic_part
from tests.integration.test_workers import new_connection_requests, workers_config, workers_of
from tests.support.processes import eventually, free_port, get, started

Labels = tuple[tuple[str, str], ...]


def parse(text: str) -> dict[str, dict[Labels, float]]:
    """Sample name -> labels -> value; fails on anything the Prometheus parser rejects."""
    found: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


async def test_metrics_follow_prometheus_conventions(
    backend: Backend, client: ClientSession
) -> None:
    routes = [{"name": "app", "upstreams": [{"url": backend.url}]}]
    async with run_router({"routes": routes}) as router:
        for _ in range(3):
            await get(client, router.url + "/a")
        async with client.post(router.url + "/b", data=b"x" * 100) as response:
            assert response.status == 200
            await response.read()
        async with client.request("PROPFIND", router.url + "/c") as response:
            await response.read()
        async with client.get(router.admin_url + "/metrics") as response:
            content_type = response.headers["Content-Type"]
            text = await response.text()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    metrics = parse(text)
    requests = metrics["commons_router_requests_total"]
    assert requests[(("code", "200"), ("method", "GET"), ("route", "app"))] == 3
    assert requests[(("code", "200"), ("method", "POST"), ("route", "app"))] == 1
    # Methods outside the standard set share one label value: clients cannot mint series.
    assert (("code", "200"), ("method", "_OTHER"), ("route", "app")) in requests
    assert not any(("method", "PROPFIND") in labels for labels in requests)

    info = build_info()
    assert metrics["commons_router_build_info"] == {
        (("commit", info.commit), ("version", info.version)): 1
    }
    assert metrics["process_resident_memory_bytes"][()] > 1_000_000
    assert metrics["process_cpu_seconds_total"][()] > 0
    assert metrics["process_open_fds"][()] > 0
    assert metrics["process_start_time_seconds"][()] > 1.6e9

    assert metrics["commons_router_request_body_bytes_total"][(("route", "app"),)] == 100
    assert metrics["commons_router_response_body_bytes_total"][(("route", "app"),)] > 0
    # The client keeps its connection to the public listener open.
    assert metrics["commons_router_open_connections"][()] >= 1
    assert metrics["commons_router_config_last_reload_success_timestamp_seconds"][()] > 1.6e9
    assert metrics["commons_router_config_last_reload_successful"][()] == 1
    endpoint = (("endpoint", backend.url),)
    assert metrics["commons_router_endpoint_requests_total"][endpoint] == 5
    assert metrics["commons_router_endpoint_failures_total"][endpoint] == 0
    assert metrics["commons_router_endpoint_healthy"][endpoint] == 1


def test_merging_keeps_each_family_together() -> None:
    one = (
        '# HELP a_total A.\n# TYPE a_total counter\na_total{code="200"} 1\n'
        "# HELP g G.\n# TYPE g gauge\ng 5\n"
    )
    two = (
        '# HELP a_total A.\n# TYPE a_total counter\na_total{code="500"} 2\n'
        "# HELP g G.\n# TYPE g gauge\ng 7\n"
    )
    merged = merge_metrics([one, two])
    assert parse(merged) == {
        "a_total": {(("code", "200"),): 1, (("code", "500"),): 2},
        "g": {(): 12},
    }
    # The a_total samples of the second text come before the g family, not after it.
    assert merged.index('a_total{code="500"}') < merged.index("# HELP g")
    assert parse(monotonic_part(merged)) == {
        "a_total": {(("code", "200"),): 1, (("code", "500"),): 2}
    }


async def test_counters_never_go_backwards_when_a_worker_is_killed(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    path, public, admin = workers_config(tmp_path, backend)

    async def total() -> float:
        _, text, _ = await get(client, admin + "/metrics")
        requests = parse(text).get("commons_router_requests_total", {})
        return sum(requests.values())

    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        await new_connection_requests(public, 40)
        before = await total()
        assert before == 40
        workers = workers_of(router)
        victim = workers[1]
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        assert await total() == before  # dead, not yet restarted

        async def replaced() -> bool:
            current = workers_of(router)
            return 1 in current and current[1].pid != victim.pid

        await eventually(replaced, message="worker 1 restarted")
        await router.wait_ready(client, admin)
        assert await total() == before  # the new process starts from zero
        await new_connection_requests(public, 10)
        assert await total() == before + 10


async def test_session_store_errors_are_counted(client: ClientSession) -> None:
    key = base64.b64encode(bytes(32)).decode()
    plugins = [
        {
            "name": "sessions",
            "config": {
                "store": "redis",
                "encryption_keys": [key],
                "redis": {"url": f"redis://127.0.0.1:{free_port()}/0", "timeout": "1s"},
            },
        }
    ]
    routes = [{"name": "a", "builtin": "echo"}]
    async with run_router({"plugins": plugins, "routes": routes}) as router:
        # Start-up pings Redis, which is not there: not fatal, but counted.
        _, text, _ = await get(client, router.admin_url + "/metrics")
    errors = parse(text)["commons_router_session_store_errors_total"]
    assert errors[(("kind", "ConnectionError"),)] >= 1
