"""Ingress objects -> routes. Pure functions: no I/O, no clock, same input same output."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from router.api import Endpoint, Route, RouteProblem
from router_plugins.kubernetes.annotations import IngressSettings, parse_annotations
from router_plugins.kubernetes.endpoints import (
    BackendProblem,
    PortRef,
    index_slices,
    service_endpoints,
)
from router_plugins.kubernetes.objects import (
    Obj,
    annotations_of,
    items,
    key,
    mapping,
    meta,
    name,
    namespace,
    text,
)
from router_plugins.kubernetes.ownership import HostOwnership, Owners, host_problem
from router_plugins.kubernetes.version import PodInfo

LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
MAX_ROUTE_NAME = 128


@dataclass(frozen=True, slots=True)
class ClassSelection:
    """Which Ingresses are ours."""

    name: str
    """Our IngressClass name (``spec.ingressClassName`` or the legacy annotation)."""
    controller: str
    """Our controller name, for ``spec.controller`` of IngressClass objects."""


@dataclass
class Cluster:
    """The objects the routes are built from, by ``namespace/name``."""

    ingresses: Mapping[str, Obj] = field(default_factory=dict)
    ingress_classes: Mapping[str, Obj] = field(default_factory=dict)
    services: Mapping[str, Obj] = field(default_factory=dict)
    slices: Mapping[str, Obj] = field(default_factory=dict)
    pods: Mapping[str, PodInfo] = field(default_factory=dict)
    gateway_classes: Mapping[str, Obj] = field(default_factory=dict)
    gateways: Mapping[str, Obj] = field(default_factory=dict)
    http_routes: Mapping[str, Obj] = field(default_factory=dict)
    reference_grants: Mapping[str, Obj] = field(default_factory=dict)
    router_policies: Mapping[str, Obj] = field(default_factory=dict)
    namespaces: Mapping[str, Obj] = field(default_factory=dict)
    """The Gateway API objects, and Namespaces (empty unless ``gateway_api.enabled``)."""


@dataclass(frozen=True, slots=True)
class IngressResult:
    routes: tuple[Route, ...]
    problems: tuple[RouteProblem, ...]


def is_default_class(ingress_class: Obj, selection: ClassSelection) -> bool:
    return (
        name(ingress_class) == selection.name
        and text(mapping(ingress_class.get("spec")).get("controller")) == selection.controller
        and annotations_of(ingress_class).get(DEFAULT_CLASS_ANNOTATION) == "true"
    )


def is_ours(ingress: Obj, selection: ClassSelection, default: bool) -> bool:
    """``ingressClassName``, else the legacy annotation, else whether our class is default."""
    class_name = text(mapping(ingress.get("spec")).get("ingressClassName"))
    if class_name:
        return class_name == selection.name
    legacy = annotations_of(ingress).get(LEGACY_CLASS_ANNOTATION, "")
    if legacy:
        return legacy == selection.name
    return default


def route_name(ingress: Obj, suffix: str) -> str:
    candidate = f"{namespace(ingress)}.{name(ingress)}.{suffix}"
    if len(candidate) <= MAX_ROUTE_NAME:
        return candidate
    digest = hashlib.sha256(candidate.encode()).hexdigest()[:10]
    return f"{candidate[: MAX_ROUTE_NAME - 11]}-{digest}"


def backend_ref(backend: Obj) -> tuple[str, PortRef]:
    """``(service name, port)`` of an IngressBackend; raises BackendProblem."""
    if "resource" in backend:
        raise BackendProblem("resource backends are not supported; use a service")
    service = mapping(backend.get("service"))
    service_name = text(service.get("name"))
    port = mapping(service.get("port"))
    number, port_name = port.get("number"), text(port.get("name"))
    if not service_name:
        raise BackendProblem("backend has no service name")
    if isinstance(number, int) and not isinstance(number, bool):
        return service_name, PortRef(number=number)
    if port_name:
        return service_name, PortRef(name=port_name)
    raise BackendProblem(f"backend service {service_name!r} has no port number or name")


PATH_TYPES = {"Exact": "Exact", "Prefix": "Prefix", "ImplementationSpecific": "Prefix"}
"""ImplementationSpecific paths are matched as Prefix (element-wise)."""


def _validation_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


class IngressMapper:
    """Maps one Ingress at a time against an index of the cluster's objects."""

    def __init__(
        self, cluster: Cluster, slices_of: Callable[[str], list[Obj]] | None = None
    ) -> None:
        self._cluster = cluster
        if slices_of is None:
            index = index_slices(cluster.slices.values())
            slices_of = lambda service_key: index.get(service_key, [])  # noqa: E731
        self.service_slices = slices_of
        """The EndpointSlices of a Service (``namespace/name``), sorted by name."""

    def endpoints(self, ingress: Obj, backend: Obj, scheme: str) -> list[Endpoint]:
        service_name, port = backend_ref(backend)
        service_key = f"{namespace(ingress)}/{service_name}"
        return service_endpoints(
            self._cluster.services.get(service_key),
            service_key,
            self.service_slices(service_key),
            port,
            scheme,
            self._cluster.pods,
        )

    def map(self, ingress: Obj) -> IngressResult:
        source = f"ingress/{key(ingress)}"
        settings, annotation_problems = parse_annotations(annotations_of(ingress))
        routes: list[Route] = []
        problems = [
            RouteProblem(source, f"{message}; requests to this Ingress get 503")
            for message in annotation_problems
        ]
        for suffix, target in self._targets(ingress):
            name = route_name(ingress, suffix)
            if isinstance(target, str):
                problems.append(RouteProblem(source, target, name))
                continue
            if annotation_problems:
                # SECURITY: broken settings (maybe the auth ones) serve nothing, but keep the
                # host and path claimed so that no less specific route answers instead.
                route, message = self._placeholder(name, {}, *target[:3]), None
            else:
                route, message = self._route(ingress, settings, name, *target)
            if route is not None:
                routes.append(route)
            if message is not None:
                problems.append(RouteProblem(source, message, name))
        return IngressResult(tuple(routes), tuple(problems))

    @staticmethod
    def _targets(
        ingress: Obj,
    ) -> list[tuple[str, tuple[list[str], str, str, Obj] | str]]:
        """``(route suffix, (hosts, path, path type, backend) or a problem)``, in order."""
        spec = mapping(ingress.get("spec"))
        targets: list[tuple[str, tuple[list[str], str, str, Obj] | str]] = []
        default_backend = spec.get("defaultBackend")
        if isinstance(default_backend, Mapping):
            targets.append(("default", ([], "/", "Prefix", default_backend)))
        for rule_index, rule in enumerate(items(spec.get("rules"))):
            host = text(rule.get("host"))
            for path_index, path in enumerate(items(mapping(rule.get("http")).get("paths"))):
                suffix = f"rule{rule_index}.path{path_index}"
                path_type = text(path.get("pathType")) or "ImplementationSpecific"
                kind = PATH_TYPES.get(path_type)
                if kind is None:
                    targets.append(
                        (
                            suffix,
                            f"rules[{rule_index}].http.paths[{path_index}]: unknown pathType "
                            f"{path_type!r}; route disabled",
                        )
                    )
                    continue
                value = text(path.get("path")) or "/"
                targets.append(
                    (suffix, ([host] if host else [], value, kind, mapping(path.get("backend"))))
                )
        return targets

    @staticmethod
    def _placeholder(
        name: str, fields: Mapping[str, Any], hosts: list[str], path: str, kind: str
    ) -> Route | None:
        """A route answering 503 for this host and path (None if they are invalid)."""
        try:
            return Route.model_validate(
                {
                    **fields,
                    "name": name,
                    "hosts": hosts,
                    "path": path,
                    "path_type": kind,
                    "builtin": "unavailable",
                }
            )
        except ValidationError:
            return None

    def _route(
        self,
        ingress: Obj,
        settings: IngressSettings,
        name: str,
        hosts: list[str],
        path: str,
        kind: str,
        backend: Obj,
    ) -> tuple[Route | None, str | None]:
        """The route, or a placeholder answering 503, or None; and a problem message."""
        where = f"host {hosts[0] if hosts else '(any)'} path {path}"
        if name.endswith(".default"):
            where = "defaultBackend"
        try:
            upstreams = self.endpoints(ingress, backend, settings.scheme)
        except BackendProblem as exc:
            return (
                self._placeholder(name, settings.route_fields, hosts, path, kind),
                f"{where}: {exc}; requests get 503",
            )
        if not upstreams:
            service = text(mapping(backend.get("service")).get("name"))
            return (
                self._placeholder(name, settings.route_fields, hosts, path, kind),
                f"{where}: service {namespace(ingress)}/{service} has no serving endpoints; "
                "requests get 503",
            )
        fields: dict[str, Any] = {
            **settings.route_fields,
            "name": name,
            "hosts": hosts,
            "path": path,
            "path_type": kind,
            "upstreams": upstreams,
        }
        try:
            return Route.model_validate(fields), None
        except ValidationError as exc:
            return None, f"{where}: {_validation_message(exc)}; route disabled"


