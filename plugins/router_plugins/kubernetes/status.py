"""``status.loadBalancer.ingress`` of the Ingresses the router serves, written by the leader.

What to publish is either configured (``status.addresses``) or copied from the router's
own Service (its ``status.loadBalancer.ingress``, as the cloud's load balancer sets it).
Only the replica holding the Lease (:mod:`.leader`) writes; it compares with each
Ingress's current status first and patches only those that differ, with a JSON merge
patch on the ``status`` subresource (which cannot change anything else).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from router_plugins.kubernetes.apiclient import ApiError, KubeApi
from router_plugins.kubernetes.leader import LeaderElector
from router_plugins.kubernetes.mapping import ClassSelection, selected_ingresses
from router_plugins.kubernetes.objects import (
    Obj,
    items,
    key,
    mapping,
    name,
    namespace,
    resource_version,
    text,
)
from router_plugins.kubernetes.resources import INGRESSES
from router_plugins.kubernetes.settings import StatusSettings
from router_plugins.kubernetes.watch import ClusterWatch

logger = logging.getLogger("commons_router.kubernetes")

Address = dict[str, str]


def _entries(value: object) -> list[Address]:
    """``ip``/``hostname`` of each LoadBalancerIngress entry (other fields are not ours)."""
    found = []
    for entry in items(value):
        address = {k: text(entry.get(k)) for k in ("ip", "hostname") if text(entry.get(k))}
        if address:
            found.append(address)
    return found


def published(settings: StatusSettings, services: Mapping[str, Obj]) -> list[Address] | None:
    """The addresses to publish; None while the router's Service is not known."""
    if settings.addresses:
        result = []
        for address in settings.addresses:
            try:
                ipaddress.ip_address(address)
                result.append({"ip": address})
            except ValueError:
                result.append({"hostname": address})
        return result
    service = services.get(settings.service or "")
    if service is None:
        return None
    load_balancer = mapping(mapping(service.get("status")).get("loadBalancer"))
    return _entries(load_balancer.get("ingress"))


def current(ingress: Obj) -> list[Address]:
    return _entries(mapping(mapping(ingress.get("status")).get("loadBalancer")).get("ingress"))


def stale(ingresses: Iterable[Obj], wanted: list[Address]) -> list[Obj]:
    """The Ingresses whose published addresses are not ``wanted``."""
    return [ingress for ingress in ingresses if current(ingress) != wanted]


class StatusWriter:
    def __init__(
        self,
        api: KubeApi,
        cluster: ClusterWatch,
        elector: LeaderElector,
        selection: ClassSelection,
        settings: StatusSettings,
    ) -> None:
        self._api = api
        self._cluster = cluster
        self._elector = elector
        self._selection = selection
        self._settings = settings
        self._pending: dict[str, tuple[str, list[Address]]] = {}
        """Ingress key -> (its resource version before our write, what we wrote): until the
        watch shows the write, the Ingress is not written again."""
        self.writes = 0

    async def run(self) -> None:
        await self._cluster.wait_synced()
        touched = self._cluster.touched
        while True:
            await self._elector.leading.wait()
            touched.clear()
            try:
                await self.sync()
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.warning("kubernetes: writing Ingress status: %s; trying again", exc)
                await asyncio.sleep(self._settings.retry_period)
                continue
            changed = self._elector.changed
            changed.clear()
            waits = [asyncio.ensure_future(touched.wait()), asyncio.ensure_future(changed.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            if not self._elector.is_leader:
                self._pending.clear()  # a leader to be again writes from scratch
            await asyncio.sleep(0.1)  # coalesce a burst of changes

    async def sync(self) -> None:
        snapshot = self._cluster.snapshot()
        wanted = published(self._settings, snapshot.services)
        if wanted is None:
            return
        ingresses = selected_ingresses(snapshot, self._selection)
        for ingress in stale(ingresses, wanted):
            if not self._elector.is_leader:
                return
            ingress_key = key(ingress)
            pending = self._pending.get(ingress_key)
            if pending is not None and pending == (resource_version(ingress), wanted):
                continue  # our write is on its way
            await self._write(ingress, wanted)
            self._pending[ingress_key] = (resource_version(ingress), wanted)
        if len(self._pending) > 2 * len(ingresses) + 16:
            self._pending = {k: v for k, v in self._pending.items() if k in snapshot.ingresses}

    async def _write(self, ingress: Obj, wanted: list[Address]) -> None:
        path = f"{INGRESSES.path(namespace(ingress))}/{name(ingress)}/status"
        patch: dict[str, Any] = {"status": {"loadBalancer": {"ingress": wanted}}}
        try:
            await self._api.call("PATCH", path, patch, content_type="application/merge-patch+json")
        except ApiError as exc:
            if exc.status == 404:
                return  # deleted meanwhile
            raise
        self.writes += 1
