"""SIGTERM/SIGINT drain of a real ``commons-router serve`` process."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientError, ClientSession, ClientTimeout, web

from router.testing import Backend
from tests.support.backends import echo_app
from tests.support.processes import base_config, eventually, get, started, write_config
from tests.support.rawhttp import READ_LIMIT, RawResponse, parse_responses, request_bytes


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


async def test_request_longer_than_grace_is_cut_at_grace_and_exit_is_still_0(
    tmp_path: Path, cancelling_backend: Backend, client: ClientSession
) -> None:
    grace = 4.0
    path, public, admin = serve_config(tmp_path, cancelling_backend, delay=0, grace=grace)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        slow = asyncio.create_task(fetch(client, public + "/slow/60"))
        await eventually(lambda: _is(in_flight(client, admin), 1), message="slow request in flight")
        router.send(signal.SIGTERM)
        sent = time.monotonic()
        try:
            outcome: object = await asyncio.wait_for(slow, 30)
        except (TimeoutError, ClientError) as exc:
            outcome = exc
        cut_after = time.monotonic() - sent
        assert isinstance(outcome, ClientError), outcome
        # Bounds, not a measurement: never before the grace is over, and well before the
        # twice-the-grace an aiohttp shutdown would take.
        assert grace - 0.5 <= cut_after < 1.5 * grace, cut_after
        assert await router.wait_exit(timeout=20) == 0
        assert "cutting 1 connection(s) in flight" in router.stderr()
        assert "Traceback" not in router.stderr()


class KeepAliveConnection:
    """One client connection reused for request after request, as a browser's would be."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""

    @classmethod
    async def open(cls, port: int) -> KeepAliveConnection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, path: str) -> None:
        self.writer.write(request_bytes("GET", path, close=False))
        await self.writer.drain()

    async def answer(self) -> RawResponse:
        while not (responses := parse_responses(self.buffer)):
            chunk = await asyncio.wait_for(self.reader.read(65536), READ_LIMIT)
            assert chunk, f"connection closed without an answer; got {self.buffer!r}"
            self.buffer += chunk
        self.buffer = b""
        assert len(responses) == 1
        return responses[0]

    async def ask(self, path: str) -> RawResponse:
        await self.send(path)
        return await self.answer()

    async def closed_by_router(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), READ_LIMIT) == b""

    def close(self) -> None:
        self.writer.close()


async def test_answers_during_the_drain_say_connection_close(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    path, public, admin = serve_config(tmp_path, backend, delay=3, grace=2)
    port = int(public.rpartition(":")[2])
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        connections = [await KeepAliveConnection.open(port) for _ in range(3)]
        for connection in connections:
            answer = await connection.ask("/before")
            assert answer.status == 200
            assert "Connection" not in answer.headers  # HTTP/1.1 keep-alive
        in_flight_at_sigterm = await KeepAliveConnection.open(port)
        await in_flight_at_sigterm.send("/slow/1")
        await eventually(lambda: _is(in_flight(client, admin), 1), message="slow request in flight")

        router.send(signal.SIGTERM)
        await eventually(lambda: _is(_status(client, admin + "/readyz"), 503), message="draining")
        for connection in [*connections, await KeepAliveConnection.open(port)]:
            answer = await connection.ask("/during-delay")
            assert answer.status == 200
            assert answer.headers["Connection"] == "close"
            assert await connection.closed_by_router()
            connection.close()
        answer = await in_flight_at_sigterm.answer()
        assert (answer.status, answer.body) == (200, b"slow done")
        assert answer.headers["Connection"] == "close"
        assert await in_flight_at_sigterm.closed_by_router()
        in_flight_at_sigterm.close()
        assert await router.wait_exit() == 0


async def test_keepalive_clients_move_off_during_the_drain_without_errors(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    """Clients that go elsewhere once told ``Connection: close`` (as behind a load balancer)
    never see a request fail: none is sent on a connection the router is closing."""
    path, public, admin = serve_config(tmp_path, backend, delay=1.5, grace=1)
    errors: list[BaseException] = []
    answered = [0] * 8

    async def keepalive_client(index: int) -> None:
        async with ClientSession(timeout=ClientTimeout(total=READ_LIMIT)) as session:
            while True:
                try:
                    async with session.get(f"{public}/client/{index}") as response:
                        await response.read()
                except (ClientError, TimeoutError) as exc:
                    errors.append(exc)
                    return
                assert response.status == 200
                answered[index] += 1
                if response.headers.get("Connection") == "close":
                    return
                await asyncio.sleep(0.01)

    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        clients = [asyncio.create_task(keepalive_client(i)) for i in range(len(answered))]
        await eventually(lambda: _true(all(answered)), message="every client answered")
        router.send(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*clients), 15)
        assert errors == []
        assert await router.wait_exit() == 0


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


async def _true(value: bool) -> bool:
    return value


async def _status(client: ClientSession, url: str) -> int:
    return (await get(client, url))[0]
