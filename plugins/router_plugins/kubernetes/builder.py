"""Rebuilds the routes after every change, re-mapping only the Ingresses whose inputs changed.

Everything derived from one object is cached by its resource version, so a rebuild after
one endpoint changed costs a pass over cheap lookups plus the mapping of the Ingresses
that use that Service; the others reuse their previous Route objects (which also lets the
router reuse their compiled form).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from router.api import RouteProblem
from router.config.models import Route
from router_plugins.kubernetes.endpoints import SERVICE_NAME_LABEL, BackendProblem
from router_plugins.kubernetes.mapping import (
    ClassSelection,
    Cluster,
    IngressMapper,
    IngressResult,
    backend_ref,
    ingress_order,
    is_default_class,
    is_ours,
)
from router_plugins.kubernetes.objects import (
    Obj,
    items,
    key,
    labels_of,
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


def _service_keys(ingress: Obj) -> tuple[str, ...]:
    keys = set()
    for backend in _backends(ingress):
        try:
            keys.add(f"{namespace(ingress)}/{backend_ref(backend)[0]}")
        except BackendProblem:
            continue
    return tuple(sorted(keys))


@dataclass(frozen=True, slots=True)
class _IngressFacts:
    version: str
    order: tuple[str, str]
    ours_if_default: bool
    ours_otherwise: bool
    services: tuple[str, ...]


class RouteBuilder:
    def __init__(self, selection: ClassSelection) -> None:
        self._selection = selection
        self._results: dict[str, tuple[Hashable, IngressResult]] = {}
        self._facts: dict[str, _IngressFacts] = {}
        self._slice_service: dict[str, tuple[str, str | None]] = {}
        """Slice key -> (resource version, ``namespace/service`` it belongs to)."""
        self._slice_pods: dict[str, tuple[str, tuple[str, ...]]] = {}
        """Slice key -> (resource version, the pod keys of its endpoints)."""

    def _ingress_facts(self, ingress_key: str, ingress: Obj) -> _IngressFacts:
        version = resource_version(ingress)
        facts = self._facts.get(ingress_key)
        if facts is None or facts.version != version or not version:
            facts = _IngressFacts(
                version,
                ingress_order(ingress),
                is_ours(ingress, self._selection, True),
                is_ours(ingress, self._selection, False),
                _service_keys(ingress),
            )
            self._facts[ingress_key] = facts
        return facts

    def _index(self, slices: dict[str, Obj]) -> dict[str, list[Obj]]:
        by_service: dict[str, list[tuple[str, Obj]]] = {}
        cache = self._slice_service
        for slice_key, endpoint_slice in slices.items():
            version = resource_version(endpoint_slice)
            cached = cache.get(slice_key)
            if cached is None or cached[0] != version or not version:
                service = labels_of(endpoint_slice).get(SERVICE_NAME_LABEL)
                owner = f"{namespace(endpoint_slice)}/{service}" if service else None
                cached = cache[slice_key] = (version, owner)
            if cached[1] is not None:
                by_service.setdefault(cached[1], []).append((slice_key, endpoint_slice))
        return {
            service: [s for _, s in sorted(group, key=lambda pair: pair[0])]
            for service, group in by_service.items()
        }

    def _pod_keys(self, slice_key: str, endpoint_slice: Obj, version: str) -> tuple[str, ...]:
        cached = self._slice_pods.get(slice_key)
        if cached is not None and cached[0] == version:
            return cached[1]
        pod_keys = []
        for entry in items(endpoint_slice.get("endpoints")):
            target = mapping(entry.get("targetRef"))
            target_ns = text(target.get("namespace")) or namespace(endpoint_slice)
            pod_keys.append(f"{target_ns}/{text(target.get('name'))}")
        self._slice_pods[slice_key] = (version, tuple(pod_keys))
        return tuple(pod_keys)

    def _fingerprint(
        self, facts: _IngressFacts, index: dict[str, list[Obj]], cluster: Cluster
    ) -> Hashable:
        """Everything the Ingress's routes depend on; None when it cannot be told."""
        if not facts.version:
            return None
        parts: list[Hashable] = [facts.version]
        pods = cluster.pods
        for service_key in facts.services:
            service = cluster.services.get(service_key)
            parts.append(resource_version(service) if service is not None else None)
            for endpoint_slice in index.get(service_key, ()):
                slice_version = resource_version(endpoint_slice)
                if not slice_version:
                    return None
                parts.append(slice_version)
                pod_keys = self._pod_keys(key(endpoint_slice), endpoint_slice, slice_version)
                parts.extend(pods.get(k) for k in pod_keys)
        return tuple(parts)

    def build(self, cluster: Cluster) -> tuple[tuple[Route, ...], tuple[RouteProblem, ...]]:
        index = self._index(dict(cluster.slices))
        mapper = IngressMapper(cluster, index)
        default = any(
            is_default_class(c, self._selection) for c in cluster.ingress_classes.values()
        )
        chosen: list[tuple[tuple[str, str], str, Obj, _IngressFacts]] = []
        for ingress_key, ingress in cluster.ingresses.items():
            facts = self._ingress_facts(ingress_key, ingress)
            if facts.ours_if_default if default else facts.ours_otherwise:
                chosen.append((facts.order, ingress_key, ingress, facts))
        chosen.sort(key=lambda entry: entry[0])
        results: dict[str, tuple[Hashable, IngressResult]] = {}
        routes: list[Route] = []
        problems: list[RouteProblem] = []
        for _, ingress_key, ingress, facts in chosen:
            fingerprint = self._fingerprint(facts, index, cluster)
            cached = self._results.get(ingress_key)
            if fingerprint is not None and cached is not None and cached[0] == fingerprint:
                result = cached[1]
            else:
                result = mapper.map(ingress)
            if fingerprint is not None:
                results[ingress_key] = (fingerprint, result)
            routes.extend(result.routes)
            problems.extend(result.problems)
        self._results = results
        self._forget_deleted(cluster)
        return tuple(routes), tuple(problems)

    def _forget_deleted(self, cluster: Cluster) -> None:
        if len(self._facts) > 2 * len(cluster.ingresses) + 16:
            self._facts = {k: v for k, v in self._facts.items() if k in cluster.ingresses}
        slices = cluster.slices
        if len(self._slice_service) > 2 * len(slices) + 16:
            self._slice_service = {k: v for k, v in self._slice_service.items() if k in slices}
        if len(self._slice_pods) > 2 * len(slices) + 16:
            self._slice_pods = {k: v for k, v in self._slice_pods.items() if k in slices}
