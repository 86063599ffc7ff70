"""The route provider: rebuilds and publishes the routes whenever the cluster changes."""

from __future__ import annotations

import asyncio
import contextlib
import time

from router.api import ProviderUpdate, Publish, Route
from router_plugins.kubernetes.builder import Changes, RouteBuilder
from router_plugins.kubernetes.gateway.translate import GatewayInputs, Translation, Translator
from router_plugins.kubernetes.mapping import ClassSelection, Cluster, selected_ingresses
from router_plugins.kubernetes.objects import labels_of, name
from router_plugins.kubernetes.resources import GATEWAY_API
from router_plugins.kubernetes.secrets import SecretCertificates, referenced_secrets
from router_plugins.kubernetes.watch import ClusterWatch

COALESCE = 0.1
"""Changes arriving within this time are built into one table."""
_GATEWAY_PLURALS = frozenset(resource.plural for resource in GATEWAY_API)


def served_hosts(routes: tuple[Route, ...]) -> frozenset[str]:
    """The hosts the routes serve ("" for routes of any host)."""
    hosts: set[str] = set()
    for route in routes:
        hosts.update(route.hosts or ("",))
    return frozenset(hosts)


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
        gateway: Translator | None = None,
    ) -> None:
        self._cluster = cluster
        self._selection = selection
        self._builder = RouteBuilder(
            selection, shared_hosts=shared_hosts, host_release_delay=host_release_delay
        )
        self._secrets = secrets
        self._gateway = gateway
        self.translation: Translation | None = None
        """The last Gateway API translation (its status is written by the leader)."""
        self.translated = asyncio.Event()
        """Set after each Gateway API translation."""

    def build(self) -> ProviderUpdate:
        changes = self._cluster.take_changes()
        snapshot = self._cluster.snapshot()
        ingress_changes: Changes | None = changes
        if changes is not None:
            # Gateway API objects never change the Ingress routes.
            ingress_changes = {c for c in changes if c[0] not in _GATEWAY_PLURALS}
        routes, problems = self._builder.build(snapshot, ingress_changes, time.monotonic())
        wanted = referenced_secrets(selected_ingresses(snapshot, self._selection))
        if self._gateway is not None:
            translation = self.translate(snapshot, served_hosts(routes))
            routes = routes + tuple(translation.routes)
            problems = problems + tuple(translation.problems)
            wanted |= translation.secrets
        if self._secrets is not None:
            self._secrets.want(wanted)
        return ProviderUpdate(self.name, routes, problems)

    def translate(self, snapshot: Cluster, ingress_hosts: frozenset[str]) -> Translation:
        assert self._gateway is not None
        translation = self._gateway.translate(
            GatewayInputs(
                classes=snapshot.gateway_classes,
                gateways=snapshot.gateways,
                routes=snapshot.http_routes,
                grants=snapshot.reference_grants,
                services=snapshot.services,
                slices_of=self._builder.slices_of,
                pod_keys_of=self._builder.pod_keys_of,
                pods=snapshot.pods,
                namespace_labels={name(ns): labels_of(ns) for ns in snapshot.namespaces.values()},
                ingress_hosts=ingress_hosts,
                policies=snapshot.router_policies,
            )
        )
        self.translation = translation
        self.translated.set()
        return translation

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