def ingress_order(ingress: Obj) -> tuple[str, str]:
    """Oldest first (the older Ingress wins a host/path conflict), then by name."""
    return (text(meta(ingress).get("creationTimestamp")), key(ingress))


def selected_ingresses(cluster: Cluster, selection: ClassSelection) -> list[Obj]:
    default = any(is_default_class(c, selection) for c in cluster.ingress_classes.values())
    chosen = [i for i in cluster.ingresses.values() if is_ours(i, selection, default)]
    return sorted(chosen, key=ingress_order)


def ingress_hosts(ingress: Obj) -> tuple[str, ...]:
    """The hosts an Ingress routes ("" for rules without a host and the defaultBackend)."""
    spec = mapping(ingress.get("spec"))
    hosts = {text(rule.get("host")) for rule in items(spec.get("rules"))}
    if "defaultBackend" in spec:
        hosts.add("")
    return tuple(sorted(hosts))


def host_claims(ingresses: Iterable[Obj]) -> list[tuple[str, str]]:
    """``(host, namespace)`` for every host each Ingress routes."""
    return [(host, namespace(i)) for i in ingresses for host in ingress_hosts(i)]


def unavailable(route: Route) -> Route:
    """The route answering 503, keeping its host, path and settings (such as auth)."""
    return route.model_copy(update={"upstreams": [], "builtin": "unavailable"})


