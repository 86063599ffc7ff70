"""The route provider: rebuilds and publishes the routes whenever the cluster changes."""

from __future__ import annotations

import asyncio
import contextlib
import time

from router.api import ProviderUpdate, Publish
from router_plugins.kubernetes.builder import RouteBuilder
from router_plugins.kubernetes.mapping import ClassSelection, selected_ingresses
from router_plugins.kubernetes.secrets import SecretCertificates, referenced_secrets
from router_plugins.kubernetes.watch import ClusterWatch

COALESCE = 0.1
"""Changes arriving within this time are built into one table."""


class KubernetesProvider:
    name = "kubernetes"

    def __init__(
        self,
        cluster: ClusterWatch,
        selection: ClassSelection,
        *,
        shared_hosts: bool = False,
        host_release_delay: float = 300.0,
        secrets: SecretCertificates | None = None,
    ) -> None:
        self._cluster = cluster
        self._selection = selection
        self._builder = RouteBuilder(
            selection, shared_hosts=shared_hosts, host_release_delay=host_release_delay
        )
        self._secrets = secrets

    def build(self) -> ProviderUpdate:
        changes = self._cluster.take_changes()
        snapshot = self._cluster.snapshot()
        routes, problems = self._builder.build(snapshot, changes, time.monotonic())
        if self._secrets is not None:
            self._secrets.want(referenced_secrets(selected_ingresses(snapshot, self._selection)))
        return ProviderUpdate(self.name, routes, problems)

    async def run(self, publish: Publish) -> None:
        changed = self._cluster.changed
        await self._cluster.wait_synced()
        while True:
            publish(self.build())
            release = self._builder.next_release()
            wait = None if release is None else max(0.0, release - time.monotonic())
            with contextlib.suppress(TimeoutError):
                # Also when a host's hold runs out: who owns it is decided again.
                await asyncio.wait_for(changed.wait(), wait)
            await asyncio.sleep(COALESCE)
