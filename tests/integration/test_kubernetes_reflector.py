"""One reflector (list + watch of one resource) against the test API server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientSession

from router_plugins.kubernetes.apiclient import KubeApi
from router_plugins.kubernetes.credentials import Credentials
from router_plugins.kubernetes.objects import Obj, name
from router_plugins.kubernetes.reflector import Backoff, Reflector
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
            backoff=Backoff(0.01, 0.05),
            **options,
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
