"""The ``kubernetes`` plugin: routes from the cluster's Ingresses (and, when enabled, its
Gateway API objects), with pod code versions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector

from router.api import ROUTER_IMAGE, Plugin, PluginConfigError, Provider, split_host_port
from router_plugins.kubernetes.apiclient import KubeApi
from router_plugins.kubernetes.credentials import (
    Credentials,
    in_cluster_env,
    load_in_cluster,
    load_kubeconfig,
)
from router_plugins.kubernetes.gateway.status import GatewayStatusWriter
from router_plugins.kubernetes.gateway.translate import RouterListener, Translator
from router_plugins.kubernetes.leader import LeaderElector
from router_plugins.kubernetes.mapping import ClassSelection
from router_plugins.kubernetes.provider import KubernetesProvider
from router_plugins.kubernetes.secrets import SecretCertificates
from router_plugins.kubernetes.selfimage import (
    POD_NAME_ENV,
    learn_router_image,
    own_pod_from_env,
)
from router_plugins.kubernetes.settings import KubernetesSettings, StatusSettings
from router_plugins.kubernetes.status import StatusWriter, published
from router_plugins.kubernetes.tasks import cancel_and_wait
from router_plugins.kubernetes.watch import ClusterWatch
from router_plugins.kubernetes.workersecrets import WorkerSecrets

logger = logging.getLogger("commons_router.kubernetes")


class KubernetesSyncError(OSError):
    """The cluster could not be read at start (an OSError: reported without a traceback)."""


def load_credentials(settings: KubernetesSettings) -> Credentials:
    """Blocking: call in a thread."""
    mode = settings.credentials
    if mode == "in_cluster" or (mode == "auto" and in_cluster_env()):
        return load_in_cluster(settings.service_account_dir)
    return load_kubeconfig(settings.kubeconfig, settings.context)


def router_listeners(
    ports: dict[int, str], listeners: Sequence[tuple[str, str, bool]]
) -> dict[int, RouterListener]:
    """Gateway listener port -> router listener: ``ports`` first, then each router
    listener's own port. ``listeners`` are the router's ``(name, listen, tls)``."""
    by_name = {listener_name: tls for listener_name, _, tls in listeners}
    mapped: dict[int, RouterListener] = {}
    for listener_name, listen, tls in listeners:
        port = split_host_port(listen)[1]
        mapped.setdefault(port, RouterListener(listener_name, tls))
    for port, listener_name in ports.items():
        if listener_name in by_name:
            mapped[port] = RouterListener(listener_name, by_name[listener_name])
    return mapped


class KubernetesPlugin(Plugin[KubernetesSettings]):
    name = "kubernetes"
    config_model = KubernetesSettings
    shares_providers = True
    """With workers, the watches (and the status writer) run once, in the supervisor."""

    _session: ClientSession | None = None
    _cluster: ClusterWatch | None = None
    _provider: KubernetesProvider | None = None
    elector: LeaderElector | None = None
    status_writer: StatusWriter | None = None
    gateway_status_writer: GatewayStatusWriter | None = None
    _status_tasks: tuple[asyncio.Task[None], ...] = ()
    _secrets: SecretCertificates | None = None
    _worker_secrets: WorkerSecrets | None = None
    _self_image: asyncio.Task[str | None] | None = None

    async def start(self) -> None:
        settings = self.config
        known = {spec.name for spec in self.services.router_config.public_listeners()}
        for port, listener_name in settings.gateway_api.ports.items():
            if listener_name not in known:
                raise PluginConfigError(
                    f"no router listener is named {listener_name!r} (listeners: "
                    f"{', '.join(sorted(known))})",
                    ("gateway_api", "ports", port),
                )
        credentials = await asyncio.to_thread(load_credentials, settings)
        # A session of its own: it trusts the cluster CA (and maybe a client certificate).
        self._session = ClientSession(
            connector=TCPConnector(limit=0), timeout=ClientTimeout(total=None)
        )
        api = KubeApi(self._session, credentials)
        own_pod = own_pod_from_env(os.environ)
        if own_pod is not None:  # every process publishes the digest for its own headers
            self._self_image = asyncio.create_task(
                learn_router_image(api, own_pod, ROUTER_IMAGE.publish)
            )
        gateway = None
        if settings.gateway_api.enabled:
            listeners = [
                (spec.name, spec.listen, spec.tls is not None)
                for spec in self.services.router_config.public_listeners()
            ]
            gateway = Translator(
                settings.gateway_api.controller_name,
                router_listeners(settings.gateway_api.ports, listeners),
            )
        if self.services.providers_elsewhere:
            # A worker: the supervisor watches the cluster and sends the routes. TLS is
            # terminated here, so the certificates from Secrets are loaded here too.
            sink = self.services.certificates
            if sink is not None:
                selection = ClassSelection(settings.ingress_class, settings.controller)
                self._worker_secrets = WorkerSecrets(api, settings, sink, selection, gateway)
                self._worker_secrets.start()
            return
        self._cluster = ClusterWatch(api, settings)
        sink = self.services.certificates
        # TLS Secrets are read only when a listener serves TLS.
        self._secrets = SecretCertificates(api, settings, sink) if sink is not None else None
        self._provider = KubernetesProvider(
            self._cluster,
            ClassSelection(settings.ingress_class, settings.controller),
            shared_hosts=settings.shared_hosts,
            host_release_delay=settings.host_release_delay,
            secrets=self._secrets,
            gateway=gateway,
        )
        self._cluster.start()
        if settings.status is not None:
            self._start_status(api, settings.status, settings)
        logger.info(
            "kubernetes: watching %s with %s (class %r, namespaces: %s)",
            credentials.server,
            credentials.description,
            settings.ingress_class,
            ", ".join(settings.namespaces) or "all",
        )
        try:
            await asyncio.wait_for(self._cluster.wait_synced(), settings.sync_timeout)
        except TimeoutError:
            missing = [r.path for r in self._cluster.reflectors if not r.synced.is_set()]
            await self.stop()
            raise KubernetesSyncError(
                f"kubernetes: no complete list from {credentials.server} within "
                f"{settings.sync_timeout:g}s for {', '.join(missing)} (see the log for why)"
            ) from None

    def _start_status(
        self, api: KubeApi, status: StatusSettings, settings: KubernetesSettings
    ) -> None:
        assert self._cluster is not None
        identity = status.identity or (
            f"{os.environ.get(POD_NAME_ENV) or socket.gethostname()}_{secrets.token_hex(4)}"
        )
        self.elector = LeaderElector(
            api,
            status.namespace() or "",
            status.lease_name,
            identity,
            lease_duration=status.lease_duration,
            renew_deadline=status.renew_deadline,
            retry_period=status.retry_period,
        )
        self.status_writer = StatusWriter(
            api,
            self._cluster,
            self.elector,
            ClassSelection(settings.ingress_class, settings.controller),
            status,
        )
        self._status_tasks = (
            asyncio.create_task(self.elector.run(), name="kubernetes leader election"),
            asyncio.create_task(self.status_writer.run(), name="kubernetes ingress status"),
        )
        provider = self._provider
        if settings.gateway_api.enabled and provider is not None:
            cluster = self._cluster

            def objects() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
                snapshot = cluster.snapshot()
                return (
                    dict(snapshot.gateway_classes),
                    dict(snapshot.gateways),
                    dict(snapshot.http_routes),
                )

            self.gateway_status_writer = GatewayStatusWriter(
                api,
                self.elector,
                settings.gateway_api.controller_name,
                lambda: provider.translation,
                provider.translated,
                objects,
                status.retry_period,
                lambda: published(status, cluster.snapshot().services),
            )
            self._status_tasks += (
                asyncio.create_task(
                    self.gateway_status_writer.run(), name="kubernetes gateway api status"
                ),
            )

    async def stop(self) -> None:
        if self._worker_secrets is not None:
            await self._worker_secrets.stop()
            self._worker_secrets = None
        await cancel_and_wait(self._status_tasks)
        self._status_tasks = ()
        if self.elector is not None:
            await self.elector.release()  # another replica takes over at once
            self.elector = None
        if self._secrets is not None:
            await self._secrets.stop()
            self._secrets = None
        if self._self_image is not None:
            self._self_image.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._self_image
            self._self_image = None
        if self._cluster is not None:
            await self._cluster.stop()
            self._cluster = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def providers(self) -> Sequence[Provider]:
        return [self._provider] if self._provider is not None else []
