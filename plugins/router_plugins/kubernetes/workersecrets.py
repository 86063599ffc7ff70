"""TLS Secrets in a worker process (``workers > 1``).

The supervisor watches the cluster once and sends every worker its routes, but each worker
terminates TLS itself, so the certificates must be loaded in the worker. A worker watches
only what that needs: Ingresses and IngressClasses (to know which Secrets our Ingresses
name in ``spec.tls``), with the Gateway API also GatewayClasses, Gateways and
ReferenceGrants (the Secrets of our Gateways' HTTPS listeners), and, by name, those
Secrets.
"""

from __future__ import annotations

import asyncio
from typing import Any

from router.api import CertificateSink
from router_plugins.kubernetes.apiclient import KubeApi
from router_plugins.kubernetes.gateway.translate import GatewayInputs, Translator
from router_plugins.kubernetes.mapping import ClassSelection, Cluster, selected_ingresses
from router_plugins.kubernetes.objects import Obj
from router_plugins.kubernetes.reflector import Backoff, Reflector
from router_plugins.kubernetes.resources import (
    GATEWAY_CLASSES,
    GATEWAYS,
    INGRESS_CLASSES,
    INGRESSES,
    REFERENCE_GRANTS,
    Resource,
)
from router_plugins.kubernetes.secrets import SecretCertificates, referenced_secrets
from router_plugins.kubernetes.settings import KubernetesSettings
from router_plugins.kubernetes.tasks import cancel_and_wait
from router_plugins.kubernetes.watch import slim


class WorkerSecrets:
    def __init__(
        self,
        api: KubeApi,
        settings: KubernetesSettings,
        sink: CertificateSink,
        selection: ClassSelection,
        gateway: Translator | None = None,
    ) -> None:
        self._selection = selection
        self._gateway = gateway
        self._changed = asyncio.Event()
        self._secrets = SecretCertificates(api, settings, sink)

        def reflector(resource: Resource, namespace: str | None) -> Reflector[Obj]:
            return Reflector(
                api,
                resource,
                namespace,
                slim,
                lambda _key: self._changed.set(),
                page_size=settings.page_size,
                watch_timeout=settings.watch_timeout,
                backoff=Backoff(settings.backoff_initial, settings.backoff_max),
            )

        namespaces: list[str | None] = list(settings.namespaces) or [None]
        self._ingresses = [reflector(INGRESSES, ns) for ns in namespaces]
        self._classes = [reflector(INGRESS_CLASSES, None)]
        self._gateway_api: list[Reflector[Obj]] = []
        if gateway is not None:
            self._gateway_api = [
                reflector(GATEWAY_CLASSES, None),
                *(reflector(GATEWAYS, ns) for ns in namespaces),
                *(reflector(REFERENCE_GRANTS, ns) for ns in namespaces),
            ]
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def _reflectors(self) -> tuple[Reflector[Obj], ...]:
        return (*self._ingresses, *self._classes, *self._gateway_api)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(r.run(), name=f"kubernetes watch {r.path} (tls)")
            for r in self._reflectors
        ]
        self._tasks.append(asyncio.create_task(self._follow(), name="kubernetes tls secrets"))

    async def _follow(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if not all(r.synced.is_set() for r in self._reflectors):
                continue  # a partial list would drop Secrets still named
            cluster = Cluster(
                ingresses={k: v for r in self._ingresses for k, v in r.store.items()},
                ingress_classes=dict(self._classes[0].store),
            )
            wanted = referenced_secrets(selected_ingresses(cluster, self._selection))
            if self._gateway is not None:
                wanted |= self._gateway_secrets()
            self._secrets.want(wanted)

    def _gateway_secrets(self) -> set[str]:
        assert self._gateway is not None
        stores: dict[str, dict[str, Obj]] = {}
        for r in self._gateway_api:
            stores.setdefault(r.path.rsplit("/", 1)[-1], {}).update(r.store)
        translation = self._gateway.translate(
            GatewayInputs(
                classes=stores.get(GATEWAY_CLASSES.plural, {}),
                gateways=stores.get(GATEWAYS.plural, {}),
                grants=stores.get(REFERENCE_GRANTS.plural, {}),
            )
        )
        return translation.secrets

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._secrets.stop()
