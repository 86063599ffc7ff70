"""All the reflectors the provider needs, and the cluster state they add up to."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from router_plugins.kubernetes.apiclient import KubeApi
from router_plugins.kubernetes.builder import Changes
from router_plugins.kubernetes.mapping import Cluster
from router_plugins.kubernetes.objects import Obj
from router_plugins.kubernetes.reflector import Backoff, Reflector
from router_plugins.kubernetes.resources import (
    ENDPOINT_SLICES,
    GATEWAY_CLASSES,
    GATEWAYS,
    HTTP_ROUTES,
    INGRESS_CLASSES,
    INGRESSES,
    NAMESPACES,
    PODS,
    REFERENCE_GRANTS,
    ROUTER_POLICIES,
    SERVICES,
    Resource,
)
from router_plugins.kubernetes.settings import KubernetesSettings
from router_plugins.kubernetes.tasks import cancel_and_wait
from router_plugins.kubernetes.version import PodInfo, pod_info

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(obj: Obj) -> Obj:
    """The object without what the routes never use and that can be large: the field
    managers' records and kubectl's copy of the last applied object."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not (
        "managedFields" in meta or LAST_APPLIED in (meta.get("annotations") or {})
    ):
        return obj
    meta = {k: v for k, v in meta.items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**obj, "metadata": meta}


class ClusterWatch:
    """Lists and watches Ingress, IngressClass, Service, EndpointSlice and Pod (and the
    Gateway API objects when enabled)."""

    def __init__(self, api: KubeApi, settings: KubernetesSettings) -> None:
        self.changed = asyncio.Event()
        """Set at every change; cleared by :meth:`take_changes` (the route provider)."""
        self.touched = asyncio.Event()
        """Set at every change; cleared by the Ingress status writer."""
        self._changes: Changes | None = None
        """What changed since :meth:`take_changes`; None: anything may have."""
        namespaces: list[str | None] = list(settings.namespaces) or [None]

        def reflector(
            resource: Resource,
            namespace: str | None,
            transform: Callable[[Obj], Any],
            label_selector: str | None = None,
        ) -> Reflector[Any]:
            return Reflector(
                api,
                resource,
                namespace,
                transform,
                lambda obj_key: self._note(resource.plural, obj_key),
                label_selector=label_selector,
                page_size=settings.page_size,
                watch_timeout=settings.watch_timeout,
                backoff=Backoff(settings.backoff_initial, settings.backoff_max),
            )

        self.ingresses: list[Reflector[Obj]] = [reflector(INGRESSES, ns, slim) for ns in namespaces]
        self.ingress_classes: list[Reflector[Obj]] = [reflector(INGRESS_CLASSES, None, slim)]
        service_namespaces = list(namespaces)
        own = settings.status.service if settings.status is not None else None
        if own is not None and None not in namespaces:
            own_namespace = own.partition("/")[0]
            if own_namespace not in service_namespaces:
                # The router's own Service, whose load-balancer status is published.
                service_namespaces.append(own_namespace)
        self.services: list[Reflector[Obj]] = [
            reflector(SERVICES, ns, slim) for ns in service_namespaces
        ]
        self.slices: list[Reflector[Obj]] = [
            reflector(ENDPOINT_SLICES, ns, slim) for ns in namespaces
        ]
        self.pods: list[Reflector[PodInfo]] = [
            reflector(PODS, ns, pod_info, settings.pod_label_selector) for ns in namespaces
        ]
        gateway_api = settings.gateway_api.enabled
        self.gateway_classes: list[Reflector[Obj]] = (
            [reflector(GATEWAY_CLASSES, None, slim)] if gateway_api else []
        )
        self.gateways: list[Reflector[Obj]] = (
            [reflector(GATEWAYS, ns, slim) for ns in namespaces] if gateway_api else []
        )
        self.http_routes: list[Reflector[Obj]] = (
            [reflector(HTTP_ROUTES, ns, slim) for ns in namespaces] if gateway_api else []
        )
        self.reference_grants: list[Reflector[Obj]] = (
            [reflector(REFERENCE_GRANTS, ns, slim) for ns in namespaces] if gateway_api else []
        )
        self.router_policies: list[Reflector[Obj]] = (
            [reflector(ROUTER_POLICIES, ns, slim) for ns in namespaces] if gateway_api else []
        )
        self.namespaces: list[Reflector[Obj]] = (
            [reflector(NAMESPACES, None, slim)] if gateway_api else []
        )
        self.reflectors: list[Reflector[Any]] = [
            *self.ingresses,
            *self.ingress_classes,
            *self.services,
            *self.slices,
            *self.pods,
            *self.gateway_classes,
            *self.gateways,
            *self.http_routes,
            *self.reference_grants,
            *self.router_policies,
            *self.namespaces,
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def _note(self, plural: str, obj_key: str | None) -> None:
        if obj_key is None:
            self._changes = None
        elif self._changes is not None:
            self._changes.add((plural, obj_key))
        self.changed.set()
        self.touched.set()

    def take_changes(self) -> Changes | None:
        """The changes since the last call (None: rebuild everything), and start anew."""
        changes, self._changes = self._changes, set()
        self.changed.clear()
        return changes

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(r.run(), name=f"kubernetes watch {r.path}") for r in self.reflectors
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def wait_synced(self) -> None:
        for r in self.reflectors:
            await r.synced.wait()

    def snapshot(self) -> Cluster:
        def merged(reflectors: list[Reflector[Any]]) -> dict[str, Any]:
            if not reflectors:
                return {}
            if len(reflectors) == 1:
                return reflectors[0].store
            result: dict[str, Any] = {}
            for r in reflectors:
                result.update(r.store)
            return result

        return Cluster(
            ingresses=merged(self.ingresses),
            ingress_classes=merged(self.ingress_classes),
            services=merged(self.services),
            slices=merged(self.slices),
            pods=merged(self.pods),
            gateway_classes=merged(self.gateway_classes),
            gateways=merged(self.gateways),
            http_routes=merged(self.http_routes),
            reference_grants=merged(self.reference_grants),
            router_policies=merged(self.router_policies),
            namespaces=merged(self.namespaces),
        )
