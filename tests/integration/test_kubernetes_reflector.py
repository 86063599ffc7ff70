"""One reflector (list + watch of one resource) against the test API server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession

from router_plugins.kubernetes.apiclient import KubeApi
from router_plugins.kubernetes.credentials import Credentials
from router_plugins.kubernetes.objects import Obj, name
from router_plugins.kubernetes.reflector import FORBIDDEN_RETRIES, Backoff, Reflector
from router_plugins.kubernetes.resources import PODS
from tests.support.kubeapi import KubeApiServer, run_kube_api
from tests.support.kubecluster import app_objects, eventually


async def token() -> str:
    return "test-token"


@contextlib.asynccontextmanager
async def reflecting(
    api: KubeApiServer, url: str, transform: Any, **options: Any
) -> AsyncIterator[Reflector[Any]]:
    async with ClientSession() as session:
        client = KubeApi(session, Credentials(url, None, token, "test"))
        reflector: Reflector[Any] = Reflector(
            client,
            PODS,
            None,
            transform,
            lambda _key: None,
            **{"backoff": Backoff(0.01, 0.05), **options},
        )
        task = asyncio.create_task(reflector.run())
        try:
            yield reflector
        finally:
            api.close_watches()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_an_unexpected_failure_does_not_stop_the_watch() -> None:
    failures = 0

    def flaky(obj: Obj) -> str:
        nonlocal failures
        if name(obj) == "app-1" and failures < 2:
            failures += 1
            raise RuntimeError("transform bug")
        return name(obj)

    async with run_kube_api() as (api, server):
        api.apply(*app_objects(8080, "app-0"))
        async with reflecting(api, server.url, flaky) as reflector:
            await asyncio.wait_for(reflector.synced.wait(), 10)
            assert sorted(reflector.store.values()) == ["app-0", "app-1", "app-2"]
            assert failures == 2
            api.delete("Pod", "team-a", "app-2")

            async def deleted() -> bool:
                return "team-a/app-2" not in reflector.store

            await eventually(deleted, "the watch still follows changes")


async def test_expired_continue_token_restarts_the_list() -> None:
    async with run_kube_api() as (api, server):
        api.apply(*app_objects(8080, "app-0"))
        api.expire_next_continue_token()
        async with reflecting(api, server.url, name, page_size=1) as reflector:
            await asyncio.wait_for(reflector.synced.wait(), 10)
            assert sorted(reflector.store.values()) == ["app-0", "app-1", "app-2"]
        lists = api.calls_of("list")
        # The expired token got a 410; the list started again from the first page.
        assert [("continue" in c.params) for c in lists[:5]] == [False, True, False, True, True]
        assert reflector.lists == 1



def retry_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The delays the reflector logged, in order."""
    return [
        float(record.getMessage().rpartition("retrying in ")[2].rstrip("s"))
        for record in caplog.records
        if "retrying in" in record.getMessage()
    ]


