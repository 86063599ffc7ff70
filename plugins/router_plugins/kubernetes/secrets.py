"""TLS certificates from ``kubernetes.io/tls`` Secrets named by our Ingresses' ``spec.tls``.

Only the Secrets referenced are read: each is listed and watched by name
(``fieldSelector=metadata.name=…`` in its namespace), started when an Ingress of our class
first names it and stopped when none does any more. The certificate names served come from
the certificate's SAN, never from ``spec.tls[].hosts``: an Ingress cannot make the router
present a certificate for a host the certificate does not cover.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Iterable

from router.api import CertificateSink
from router_plugins.kubernetes.apiclient import KubeApi
from router_plugins.kubernetes.objects import Obj, items, mapping, namespace, text
from router_plugins.kubernetes.reflector import Backoff, Reflector
from router_plugins.kubernetes.resources import SECRETS
from router_plugins.kubernetes.settings import KubernetesSettings
from router_plugins.kubernetes.tasks import cancel_and_wait

logger = logging.getLogger("commons_router.kubernetes")

TLS_TYPE = "kubernetes.io/tls"


def secret_source(secret_key: str) -> str:
    return f"secret:{secret_key}"


def referenced_secrets(ingresses: Iterable[Obj]) -> set[str]:
    """``namespace/name`` of every Secret named by the Ingresses' ``spec.tls``."""
    wanted = set()
    for ingress in ingresses:
        for entry in items(mapping(ingress.get("spec")).get("tls")):
            secret_name = text(entry.get("secretName"))
            if secret_name:
                wanted.add(f"{namespace(ingress)}/{secret_name}")
    return wanted


def tls_pair(secret: Obj) -> tuple[bytes, bytes] | str:
    """The Secret's (chain, key) PEM, or why it has none."""
    kind = text(secret.get("type"))
    if kind != TLS_TYPE:
        return f"the Secret is of type {kind or '(none)'!r}, not {TLS_TYPE!r}"
    data = mapping(secret.get("data"))
    pair = []
    for field in ("tls.crt", "tls.key"):
        value = text(data.get(field))
        if not value:
            return f"the Secret has no {field}"
        try:
            pair.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return f"the Secret's {field} is not valid base64"
    return pair[0], pair[1]


class SecretCertificates:
    """Keeps the certificate store in step with the referenced Secrets."""

    def __init__(self, api: KubeApi, settings: KubernetesSettings, sink: CertificateSink) -> None:
        self._api = api
        self._settings = settings
        self._sink = sink
        self._watches: dict[str, tuple[Reflector[Obj], asyncio.Task[None]]] = {}

    def want(self, wanted: set[str]) -> None:
        """Watch exactly ``wanted`` (``namespace/name`` keys) from now on."""
        for secret_key in sorted(wanted - self._watches.keys()):
            self._start(secret_key)
        for secret_key in sorted(self._watches.keys() - wanted):
            _, task = self._watches.pop(secret_key)
            task.cancel()
            self._sink.remove(secret_source(secret_key))

    def _start(self, secret_key: str) -> None:
        secret_namespace, _, secret_name = secret_key.partition("/")
        settings = self._settings
        reflector: Reflector[Obj] = Reflector(
            self._api,
            SECRETS,
            secret_namespace,
            lambda obj: obj,
            lambda _changed: self._apply(secret_key),
            field_selector=f"metadata.name={secret_name}",
            page_size=settings.page_size,
            watch_timeout=settings.watch_timeout,
            backoff=Backoff(settings.backoff_initial, settings.backoff_max),
        )
        task = asyncio.create_task(reflector.run(), name=f"kubernetes secret {secret_key}")
        self._watches[secret_key] = (reflector, task)

    def _apply(self, secret_key: str) -> None:
        watch = self._watches.get(secret_key)
        if watch is None:
            return
        source = secret_source(secret_key)
        secret = watch[0].store.get(secret_key)
        if secret is None:
            self._sink.remove(source)
            self._sink.fail(source, "the Secret named by an Ingress spec.tls does not exist")
            return
        pair = tls_pair(secret)
        if isinstance(pair, str):
            self._sink.fail(source, pair)
        else:
            self._sink.put(source, *pair)

    async def stop(self) -> None:
        tasks = [task for _, task in self._watches.values()]
        self._watches.clear()
        await cancel_and_wait(tasks)
