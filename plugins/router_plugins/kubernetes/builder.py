"""Rebuilds the routes after every change, re-mapping only the Ingresses whose inputs changed.

A change to one endpoint re-maps just the Ingresses that use its Service; the others reuse
their previous routes (the same objects, so the table comparison downstream stays cheap).
"""

from __future__ import annotations

from collections.abc import Hashable

from router.api import RouteProblem
from router.config.models import Route
from router_plugins.kubernetes.endpoints import BackendProblem
from router_plugins.kubernetes.mapping import (
    ClassSelection,
    Cluster,
    IngressMapper,
    IngressResult,
    backend_ref,
    selected_ingresses,
)
from router_plugins.kubernetes.objects import (
    Obj,
    items,
    key,
    mapping,
    namespace,
    resource_version,
    text,
)


def _backends(ingress: Obj) -> list[Obj]:
    spec = mapping(ingress.get("spec"))
    found = [mapping(spec.get("defaultBackend"))] if "defaultBackend" in spec else []
    for rule in items(spec.get("rules")):
        for path in items(mapping(rule.get("http")).get("paths")):
            found.append(mapping(path.get("backend")))
    return found


class RouteBuilder:
    def __init__(self, selection: ClassSelection) -> None:
        self._selection = selection
        self._cache: dict[str, tuple[Hashable, IngressResult]] = {}

    def _fingerprint(self, ingress: Obj, mapper: IngressMapper, cluster: Cluster) -> Hashable:
        version = resource_version(ingress)
        if not version:
            return None
        parts: list[Hashable] = [version]
        services: set[str] = set()
        for backend in _backends(ingress):
            try:
                services.add(f"{namespace(ingress)}/{backend_ref(backend)[0]}")
            except BackendProblem:
                continue
        for service_key in sorted(services):
            service = cluster.services.get(service_key)
            parts.append(resource_version(service) if service is not None else None)
            for endpoint_slice in mapper.service_slices(service_key):
                parts.append(resource_version(endpoint_slice))
                for entry in items(endpoint_slice.get("endpoints")):
                    target = mapping(entry.get("targetRef"))
                    target_ns = text(target.get("namespace")) or namespace(endpoint_slice)
                    parts.append(cluster.pods.get(f"{target_ns}/{text(target.get('name'))}"))
        return tuple(parts)

    def build(self, cluster: Cluster) -> tuple[tuple[Route, ...], tuple[RouteProblem, ...]]:
        mapper = IngressMapper(cluster)
        cache: dict[str, tuple[Hashable, IngressResult]] = {}
        routes: list[Route] = []
        problems: list[RouteProblem] = []
        for ingress in selected_ingresses(cluster, self._selection):
            ingress_key = key(ingress)
            fingerprint = self._fingerprint(ingress, mapper, cluster)
            cached = self._cache.get(ingress_key)
            if fingerprint is not None and cached is not None and cached[0] == fingerprint:
                result = cached[1]
            else:
                result = mapper.map(ingress)
            if fingerprint is not None:
                cache[ingress_key] = (fingerprint, result)
            routes.extend(result.routes)
            problems.extend(result.problems)
        self._cache = cache
        return tuple(routes), tuple(problems)
