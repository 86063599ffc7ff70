"""The router's own image digest, read from its own Pod's status.

The Deployment passes the Pod's name and namespace through the downward API; the digest
itself is only in ``status.containerStatuses[].imageID``, which the downward API cannot
expose, so the router reads its Pod once (``get`` on pods) and publishes the digest for the
provenance header. Outside Kubernetes, or without those variables, nothing is published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from router_plugins.kubernetes.apiclient import ApiError, KubeApi
from router_plugins.kubernetes.version import image_digest

POD_NAME_ENV = "COMMONS_ROUTER_POD_NAME"
POD_NAMESPACE_ENV = "COMMONS_ROUTER_POD_NAMESPACE"
CONTAINER_ENV = "COMMONS_ROUTER_CONTAINER_NAME"

logger = logging.getLogger("commons_router.kubernetes")


@dataclass(frozen=True, slots=True)
class OwnPod:
    namespace: str
    name: str
    container: str | None
    """The router's container; None: the Pod's only container."""

    @property
    def path(self) -> str:
        return (
            f"/api/v1/namespaces/{quote(self.namespace, safe='')}/pods/{quote(self.name, safe='')}"
        )


def own_pod_from_env(env: Mapping[str, str]) -> OwnPod | None:
    name = env.get(POD_NAME_ENV, "").strip()
    namespace = env.get(POD_NAMESPACE_ENV, "").strip()
    if not name or not namespace:
        return None
    return OwnPod(namespace, name, env.get(CONTAINER_ENV, "").strip() or None)


def container_digest(pod: Mapping[str, Any], container: str | None) -> str:
    """``sha256:…`` of the router's container, or "" while the kubelet has not reported it."""
    status = pod.get("status")
    statuses = status.get("containerStatuses") if isinstance(status, Mapping) else None
    if not isinstance(statuses, list):
        return ""
    candidates = [s for s in statuses if isinstance(s, Mapping)]
    if container is not None:
        candidates = [s for s in candidates if s.get("name") == container]
    elif len(candidates) != 1:
        return ""  # several containers and none named: do not guess
    for entry in candidates:
        image_id = entry.get("imageID")
        if isinstance(image_id, str):
            return image_digest(image_id)
    return ""


async def learn_router_image(
    api: KubeApi,
    pod: OwnPod,
    publish: Callable[[str], object],
    *,
    attempts: int = 8,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> str | None:
    """Read the Pod until its container reports an image digest; publish it once known."""
    delay = first_delay
    problem = "the container status has no image digest yet"
    for attempt in range(attempts):
        try:
            document = await api.list_page(pod.path, {}, deadline=10.0)
        except ApiError as exc:
            problem = f"reading pod {pod.namespace}/{pod.name}: {exc}"
        except (OSError, TimeoutError) as exc:
            problem = f"reading pod {pod.namespace}/{pod.name}: {type(exc).__name__}"
        else:
            digest = container_digest(document, pod.container)
            if digest:
                publish(digest)
                logger.info("kubernetes: the router runs image %s", digest)
                return digest
        if attempt + 1 < attempts:
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
    logger.warning(
        "kubernetes: router-image-digest left out of provenance: %s (after %d tries)",
        problem,
        attempts,
    )
    return None