async def test_a_complete_list_or_a_live_watch_makes_the_retry_delay_small_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "commons_router.kubernetes")

    def retried(times: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(retry_delays(caplog)) >= times

        return check

    async def watching() -> bool:
        return len(api.watches) == 1

    # Delays are logged rounded to 0.1 s; 0.05 s is the first delay, 0.4 s the fifth.
    async with run_kube_api() as (api, server):
        api.apply(*app_objects(8080, "app-0"))
        api.fail_next(4, 503, "list")  # an outage at start: four failures, delays growing
        async with reflecting(api, server.url, name, backoff=Backoff(0.05, 10.0)) as reflector:
            await asyncio.wait_for(reflector.synced.wait(), 10)
            # The list worked: the next failure is retried after the first, short delay.
            await eventually(watching, "the watch is open")
            api.drop_watches()
            await eventually(retried(5), "the dropped watch is retried")
            assert retry_delays(caplog)[4] <= 0.1
            # A watch outage (the list is kept, no relist), then a watch that delivers.
            api.fail_next(3, 503, "watch")
            await eventually(watching, "the watch is open")
            api.drop_watches()
            await eventually(retried(9), "the watch outage")
            api.delete("Pod", "team-a", "app-2")

            async def deleted() -> bool:
                return "team-a/app-2" not in reflector.store

            await eventually(deleted, "the watch is live again")
            await eventually(watching, "the watch is open")
            api.drop_watches()
            await eventually(retried(10), "the dropped watch is retried")
            assert retry_delays(caplog)[9] <= 0.1
            assert len(api.calls_of("list")) == 1


async def test_a_403_after_access_worked_is_retried_soon_a_bounded_number_of_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "commons_router.kubernetes")

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]

    async with run_kube_api() as (api, server):
        api.apply(*app_objects(8080, "app-0"))
        async with reflecting(api, server.url, name, backoff=Backoff(0.05, 10.0)) as reflector:
            await asyncio.wait_for(reflector.synced.wait(), 10)

            async def watching() -> bool:
                return len(api.watches) == 1

            await eventually(watching, "the watch is open")
            # The API server restarts: its authorizer refuses requests for a moment.
            api.fail_next(FORBIDDEN_RETRIES, 403, "watch")
            api.drop_watches()

            async def retried(times: int) -> bool:
                return len(messages()) >= times

            await eventually(lambda: retried(FORBIDDEN_RETRIES + 1), "the 403s are retried")
            forbidden = messages()[1:]
            assert all("although access worked before" in m for m in forbidden)
            assert all("ClusterRole" not in m for m in forbidden)
            # The delay does not grow: every retry waits the first, short delay.
            assert all(m.endswith("in 0.1s") or m.endswith("in 0.0s") for m in forbidden)
            assert f"retry {FORBIDDEN_RETRIES} of {FORBIDDEN_RETRIES}" in forbidden[-1]
            api.delete("Pod", "team-a", "app-2")

            async def deleted() -> bool:
                return "team-a/app-2" not in reflector.store

            await eventually(deleted, "the watch works again")
            # Refused for longer than that: a permission problem, said so.
            await eventually(watching, "the watch is open")
            api.fail_next(FORBIDDEN_RETRIES + 1, 403, "watch")
            api.drop_watches()
            await eventually(lambda: retried(2 * FORBIDDEN_RETRIES + 3), "the 403s exhaust")
            assert "check the service account and its ClusterRole" in messages()[-1]
            assert len(api.calls_of("list")) == 1


async def test_failures_are_described_plainly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "commons_router.kubernetes")
    async with run_kube_api() as (api, server):
        api.apply(*app_objects(8080, "app-0"))
        async with reflecting(api, server.url, name) as reflector:
            await asyncio.wait_for(reflector.synced.wait(), 10)

            async def watching() -> bool:
                return len(api.watches) == 1

            await eventually(watching, "the watch is open")
            api.drop_watches()  # the stream is cut in the middle of its chunked body

            async def logged() -> bool:
                return any("retrying" in r.getMessage() for r in caplog.records)

            await eventually(logged, "the cut stream is logged")
    (line,) = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert "the connection closed before the end of the response" in line
    # Not aiohttp's wording, whose "TransferEncodingError: 400" reads like an HTTP 400.
    assert "400" not in line
    assert "TransferEncodingError" not in line


async def test_an_unreachable_server_is_described_plainly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "commons_router.kubernetes")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    async with run_kube_api() as (api, _):
        async with reflecting(api, f"http://127.0.0.1:{port}", name):

            async def logged() -> bool:
                return any("retrying" in r.getMessage() for r in caplog.records)

            await eventually(logged, "the failure is logged")
    line = next(r.getMessage() for r in caplog.records if "retrying" in r.getMessage())
    assert f"cannot connect to 127.0.0.1:{port}" in line
    assert "ssl:" not in line
