"""Rebuilds the routes after every change, re-mapping only the Ingresses whose inputs changed.

The provider passes the keys of the objects that changed since the last build. From them
the builder finds the Ingresses affected (through the Services, EndpointSlices and Pods
they use) and re-checks only those; the others keep their previous Route objects, which
also lets the router reuse their compiled form. A re-checked Ingress is mapped again only
when one of its inputs really differs (compared by resource version and pod state).
Without a change list (the first build, after a relist) everything is re-checked.
"""

from __future__ import annotations

import gc
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from router.api import Route, RouteProblem
from router_plugins.kubernetes.endpoints import SERVICE_NAME_LABEL, BackendProblem
from router_plugins.kubernetes.mapping import (
    ClassSelection,
    Cluster,
    IngressMapper,
    IngressResult,
    backend_ref,
    collect,
    ingress_hosts,
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
from router_plugins.kubernetes.ownership import HostOwnership, Owners
from router_plugins.kubernetes.resources import ENDPOINT_SLICES, INGRESSES, PODS, SERVICES

Changes = set[tuple[str, str]]
Collected = tuple[tuple[Route, ...], tuple[RouteProblem, ...]]


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


def _slice_owner(endpoint_slice: Obj) -> str | None:
    service = labels_of(endpoint_slice).get(SERVICE_NAME_LABEL)
    return f"{namespace(endpoint_slice)}/{service}" if service else None


def _slice_pod_keys(endpoint_slice: Obj) -> tuple[str, ...]:
    pod_keys = []
    for entry in items(endpoint_slice.get("endpoints")):
        target = mapping(entry.get("targetRef"))
        target_ns = text(target.get("namespace")) or namespace(endpoint_slice)
        pod_keys.append(f"{target_ns}/{text(target.get('name'))}")
    return tuple(pod_keys)


@dataclass(frozen=True, slots=True)
class _IngressFacts:
    version: str
    order: tuple[str, str]
    ours_if_default: bool
    ours_otherwise: bool
    services: tuple[str, ...]
    hosts: tuple[str, ...]


class _SliceIndex:
    """EndpointSlices by Service, and the Services each pod serves, kept up to date."""

    def __init__(self) -> None:
        self.by_service: dict[str, dict[str, Obj]] = {}
        self._owner: dict[str, str | None] = {}
        self._pods: dict[str, tuple[str, ...]] = {}
        self._pod_slices: dict[str, set[str]] = {}

    def reset(self, slices: Iterable[tuple[str, Obj]]) -> None:
        self.by_service.clear()
        self._owner.clear()
        self._pods.clear()
        self._pod_slices.clear()
        for slice_key, endpoint_slice in slices:
            self.update(slice_key, endpoint_slice)

    def update(self, slice_key: str, endpoint_slice: Obj | None) -> set[str]:
        """Record the slice's new state (None: deleted); returns the Services concerned."""
        concerned: set[str] = set()
        old_owner = self._owner.pop(slice_key, None)
        if old_owner is not None:
            concerned.add(old_owner)
            group = self.by_service.get(old_owner)
            if group is not None:
                group.pop(slice_key, None)
                if not group:
                    del self.by_service[old_owner]
        for pod_key in self._pods.pop(slice_key, ()):
            holders = self._pod_slices.get(pod_key)
            if holders is not None:
                holders.discard(slice_key)
                if not holders:
                    del self._pod_slices[pod_key]
        if endpoint_slice is None:
            return concerned
        owner = _slice_owner(endpoint_slice)
        self._owner[slice_key] = owner
        if owner is not None:
            concerned.add(owner)
            self.by_service.setdefault(owner, {})[slice_key] = endpoint_slice
        pod_keys = _slice_pod_keys(endpoint_slice)
        self._pods[slice_key] = pod_keys
        for pod_key in pod_keys:
            self._pod_slices.setdefault(pod_key, set()).add(slice_key)
        return concerned

    def slices_of(self, service_key: str) -> list[Obj]:
        group = self.by_service.get(service_key)
        return [group[k] for k in sorted(group)] if group else []

    def pod_keys(self, slice_key: str) -> tuple[str, ...]:
        return self._pods.get(slice_key, ())

    def services_of_pod(self, pod_key: str) -> set[str]:
        owners = (self._owner.get(k) for k in self._pod_slices.get(pod_key, ()))
        return {owner for owner in owners if owner is not None}


class RouteBuilder:
    def __init__(
        self,
        selection: ClassSelection,
        *,
        shared_hosts: bool = False,
        host_release_delay: float = 300.0,
    ) -> None:
        self._selection = selection
        self._shared_hosts = shared_hosts
        self._ownership = HostOwnership(host_release_delay)
        self._claims: list[tuple[str, str]] = []
        self._owners: Owners | None = None
        self._collected: dict[str, tuple[IngressResult, object, Collected]] = {}
        """Ingress key -> (its result, the owners map, what that result contributes)."""
        self._results: dict[str, tuple[Hashable, IngressResult]] = {}
        self._facts: dict[str, _IngressFacts] = {}
        self._slices = _SliceIndex()
        self._service_ingresses: dict[str, set[str]] = {}
        self._chosen: list[tuple[str, Obj, _IngressFacts]] = []
        self._consistent = False
        """False until a build completed (and after one failed): rebuild everything."""

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
                ingress_hosts(ingress),
            )
            self._facts[ingress_key] = facts
        return facts

    def _fingerprint(self, facts: _IngressFacts, cluster: Cluster) -> Hashable:
        """Everything the Ingress's routes depend on; None when it cannot be told."""
        if not facts.version:
            return None
        parts: list[Hashable] = [facts.version]
        pods = cluster.pods
        for service_key in facts.services:
            service = cluster.services.get(service_key)
            parts.append(resource_version(service) if service is not None else None)
            group = self._slices.by_service.get(service_key, {})
            for slice_key in sorted(group):
                slice_version = resource_version(group[slice_key])
                if not slice_version:
                    return None
                parts.append(slice_version)
                parts.extend(pods.get(k) for k in self._slices.pod_keys(slice_key))
        return tuple(parts)

    def _affected(self, changes: Changes, cluster: Cluster) -> set[str] | None:
        """Keys of the Ingresses to re-check, or None to re-check (and re-select) all.

        Also brings the slice index up to date with the changed EndpointSlices."""
        services: set[str] = set()
        ingresses: set[str] = set()
        everything = False
        for plural, obj_key in changes:
            if plural == INGRESSES.plural:
                ingresses.add(obj_key)
            elif plural == SERVICES.plural:
                services.add(obj_key)
            elif plural == ENDPOINT_SLICES.plural:
                services |= self._slices.update(obj_key, cluster.slices.get(obj_key))
            elif plural == PODS.plural:
                services |= self._slices.services_of_pod(obj_key)
            else:  # IngressClass: which Ingresses are ours may have changed
                everything = True
        if everything:
            return None
        for service_key in services:
            ingresses |= self._service_ingresses.get(service_key, set())
        return ingresses

    def _select(self, cluster: Cluster) -> list[tuple[str, Obj, _IngressFacts]]:
        default = any(
            is_default_class(c, self._selection) for c in cluster.ingress_classes.values()
        )
        chosen: list[tuple[tuple[str, str], str, Obj, _IngressFacts]] = []
        for ingress_key, ingress in cluster.ingresses.items():
            facts = self._ingress_facts(ingress_key, ingress)
            if facts.ours_if_default if default else facts.ours_otherwise:
                chosen.append((facts.order, ingress_key, ingress, facts))
        chosen.sort(key=lambda entry: entry[0])
        service_ingresses: dict[str, set[str]] = {}
        for _, ingress_key, _, facts in chosen:
            for service_key in facts.services:
                service_ingresses.setdefault(service_key, set()).add(ingress_key)
        self._service_ingresses = service_ingresses
        self._claims = [
            (host, ingress_key.partition("/")[0])
            for _, ingress_key, _, facts in chosen
            for host in facts.hosts
        ]
        if len(self._facts) > 2 * len(cluster.ingresses) + 16:
            self._facts = {k: v for k, v in self._facts.items() if k in cluster.ingresses}
        return [(k, ingress, facts) for _, k, ingress, facts in chosen]

    def slices_of(self, service_key: str) -> list[Obj]:
        """The EndpointSlices of a Service, as of the last build."""
        return self._slices.slices_of(service_key)

    def pod_keys_of(self, endpoint_slice: Obj) -> tuple[str, ...]:
        """The pods of an EndpointSlice, as of the last build."""
        return self._slices.pod_keys(key(endpoint_slice))

    def next_release(self) -> float | None:
        """When a host's hold runs out (see :mod:`.ownership`): build again then."""
        return None if self._shared_hosts else self._ownership.next_release()

    def build(
        self, cluster: Cluster, changes: Changes | None = None, now: float = 0.0
    ) -> tuple[tuple[Route, ...], tuple[RouteProblem, ...]]:
        """The routes of ``cluster``; ``changes`` lists what changed since the last build
        (None: anything may have); ``now`` is the monotonic time (host ownership)."""
        # A build allocates many objects and creates no garbage cycles worth collecting
        # mid-way; with the collector paused it would otherwise traverse the whole cluster
        # state several times (most of a full build's time). It is synchronous, so nothing
        # else runs meanwhile; collection resumes as soon as it returns.
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._build(cluster, changes, now)
        finally:
            if paused:
                gc.enable()

    def _build(
        self, cluster: Cluster, changes: Changes | None, now: float
    ) -> tuple[tuple[Route, ...], tuple[RouteProblem, ...]]:
        consistent, self._consistent = self._consistent, False
        affected = self._affected(changes, cluster) if consistent and changes is not None else None
        if affected is None:
            if changes is None or not consistent:
                self._slices.reset(cluster.slices.items())
            self._chosen = self._select(cluster)
        elif any(plural == INGRESSES.plural for plural, _ in changes or ()):
            self._chosen = self._select(cluster)
        if not self._shared_hosts:
            # The same object when nothing changed, so the filter below is not redone.
            self._owners = self._ownership.resolve(self._claims, now)
        mapper = IngressMapper(cluster, self._slices.slices_of)
        results: dict[str, tuple[Hashable, IngressResult]] = {}
        routes: list[Route] = []
        problems: list[RouteProblem] = []
        collected: dict[str, tuple[IngressResult, object, Collected]] = {}
        for ingress_key, ingress, facts in self._chosen:
            cached = self._results.get(ingress_key)
            if affected is not None and cached is not None and ingress_key not in affected:
                result = cached[1]
                results[ingress_key] = cached
            else:
                fingerprint = self._fingerprint(facts, cluster)
                if fingerprint is not None and cached is not None and cached[0] == fingerprint:
                    result = cached[1]
                else:
                    result = mapper.map(ingress)
                if fingerprint is not None:
                    results[ingress_key] = (fingerprint, result)
            # The host-ownership filter, redone only when the result or the owners changed.
            previous = self._collected.get(ingress_key)
            if previous is not None and previous[0] is result and previous[1] is self._owners:
                contribution = previous[2]
            else:
                contribution = collect([(ingress, result)], self._owners)
            collected[ingress_key] = (result, self._owners, contribution)
            routes.extend(contribution[0])
            problems.extend(contribution[1])
        self._results = results
        self._collected = collected
        self._consistent = True
        return tuple(routes), tuple(problems)
