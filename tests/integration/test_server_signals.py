"""SIGTERM/SIGINT drain of a real ``commons-router serve`` process."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientError, ClientSession, ClientTimeout, web

from router.testing import Backend
from tests.support.backends import echo_app
from tests.support.processes import base_config, eventually, get, started, write_config


def serve_config(tmp_path: Path, backend: Backend, **drain: float) -> tuple[Path, str, str]:
    config = base_config(
        tmp_path,
        [{"name": "app", "upstreams": [{"url": backend.url}]}],
        drain=drain,
    )
    path = tmp_path / "router.yaml"
    write_config(path, config)
    return path, f"http://{config['listener']['listen']}", f"http://{config['admin']['listen']}"


async def in_flight(client: ClientSession, admin: str) -> int:
    _, text, _ = await get(client, admin + "/metrics")
    for line in text.splitlines():
        if line.startswith("commons_router_in_flight_requests "):
            return int(line.split()[1])
    raise AssertionError("no in-flight gauge in /metrics")


async def fetch(client: ClientSession, url: str) -> tuple[int, str]:
    async with client.get(url, timeout=ClientTimeout(total=60)) as response:
        return response.status, await response.text()


def access_log(tmp_path: Path) -> list[dict[str, Any]]:
    text = (tmp_path / "access.log").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


async def test_sigterm_drains_in_flight_requests_then_exits_0(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    path, public, admin = serve_config(tmp_path, backend, delay=2.5, grace=5)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        slow = asyncio.create_task(fetch(client, public + "/slow/3"))
        await eventually(lambda: _is(in_flight(client, admin), 1), message="slow request in flight")

        router.send(signal.SIGTERM)

        async def not_ready() -> bool:
            return (await get(client, admin + "/readyz"))[0] == 503

        await eventually(not_ready, message="/readyz failing during the drain delay")
        assert router.popen.poll() is None
        # During the delay the listener still takes new requests (load balancers lag).
        status, _, _ = await get(client, public + "/during-delay")
        assert status == 200

        assert await slow == (200, "slow done")
        assert await router.wait_exit() == 0
        assert "draining" in router.stderr()
        assert "Traceback" not in router.stderr()

    requests = {(entry["path"], entry["status"]) for entry in access_log(tmp_path)}
    assert ("/slow/3", 200) in requests
    assert ("/during-delay", 200) in requests


@pytest.fixture
async def cancelling_backend() -> AsyncIterator[Backend]:
    """The echo backend, cancelling handlers whose client left (so teardown is quick)."""
    runner = web.AppRunner(echo_app(), handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        yield Backend(f"http://127.0.0.1:{port}", port, runner)
    finally:
        await runner.cleanup()


async def test_request_longer_than_grace_is_cut_and_exit_is_still_0(
    tmp_path: Path, cancelling_backend: Backend, client: ClientSession
) -> None:
    path, public, admin = serve_config(tmp_path, cancelling_backend, delay=0, grace=1)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        slow = asyncio.create_task(fetch(client, public + "/slow/60"))
        await eventually(lambda: _is(in_flight(client, admin), 1), message="slow request in flight")
        router.send(signal.SIGTERM)
        # Far less than the 60 s the backend would take: the grace period cut it.
        assert await router.wait_exit(timeout=20) == 0
        try:
            outcome: object = await asyncio.wait_for(slow, 10)
        except (TimeoutError, ClientError) as exc:
            outcome = exc
        assert outcome != (200, "slow done")
        assert "Traceback" not in router.stderr()


async def test_sigint_drains_like_sigterm(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    path, public, admin = serve_config(tmp_path, backend, delay=0, grace=5)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        slow = asyncio.create_task(fetch(client, public + "/slow/1"))
        await eventually(lambda: _is(in_flight(client, admin), 1), message="slow request in flight")
        router.send(signal.SIGINT)
        assert await slow == (200, "slow done")
        assert await router.wait_exit() == 0
        assert "Traceback" not in router.stderr()


async def test_idle_keepalive_connections_do_not_hold_up_exit(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    # A 60 s grace: if idle keep-alive connections were waited for, exit would take that long.
    path, public, admin = serve_config(tmp_path, backend, delay=0, grace=60)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        for _ in range(3):
            assert (await get(client, public + "/keepalive"))[0] == 200
        router.send(signal.SIGTERM)
        assert await router.wait_exit(timeout=20) == 0


async def _is(value: Any, expected: object) -> bool:
    return bool(await value == expected)
