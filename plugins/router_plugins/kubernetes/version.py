"""The code version of the pod behind an endpoint, for access logs and provenance.

Only what the pod states is reported; a pod that states nothing is marked unknown, never
guessed from a tag.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from router_plugins.kubernetes.objects import (
    Obj,
    annotations_of,
    items,
    labels_of,
    mapping,
    name,
    namespace,
    text,
)

PREFIX = "commons-router.io/"
UNKNOWN = {"code": "unknown"}


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str
    image_digest: str
    ports: frozenset[int]


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the provider keeps of a pod: the fields that say which code it runs."""

    namespace: str
    name: str
    node: str
    containers: tuple[Container, ...]
    stated: tuple[tuple[str, str], ...]
    """Version fields from labels and annotations (repository, commit, version)."""
    container_hint: str


def image_digest(image_id: str) -> str:
    """``sha256:…`` from a containerStatuses imageID (``docker-pullable://repo@sha256:…``)."""
    _, at, digest = image_id.rpartition("@")
    if at and digest.startswith("sha256:"):
        return digest
    if image_id.startswith("sha256:"):
        return image_id
    return ""


def _first(sources: list[Mapping[str, str]], keys: tuple[str, ...]) -> str:
    for key in keys:
        for source in sources:
            value = source.get(key, "").strip()
            if value:
                return value
    return ""


def pod_info(pod: Obj) -> PodInfo:
    spec = mapping(pod.get("spec"))
    status = mapping(pod.get("status"))
    digests = {
        text(s.get("name")): image_digest(text(s.get("imageID")))
        for s in items(status.get("containerStatuses"))
    }
    containers = tuple(
        Container(
            name=text(c.get("name")),
            image=text(c.get("image")),
            image_digest=digests.get(text(c.get("name")), ""),
            ports=frozenset(
                p["containerPort"]
                for p in items(c.get("ports"))
                if isinstance(p.get("containerPort"), int)
            ),
        )
        for c in items(spec.get("containers"))
    )
    # Our own annotations first, then the OCI ones, on annotations before labels.
    sources = [annotations_of(pod), labels_of(pod)]
    stated = {
        "repository": _first(sources, (PREFIX + "repository", "org.opencontainers.image.source")),
        "commit": _first(sources, (PREFIX + "commit", "org.opencontainers.image.revision")),
        "version": _first(sources, ("app.kubernetes.io/version",)),
    }
    return PodInfo(
        namespace=namespace(pod),
        name=name(pod),
        node=text(spec.get("nodeName")),
        containers=containers,
        stated=tuple((k, v) for k, v in stated.items() if v),
        container_hint=annotations_of(pod).get(PREFIX + "container", ""),
    )


def _serving_container(pod: PodInfo, port: int) -> Container | None:
    if pod.container_hint:
        for container in pod.containers:
            if container.name == pod.container_hint:
                return container
    for container in pod.containers:
        if port in container.ports:
            return container
    return pod.containers[0] if pod.containers else None


def endpoint_version(
    pod: PodInfo | None, port: int, *, namespace: str = "", pod_name: str = "", node: str = ""
) -> dict[str, str]:
    """The version map of one endpoint: what its pod states plus where it runs.

    ``namespace``/``pod_name``/``node`` come from the EndpointSlice and are used when the
    pod itself is not known (yet).
    """
    if pod is None:
        where = {"namespace": namespace, "pod": pod_name, "node": node}
        return {**UNKNOWN, **{k: v for k, v in where.items() if v}}
    return _pod_version(pod, port, node)


@functools.lru_cache(maxsize=65536)
def _pod_version(pod: PodInfo, port: int, node: str) -> dict[str, str]:
    # Cached per pod state: the result is shared, and never modified by its users.
    version = dict(pod.stated)
    container = _serving_container(pod, port)
    if container is not None:
        if container.image:
            version["image"] = container.image
        if container.image_digest:
            version["image_digest"] = container.image_digest
    if not pod.stated and (container is None or not container.image_digest):
        version.update(UNKNOWN)
    version["namespace"] = pod.namespace
    version["pod"] = pod.name
    if pod.node or node:
        version["node"] = pod.node or node
    return version
