"""Leader election with a ``coordination.k8s.io/v1`` Lease, as client-go does it.

Every replica tries, every ``retry_period``, to acquire or renew one Lease. A Lease held
by another replica counts as expired only when this replica has seen its record unchanged
for ``lease_duration`` by its own clock (never by comparing clocks across machines). The
leader renews every ``retry_period``; when it could not renew for ``renew_deadline`` (less
than the duration, so it stops before anyone else may start) it stops leading. Writes use
the Lease's ``resourceVersion``: of two replicas racing, one gets a 409 and stays a
follower. On a clean stop the leader releases the Lease (no holder, duration 1 s), so
another replica takes over at its next try instead of after the duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from router_plugins.kubernetes.apiclient import ApiError, KubeApi
from router_plugins.kubernetes.objects import mapping, text
from router_plugins.kubernetes.resources import LEASES

logger = logging.getLogger("commons_router.kubernetes")


def micro_time() -> str:
    """Now as a Kubernetes MicroTime."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
    ) -> None:
        self.api = api
        self.identity = identity
        self.collection = LEASES.path(namespace)
        self.path = f"{self.collection}/{name}"
        self.name = name
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.leading = asyncio.Event()
        """Set while this replica is the leader."""
        self.changed = asyncio.Event()
        """Set whenever leadership is gained or lost."""
        self._record: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._failing = False

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    def _lead(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        if leading:
            self.leading.set()
            logger.info("kubernetes: leading (Lease %s, as %s)", self.path, self.identity)
        else:
            self.leading.clear()
            logger.warning("kubernetes: no longer leading (Lease %s)", self.path)
        self.changed.set()

    async def run(self) -> None:
        while True:
            try:
                acquired = await self.try_acquire_or_renew()
                if self._failing:
                    logger.info("kubernetes: Lease %s can be read and written again", self.path)
                    self._failing = False
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                acquired = False
                if not self._failing:
                    logger.warning("kubernetes: Lease %s: %s; trying again", self.path, exc)
                    self._failing = True
            now = time.monotonic()
            if acquired:
                self._renewed_at = now
                self._lead(True)
            elif self.is_leader and (
                self._holder() != self.identity or now - self._renewed_at >= self.renew_deadline
            ):
                self._lead(False)
            delay = self.retry_period
            if not self.is_leader:
                delay *= 1 + random.uniform(0, 0.2)  # noqa: S311 (followers do not retry in step)
            await asyncio.sleep(delay)

    def _holder(self) -> str:
        return self._record[0] if self._record else ""

    async def try_acquire_or_renew(self) -> bool:
        now = micro_time()
        try:
            lease = await self.api.call("GET", self.path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return await self._create(now)
        spec = mapping(lease.get("spec"))
        holder = text(spec.get("holderIdentity"))
        record = (holder, text(spec.get("renewTime")))
        monotonic = time.monotonic()
        if record != self._record:
            self._record, self._observed_at = record, monotonic
        duration = spec.get("leaseDurationSeconds")
        duration = duration if isinstance(duration, int) and duration > 0 else self.lease_duration
        if holder and holder != self.identity and monotonic - self._observed_at < duration:
            return False
        transitions = spec.get("leaseTransitions")
        transitions = transitions if isinstance(transitions, int) else 0
        mine = holder == self.identity
        lease["spec"] = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": spec.get("acquireTime") if mine else now,
            "renewTime": now,
            "leaseTransitions": transitions if mine else transitions + 1,
        }
        return await self._write("PUT", self.path, lease)

    async def _create(self, now: str) -> bool:
        lease: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_duration)),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        return await self._write("POST", self.collection, lease)

    async def _write(self, method: str, path: str, lease: dict[str, Any]) -> bool:
        try:
            written = await self.api.call(method, path, lease)
        except ApiError as exc:
            if exc.status == 409:
                return False  # another replica wrote first
            raise
        spec = mapping(written.get("spec"))
        self._record = (text(spec.get("holderIdentity")), text(spec.get("renewTime")))
        self._observed_at = time.monotonic()
        return True

    async def release(self) -> None:
        """Give the Lease up now (when stopping), so another replica takes over at once."""
        if not self.is_leader:
            return
        self._lead(False)
        with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError, ValueError):
            lease = await self.api.call("GET", self.path, deadline=2.0)
            spec = mapping(lease.get("spec"))
            if text(spec.get("holderIdentity")) != self.identity:
                return
            now = micro_time()
            lease["spec"] = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            await self.api.call("PUT", self.path, lease, deadline=2.0)
            logger.info("kubernetes: released Lease %s", self.path)