def collect(
    results: Iterable[tuple[Obj, IngressResult]], owners: Owners | None
) -> tuple[tuple[Route, ...], tuple[RouteProblem, ...]]:
    """The routes and problems of the Ingresses' results, in order; with ``owners``, routes
    for hosts owned by another namespace are disabled, and those of hosts whose owner is
    unclear answer 503."""
    routes: list[Route] = []
    problems: list[RouteProblem] = []
    for ingress, result in results:
        problems.extend(result.problems)
        if owners is None:
            routes.extend(result.routes)
            continue
        ingress_namespace = namespace(ingress)
        for route in result.routes:
            problem = host_problem(route.hosts[0] if route.hosts else "", ingress_namespace, owners)
            if problem is None:
                routes.append(route)
                continue
            keep, message = problem
            if keep:
                routes.append(unavailable(route))
            problems.append(RouteProblem(f"ingress/{key(ingress)}", message, route.name))
    return tuple(routes), tuple(problems)


def build_routes(
    cluster: Cluster,
    selection: ClassSelection,
    *,
    shared_hosts: bool = False,
    ownership: HostOwnership | None = None,
    now: float = 0.0,
) -> tuple[tuple[Route, ...], tuple[RouteProblem, ...]]:
    """Every route of every Ingress of our class, and the problems found on the way.

    SECURITY: unless ``shared_hosts``, a host belongs to one namespace (see
    :mod:`.ownership`; without ``ownership``, as at start with no memory of owners), so
    another namespace cannot take over paths of someone's host.
    """
    mapper = IngressMapper(cluster)
    chosen = selected_ingresses(cluster, selection)
    if ownership is None:
        ownership = HostOwnership(0.0)
    owners = None if shared_hosts else ownership.resolve(host_claims(chosen), now)
    return collect(((ingress, mapper.map(ingress)) for ingress in chosen), owners)
