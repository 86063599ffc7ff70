"""Gateway API objects -> routes and the status of every object. Pure: no I/O, no clock.

GatewayClasses whose ``controllerName`` is ours make their Gateways ours; each Gateway
listener is mapped by port onto a router listener; HTTPRoutes attach to the listeners
their ``parentRefs`` name and that allow them, on the hostnames both accept; each rule
match becomes one route. HTTPRoutes are taken oldest first, so when two claim the same
host and path the older one wins (the route table reports the other).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from router.api import Endpoint, Route, RouteProblem
from router_plugins.kubernetes.endpoints import BackendProblem, PortRef, service_endpoints
from router_plugins.kubernetes.gateway.hostnames import intersect
from router_plugins.kubernetes.gateway.policy import (
    PolicyInvalid,
    PolicyRefused,
    policy_plugins,
    policy_settings,
)
from router_plugins.kubernetes.objects import (
    Obj,
    items,
    key,
    mapping,
    meta,
    name,
    namespace,
    strings,
    text,
)
from router_plugins.kubernetes.version import PodInfo

GROUP = "gateway.networking.k8s.io"
SUPPORTED_VERSION = "v1.2"
MAX_ROUTE_NAME = 128
INVALID_BACKEND = Endpoint(url="http://invalid-backend.invalid")
"""Stands for the invalid backendRefs of a rule: the router answers its share with 500."""

Condition = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RouterListener:
    name: str
    tls: bool


@dataclass
class GatewayInputs:
    """The objects the routes are built from, by ``namespace/name`` (name for classes)."""

    classes: Mapping[str, Obj] = field(default_factory=dict)
    gateways: Mapping[str, Obj] = field(default_factory=dict)
    routes: Mapping[str, Obj] = field(default_factory=dict)
    grants: Mapping[str, Obj] = field(default_factory=dict)
    services: Mapping[str, Obj] = field(default_factory=dict)
    slices_of: Callable[[str], list[Obj]] = field(default=lambda service_key: [])
    """The EndpointSlices of a Service (``namespace/name``)."""
    pod_keys_of: Callable[[Obj], tuple[str, ...]] | None = None
    """The pods (``namespace/name``) of an EndpointSlice; with it, the endpoints of a
    Service are read again only when the Service, a slice or a pod changed."""
    pods: Mapping[str, PodInfo] = field(default_factory=dict)
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Namespace name -> its labels (for ``allowedRoutes.namespaces.from: Selector``)."""
    ingress_hosts: frozenset[str] = frozenset()
    """Hosts routed by our Ingresses: they belong to the Ingresses (see the README)."""
    policies: Mapping[str, Obj] = field(default_factory=dict)
    """Our RouterPolicies (``ExtensionRef`` filters name them)."""


@dataclass
class Translation:
    routes: list[Route] = field(default_factory=list)
    problems: list[RouteProblem] = field(default_factory=list)
    class_status: dict[str, list[Condition]] = field(default_factory=dict)
    gateway_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    route_parents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """HTTPRoute key -> our entries of ``status.parents`` (others' are not ours to touch)."""
    secrets: set[str] = field(default_factory=set)
    """``namespace/name`` of the certificate Secrets of our HTTPS listeners."""


def condition(kind: str, ok: bool, reason: str, message: str, generation: int) -> Condition:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def generation(obj: Obj) -> int:
    value = meta(obj).get("generation")
    return value if isinstance(value, int) else 0


def _order(obj: Obj) -> tuple[str, str]:
    return (text(meta(obj).get("creationTimestamp")), key(obj))


def route_name(route: Obj, suffix: str) -> str:
    candidate = f"gw.{namespace(route)}.{name(route)}.{suffix}"
    if len(candidate) <= MAX_ROUTE_NAME:
        return candidate
    digest = hashlib.sha256(candidate.encode()).hexdigest()[:10]
    return f"{candidate[: MAX_ROUTE_NAME - 11]}-{digest}"


def granted(
    grants: Mapping[str, Obj],
    from_kind: str,
    from_namespace: str,
    to_group: str,
    to_kind: str,
    to_namespace: str,
    to_name: str,
) -> bool:
    """Whether a ReferenceGrant in ``to_namespace`` lets ``from_kind`` objects of
    ``from_namespace`` refer to the object."""
    for grant in grants.values():
        if namespace(grant) != to_namespace:
            continue
        spec = mapping(grant.get("spec"))
        from_ok = any(
            text(f.get("group")) == GROUP
            and text(f.get("kind")) == from_kind
            and text(f.get("namespace")) == from_namespace
            for f in items(spec.get("from"))
        )
        to_ok = any(
            text(t.get("group")) == to_group
            and text(t.get("kind")) == to_kind
            and text(t.get("name")) in ("", to_name)
            for t in items(spec.get("to"))
        )
        if from_ok and to_ok:
            return True
    return False


@dataclass
class _Listener:
    gateway: Obj
    spec: Obj
    router: RouterListener | None
    allowed_from: str
    kinds_ok: bool
    problem: tuple[str, str, str] | None = None
    """``(condition type, reason, message)`` of what makes the listener unusable."""
    attached: int = 0

    @property
    def valid(self) -> bool:
        return self.problem is None


class _Refused(Exception):
    """A backendRef that cannot be resolved: reason and message for ResolvedRefs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Translator:
    def __init__(self, controller: str, listeners: Mapping[int, RouterListener]) -> None:
        self.controller = controller
        self.listeners = listeners
        self._built: dict[bytes, Route] = {}
        self._previous: dict[bytes, Route] = {}
        self._endpoints: dict[tuple[str, int], tuple[tuple[object, ...], list[Endpoint]]] = {}
        self._previous_endpoints = self._endpoints
        """A Service port's endpoints, with the objects they were read from (the Service,
        its EndpointSlices and their pods): read again only when one of them changed."""
        """The routes of the last translation by their fields: an unchanged route is the
        same object again, so the router reuses its compiled form (and it is not
        validated again)."""
        self._policies: dict[int, tuple[Obj, dict[str, Any] | str]] = {}
        self._previous_policies = self._policies
        """A RouterPolicy's checked settings (or why not), by the object's id: checked
        again only when the watch replaced the object."""

    def translate(self, inputs: GatewayInputs) -> Translation:
        self._previous, self._built = self._built, {}
        self._previous_endpoints, self._endpoints = self._endpoints, {}
        self._previous_policies, self._policies = self._policies, {}
        out = Translation()
        our_classes = set()
        for class_name, gateway_class in sorted(inputs.classes.items()):
            spec = mapping(gateway_class.get("spec"))
            if text(spec.get("controllerName")) != self.controller:
                continue
            our_classes.add(class_name)
            gen = generation(gateway_class)
            out.class_status[class_name] = [
                condition("Accepted", True, "Accepted", "handled by commons-router", gen),
                condition(
                    "SupportedVersion",
                    True,
                    "SupportedVersion",
                    f"Gateway API {SUPPORTED_VERSION}",
                    gen,
                ),
            ]
        gateways = {
            gateway_key: gateway
            for gateway_key, gateway in inputs.gateways.items()
            if text(mapping(gateway.get("spec")).get("gatewayClassName")) in our_classes
        }
        listeners: dict[str, list[_Listener]] = {}
        for gateway_key in sorted(gateways):
            listeners[gateway_key] = self._listeners(gateways[gateway_key], inputs, out)
        for route in sorted(inputs.routes.values(), key=_order):
            self._route(route, gateways, listeners, inputs, out)
        for gateway_key in sorted(gateways):
            self._gateway_status(gateways[gateway_key], listeners[gateway_key], out)
        return out

    # --- Gateways ---------------------------------------------------------------------------

    def _listeners(self, gateway: Obj, inputs: GatewayInputs, out: Translation) -> list[_Listener]:
        found = []
        for spec in items(mapping(gateway.get("spec")).get("listeners")):
            port = spec.get("port")
            router = self.listeners.get(port) if isinstance(port, int) else None
            allowed = mapping(spec.get("allowedRoutes"))
            allowed_from = text(mapping(allowed.get("namespaces")).get("from")) or "Same"
            kinds = items(allowed.get("kinds"))
            kinds_ok = not kinds or any(
                text(k.get("kind")) == "HTTPRoute" and text(k.get("group")) in ("", GROUP)
                for k in kinds
            )
            found.append(_Listener(gateway, spec, router, allowed_from, kinds_ok))
        addresses = bool(mapping(gateway.get("spec")).get("addresses"))
        conflicts = listener_conflicts([listener.spec for listener in found])
        for index, listener in enumerate(found):
            listener.problem = conflicts.get(index) or self._listener_problem(listener, inputs, out)
            if addresses and listener.problem is None:
                # The Gateway cannot be had as asked: nothing attaches to it.
                listener.problem = ("Programmed", "Invalid", "spec.addresses are not supported")
        return found

    def _listener_problem(
        self, listener: _Listener, inputs: GatewayInputs, out: Translation
    ) -> tuple[str, str, str] | None:
        """``(condition type, reason, message)`` of what makes the listener unusable."""
        spec = listener.spec
        protocol = text(spec.get("protocol"))
        if protocol not in ("HTTP", "HTTPS"):
            return "Accepted", "UnsupportedProtocol", f"protocol {protocol!r} is not supported"
        if listener.router is None:
            return (
                "Accepted",
                "PortUnavailable",
                f"no router listener serves port {spec.get('port')!r}",
            )
        if listener.router.tls != (protocol == "HTTPS"):
            return (
                "Accepted",
                "PortUnavailable",
                f"router listener {listener.router.name!r} on port {spec.get('port')} "
                + ("serves TLS" if listener.router.tls else "does not serve TLS"),
            )
        if listener.allowed_from not in ("Same", "All", "Selector"):
            return (
                "Accepted",
                "UnsupportedValue",
                f"allowedRoutes.namespaces.from {listener.allowed_from!r} is not supported",
            )
        if listener.allowed_from == "Selector":
            selector = mapping(
                mapping(mapping(spec.get("allowedRoutes")).get("namespaces")).get("selector")
            )
            if label_selector_problem(selector):
                return (
                    "Accepted",
                    "UnsupportedValue",
                    f"allowedRoutes.namespaces.selector: {label_selector_problem(selector)}",
                )
        if not listener.kinds_ok:
            return "ResolvedRefs", "InvalidRouteKinds", "only HTTPRoute is supported"
        if protocol == "HTTPS":
            return self._certificates(listener, inputs, out)
        return None

    @staticmethod
    def _certificates(
        listener: _Listener, inputs: GatewayInputs, out: Translation
    ) -> tuple[str, str, str] | None:
        tls = mapping(listener.spec.get("tls"))
        if text(tls.get("mode")) not in ("", "Terminate"):
            return "Accepted", "UnsupportedValue", "only tls.mode Terminate is supported"
        refs = items(tls.get("certificateRefs"))
        if not refs:
            return "ResolvedRefs", "InvalidCertificateRef", "an HTTPS listener needs a certificate"
        gateway_namespace = namespace(listener.gateway)
        wanted = []
        for ref in refs:
            if text(ref.get("group")) != "" or text(ref.get("kind")) not in ("", "Secret"):
                return "ResolvedRefs", "InvalidCertificateRef", "certificateRefs are Secrets"
            secret_namespace = text(ref.get("namespace")) or gateway_namespace
            secret_name = text(ref.get("name"))
            if secret_namespace != gateway_namespace and not granted(
                inputs.grants, "Gateway", gateway_namespace, "", "Secret", secret_namespace,
                secret_name,
            ):  # fmt: skip
                return (
                    "ResolvedRefs",
                    "RefNotPermitted",
                    f"no ReferenceGrant lets this Gateway use Secret "
                    f"{secret_namespace}/{secret_name}",
                )
            wanted.append(f"{secret_namespace}/{secret_name}")
        out.secrets.update(wanted)
        return None

    def _gateway_status(self, gateway: Obj, listeners: list[_Listener], out: Translation) -> None:
        gen = generation(gateway)
        listener_status = []
        for listener in listeners:
            problem = listener.problem
            accepted = problem is None or problem[0] != "Accepted"
            resolved = problem is None or problem[0] != "ResolvedRefs"
            conflicted = problem is not None and problem[0] == "Conflicted"
            conditions = [
                condition(
                    "Accepted",
                    accepted,
                    "Accepted" if accepted else problem[1] if problem else "Accepted",
                    "" if accepted or problem is None else problem[2],
                    gen,
                ),
                condition(
                    "ResolvedRefs",
                    resolved,
                    "ResolvedRefs" if resolved else problem[1] if problem else "ResolvedRefs",
                    "" if resolved or problem is None else problem[2],
                    gen,
                ),
                condition(
                    "Programmed",
                    listener.valid,
                    "Programmed" if listener.valid else "Invalid",
                    "" if listener.valid else "the listener is not usable (see its conditions)",
                    gen,
                ),
                condition(
                    "Conflicted",
                    conflicted,
                    problem[1] if conflicted and problem else "NoConflicts",
                    problem[2] if conflicted and problem else "",
                    gen,
                ),
            ]
            listener_status.append(
                {
                    "name": text(listener.spec.get("name")),
                    "supportedKinds": (
                        [{"group": GROUP, "kind": "HTTPRoute"}] if listener.kinds_ok else []
                    ),
                    "attachedRoutes": listener.attached,
                    "conditions": conditions,
                }
            )
        usable = any(listener.valid for listener in listeners)
        gateway_accepted = (usable, "Accepted" if usable else "ListenersNotValid")
        gateway_programmed = (usable, "Programmed" if usable else "Invalid")
        message = "" if usable else "no listener is usable"
        if mapping(gateway.get("spec")).get("addresses"):
            gateway_accepted = (False, "UnsupportedAddress")
            gateway_programmed = (False, "AddressNotUsable")
            message = "spec.addresses are not supported: the router's addresses are published"
        out.gateway_status[key(gateway)] = {
            "conditions": [
                condition("Accepted", *gateway_accepted, message, gen),
                condition("Programmed", *gateway_programmed, message, gen),
            ],
            "listeners": listener_status,
        }

    # --- HTTPRoutes -------------------------------------------------------------------------

    def _route(
        self,
        route: Obj,
        gateways: Mapping[str, Obj],
        listeners: Mapping[str, list[_Listener]],
        inputs: GatewayInputs,
        out: Translation,
    ) -> None:
        route_key = key(route)
        route_namespace = namespace(route)
        gen = generation(route)
        spec = mapping(route.get("spec"))
        hostnames = [h.lower() for h in strings(spec.get("hostnames"))]
        # host -> router listener names it is served on
        served: dict[str, set[str]] = {}
        parents: list[dict[str, Any]] = []
        for parent in items(spec.get("parentRefs")):
            if text(parent.get("group")) not in ("", GROUP) or text(parent.get("kind")) not in (
                "",
                "Gateway",
            ):
                continue
            gateway_key = (
                f"{text(parent.get('namespace')) or route_namespace}/{text(parent.get('name'))}"
            )
            if gateway_key not in gateways:
                continue  # not a Gateway of ours: its controller writes this entry
            reason, message = self._attach(
                route_namespace,
                inputs.namespace_labels.get(route_namespace, {}),
                hostnames,
                parent,
                listeners[gateway_key],
                served,
            )
            accepted = reason == "Accepted"
            parents.append(
                {
                    "parentRef": _parent_ref(parent),
                    "controllerName": self.controller,
                    "conditions": [condition("Accepted", accepted, reason, message, gen)],
                }
            )
        if not parents:
            return
        before = len(out.problems)
        resolved = self._rules(route, spec, served, inputs, out)
        invalid = [p.message for p in out.problems[before:] if p.message.startswith("rules[")]
        for entry in parents:
            entry["conditions"].append(condition("ResolvedRefs", *resolved, gen))
            if invalid:
                # Reported since v1.1: some rules (or matches) are not served as written.
                entry["conditions"].append(
                    condition("PartiallyInvalid", True, "UnsupportedValue", invalid[0], gen)
                )
        out.route_parents[route_key] = parents

    def _attach(
        self,
        route_namespace: str,
        route_namespace_labels: Mapping[str, str],
        hostnames: list[str],
        parent: Obj,
        listeners: list[_Listener],
        served: dict[str, set[str]],
    ) -> tuple[str, str]:
        section = text(parent.get("sectionName"))
        port = parent.get("port")
        candidates = [
            listener
            for listener in listeners
            if (not section or text(listener.spec.get("name")) == section)
            and (port is None or listener.spec.get("port") == port)
        ]
        if not candidates:
            return "NoMatchingParent", "no listener matches sectionName/port"
        allowed = [
            listener
            for listener in candidates
            if listener.valid
            and listener.kinds_ok
            and _admits(listener, route_namespace, route_namespace_labels)
        ]
        if not allowed:
            return "NotAllowedByListeners", "no listener allows routes from this namespace"
        attached = False
        for listener in allowed:
            listener_host = text(listener.spec.get("hostname")).lower() or None
            hosts = intersect(listener_host, hostnames)
            if hosts is None:
                continue
            attached = True
            listener.attached += 1
            assert listener.router is not None  # valid listeners have one
            for host in hosts:
                served.setdefault(host, set()).add(listener.router.name)
        if not attached:
            return "NoMatchingListenerHostname", "no listener hostname matches the route's"
        return "Accepted", ""

    def _rules(
        self,
        route: Obj,
        spec: Obj,
        served: dict[str, set[str]],
        inputs: GatewayInputs,
        out: Translation,
    ) -> tuple[bool, str, str]:
        """Add the route's rules to ``out``; the ResolvedRefs condition's (ok, reason, message)."""
        source = f"httproute/{key(route)}"
        groups: dict[tuple[str, ...], list[str]] = {}
        for host in sorted(served):
            if host in inputs.ingress_hosts:
                out.problems.append(
                    RouteProblem(
                        source, f"host {host or '(any)'} is routed by an Ingress; not served"
                    )
                )
                continue
            groups.setdefault(tuple(sorted(served[host])), []).append(host)
        resolved: tuple[bool, str, str] = (True, "ResolvedRefs", "")
        for rule_index, rule in enumerate(items(spec.get("rules"))):
            target, problem = self._backends(route, rule, inputs)
            if problem is not None and resolved[0]:
                resolved = (False, problem.reason, str(problem))
            fields, unsupported = _filters(rule)
            if not unsupported:
                timeouts, unsupported = _timeouts(rule)
                fields.update(timeouts)
            if not unsupported:
                try:
                    plugins = self._extensions(rule, namespace(route), inputs.policies)
                except PolicyRefused as exc:
                    # The specification: an unresolved filter is never skipped, its
                    # requests get an error (500, as for an invalid backend).
                    unsupported = str(exc)
                    if resolved[0]:
                        resolved = (False, exc.reason, str(exc))
                except PolicyInvalid as exc:
                    unsupported = str(exc)
                else:
                    if plugins:
                        fields["plugins"] = plugins
            if unsupported:
                out.problems.append(RouteProblem(source, f"rules[{rule_index}]: {unsupported}"))
                target = {"builtin": "invalid_backend"}
            elif "redirect" in fields:
                target = {}  # the redirect answers; backendRefs are not used
            matches = items(rule.get("matches")) or [{}]
            for match_index, match in enumerate(matches):
                path, problem_text = _path(match)
                if problem_text:
                    out.problems.append(
                        RouteProblem(
                            source,
                            f"rules[{rule_index}].matches[{match_index}]: {problem_text}; "
                            "match not served",
                        )
                    )
                    continue
                assert path is not None
                for group_index, (router_listeners, hosts) in enumerate(sorted(groups.items())):
                    suffix = f"r{rule_index}.m{match_index}.l{group_index}"
                    built = {
                        **self._redirect_port(fields, router_listeners),
                        **target,
                        "name": route_name(route, suffix),
                        "hosts": [h for h in hosts if h],
                        # A Gateway API wildcard stands for one label or more.
                        "wildcard_depth": "any",
                        "path": path[0],
                        "path_type": path[1],
                        "match": path[2],
                        "listeners": list(router_listeners),
                    }
                    try:
                        out.routes.append(self._route_of(built))
                    except ValidationError as exc:
                        error = exc.errors()[0]
                        out.problems.append(
                            RouteProblem(source, f"rules[{rule_index}]: {error['msg']}; not served")
                        )
        return resolved

    def _extensions(
        self, rule: Obj, route_namespace: str, policies: Mapping[str, Obj]
    ) -> dict[str, Any]:
        """The ``plugins`` block of the rule's ``ExtensionRef`` filters (RouterPolicies; a
        later one's plugin block replaces an earlier one's)."""
        plugins: dict[str, Any] = {}
        for entry in items(rule.get("filters")):
            if text(entry.get("type")) == "ExtensionRef":
                ref = mapping(entry.get("extensionRef"))
                plugins.update(policy_plugins(ref, route_namespace, policies, self._checked))
        return plugins

    def _checked(self, policy: Obj) -> dict[str, Any]:
        found = self._policies.get(id(policy)) or self._previous_policies.get(id(policy))
        if found is None or found[0] is not policy:
            try:
                found = (policy, policy_settings(policy))
            except PolicyInvalid as exc:
                found = (policy, str(exc))
        self._policies[id(policy)] = found
        if isinstance(found[1], str):
            raise PolicyInvalid(found[1])
        return found[1]

    def _route_of(self, fields: dict[str, Any]) -> Route:
        """The Route for ``fields``: the previous translation's when they are the same."""
        fingerprint = orjson.dumps(fields, default=_endpoint_fields, option=orjson.OPT_SORT_KEYS)
        route = self._previous.get(fingerprint)
        if route is None:
            route = Route.model_validate(fields)
        self._built[fingerprint] = route
        return route

    def _redirect_port(
        self, fields: dict[str, Any], router_listeners: tuple[str, ...]
    ) -> dict[str, Any]:
        """``fields`` with a redirect's port: when neither a port nor a scheme is given, the
        Gateway listener's (as the specification says), if the route has one."""
        redirect = fields.get("redirect")
        if redirect is None or "port" in redirect or "scheme" in redirect:
            return fields
        ports = {
            port for port, listener in self.listeners.items() if listener.name in router_listeners
        }
        if len(ports) != 1:
            return fields
        return {**fields, "redirect": {**redirect, "port": ports.pop()}}

    def _backends(
        self, route: Obj, rule: Obj, inputs: GatewayInputs
    ) -> tuple[dict[str, Any], _Refused | None]:
        """The route fields for the rule's backends, and the first unresolved reference."""
        route_namespace = namespace(route)
        shares: list[tuple[int, list[Endpoint]]] = []
        refused: _Refused | None = None
        invalid_weight = 0
        refs = items(rule.get("backendRefs"))
        for ref in refs:
            weight = ref.get("weight", 1)
            weight = weight if isinstance(weight, int) and not isinstance(weight, bool) else 0
            try:
                endpoints = self._backend(route_namespace, ref, inputs)
            except _Refused as exc:
                refused = refused or exc
                invalid_weight += max(0, weight)
                continue
            if weight > 0 and endpoints:
                shares.append((weight, endpoints))
        if not shares:
            if refused is not None or not refs:
                return {"builtin": "invalid_backend"}, refused
            return {"builtin": "unavailable"}, refused
        if invalid_weight:
            # The specification: the invalid backends' share of requests gets 500.
            shares.append((invalid_weight, [INVALID_BACKEND]))
        return {"upstreams": weighted(shares)}, refused

    def _backend(self, route_namespace: str, ref: Obj, inputs: GatewayInputs) -> list[Endpoint]:
        group, kind = text(ref.get("group")), text(ref.get("kind")) or "Service"
        service_name = text(ref.get("name"))
        if group != "" or kind != "Service":
            raise _Refused("InvalidKind", f"backendRef kind {group}/{kind} is not supported")
        service_namespace = text(ref.get("namespace")) or route_namespace
        if service_namespace != route_namespace and not granted(
            inputs.grants, "HTTPRoute", route_namespace, "", "Service", service_namespace,
            service_name,
        ):  # fmt: skip
            raise _Refused(
                "RefNotPermitted",
                f"no ReferenceGrant lets this route use Service {service_namespace}/{service_name}",
            )
        port = ref.get("port")
        if not isinstance(port, int) or isinstance(port, bool):
            raise _Refused("BackendNotFound", f"backendRef to {service_name} has no port")
        service_key = f"{service_namespace}/{service_name}"
        service = inputs.services.get(service_key)
        slices = inputs.slices_of(service_key)
        stamp: tuple[object, ...] | None = None
        if inputs.pod_keys_of is not None and service is not None:
            pod_keys_of = inputs.pod_keys_of
            pods = [inputs.pods.get(k) for s in slices for k in pod_keys_of(s)]
            stamp = (service, *slices, *pods)
            cached = self._previous_endpoints.get((service_key, port))
            if cached is not None and _same(cached[0], stamp):
                self._endpoints[(service_key, port)] = cached
                return cached[1]
        try:
            endpoints = service_endpoints(
                service, service_key, slices, PortRef(number=port), "http", inputs.pods
            )
        except BackendProblem as exc:
            raise _Refused("BackendNotFound", str(exc)) from None
        if stamp is not None:
            self._endpoints[(service_key, port)] = (stamp, endpoints)
        return endpoints


def _same(one: tuple[object, ...], other: tuple[object, ...]) -> bool:
    """The same objects (the watch replaces an object whenever it changes)."""
    return len(one) == len(other) and all(a is b for a, b in zip(one, other, strict=True))


def _endpoint_fields(value: object) -> object:
    if isinstance(value, Endpoint):
        return (value.url, value.weight, value.version)
    raise TypeError(type(value).__name__)


def weighted(shares: list[tuple[int, list[Endpoint]]]) -> list[Endpoint]:
    """The endpoints of every backend, weighted so that each backend gets its share.

    Endpoint weights are 1..100, so shares are rounded: ``weight / endpoints`` scaled so
    that the largest is 100. The endpoints come with weight 1 (one backend: as they are)."""
    if len(shares) == 1:
        return shares[0][1]
    largest = max(weight / len(endpoints) for weight, endpoints in shares)
    result: list[Endpoint] = []
    for weight, endpoints in shares:
        each = max(1, min(100, round(weight / len(endpoints) / largest * 100)))
        result.extend(
            Endpoint.model_construct(url=e.url, weight=each, version=e.version) for e in endpoints
        )
    return result


_PROTOCOL_FAMILIES = {"HTTP": "HTTP", "HTTPS": "TLS", "TLS": "TLS", "TCP": "TCP", "UDP": "UDP"}


def listener_conflicts(specs: list[Obj]) -> dict[int, tuple[str, str, str]]:
    """The listeners (by index) that are not distinct, as the specification defines it:
    on one port, protocols that cannot share it (``ProtocolConflict``: HTTP with HTTPS,
    say), or the same protocol family and the same hostname (``HostnameConflict``; no
    hostname is a hostname too). Every listener of such a set is conflicted."""
    by_port: dict[int, list[int]] = {}
    for index, spec in enumerate(specs):
        port = spec.get("port")
        if isinstance(port, int) and not isinstance(port, bool):
            by_port.setdefault(port, []).append(index)
    conflicts: dict[int, tuple[str, str, str]] = {}
    for port, indexes in by_port.items():
        families = {
            _PROTOCOL_FAMILIES.get(text(specs[i].get("protocol")), text(specs[i].get("protocol")))
            for i in indexes
        }
        if len(families) > 1:
            message = f"port {port} is used with protocols that cannot share it"
            conflicts.update({i: ("Conflicted", "ProtocolConflict", message) for i in indexes})
            continue
        by_host: dict[str, list[int]] = {}
        for i in indexes:
            by_host.setdefault(text(specs[i].get("hostname")).lower(), []).append(i)
        for host, same in by_host.items():
            if len(same) > 1:
                message = f"another listener on port {port} has hostname {host or '(none)'}"
                conflicts.update({i: ("Conflicted", "HostnameConflict", message) for i in same})
    return conflicts


def _admits(listener: _Listener, route_namespace: str, labels: Mapping[str, str]) -> bool:
    """Whether the listener's ``allowedRoutes.namespaces`` admits routes of the namespace."""
    if listener.allowed_from == "All":
        return True
    if listener.allowed_from == "Same":
        return namespace(listener.gateway) == route_namespace
    selector = mapping(
        mapping(mapping(listener.spec.get("allowedRoutes")).get("namespaces")).get("selector")
    )
    return label_selector_matches(selector, labels)


_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def label_selector_problem(selector: Obj) -> str:
    """Why a LabelSelector cannot be used ("" when it can)."""
    for expression in items(selector.get("matchExpressions")):
        operator = text(expression.get("operator"))
        if operator not in _OPERATORS:
            return f"operator {operator!r} is not one of {', '.join(_OPERATORS)}"
    return ""


def label_selector_matches(selector: Obj, labels: Mapping[str, str]) -> bool:
    """A LabelSelector's meaning (every requirement holds; an empty selector: everything)."""
    for label, value in mapping(selector.get("matchLabels")).items():
        if labels.get(label) != value:
            return False
    for expression in items(selector.get("matchExpressions")):
        label = text(expression.get("key"))
        values = strings(expression.get("values"))
        operator = text(expression.get("operator"))
        present = label in labels
        if operator == "In" and not (present and labels[label] in values):
            return False
        if operator == "NotIn" and present and labels[label] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _parent_ref(parent: Obj) -> dict[str, Any]:
    return {
        k: parent[k]
        for k in ("group", "kind", "namespace", "name", "sectionName", "port")
        if k in parent
    }


def _path(match: Obj) -> tuple[tuple[str, str, dict[str, Any]] | None, str]:
    """``(path, path type, conditions)`` of a match, or why it cannot be served."""
    conditions: dict[str, Any] = {}
    method = text(match.get("method"))
    if method:
        conditions["method"] = method
    for field_name, target in (("headers", "headers"), ("queryParams", "query")):
        values: dict[str, str] = {}
        seen: set[str] = set()
        for entry in items(match.get(field_name)):
            if text(entry.get("type")) not in ("", "Exact"):
                return None, f"{field_name} match type {text(entry.get('type'))!r} is not supported"
            entry_name = text(entry.get("name"))
            folded = entry_name.lower() if field_name == "headers" else entry_name
            if folded in seen:
                continue  # the specification: only the first entry of a name counts
            seen.add(folded)
            values[entry_name] = text(entry.get("value"))
        if values:
            conditions[target] = values
    path = mapping(match.get("path"))
    kind = text(path.get("type")) or "PathPrefix"
    value = text(path.get("value")) or "/"
    if kind == "PathPrefix":
        return (value, "Prefix", conditions), ""
    if kind == "Exact":
        return (value, "Exact", conditions), ""
    return None, f"path type {kind!r} is not supported"


def _path_modifier(value: Obj) -> dict[str, str] | str:
    """A ``PathRewrite`` for an HTTPPathModifier, or why not."""
    kind = text(value.get("type"))
    if kind == "ReplaceFullPath":
        return {"full_path": text(value.get("replaceFullPath")) or "/"}
    if kind == "ReplacePrefixMatch":
        return {"prefix": text(value.get("replacePrefixMatch")) or "/"}
    return f"path modifier type {kind!r} is not supported"


_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|ms|m|s)){1,4}$")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def gateway_duration(value: str) -> float | None:
    """Seconds of a Gateway API duration (GEP-2257: ``1h30m``, ``500ms``); None if invalid."""
    if not _DURATION.match(value):
        return None
    return sum(
        int(number) * _UNIT_SECONDS[unit]
        for number, unit in re.findall(r"([0-9]+)(ms|h|m|s)", value)
    )


def _timeouts(rule: Obj) -> tuple[dict[str, Any], str]:
    """``timeouts.total`` for the rule's ``timeouts`` (the shorter of ``request`` and
    ``backendRequest``; ``0s``: none), or what is wrong."""
    limits = []
    for field_name in ("request", "backendRequest"):
        raw = text(mapping(rule.get("timeouts")).get(field_name))
        if not raw:
            continue
        seconds = gateway_duration(raw)
        if seconds is None:
            return {}, f"timeouts.{field_name} {raw!r} is not a duration"
        if seconds > 0:
            limits.append(seconds)
    return ({"timeouts": {"total": min(limits)}} if limits else {}), ""


def _header_rules(modifier: Obj) -> dict[str, Any]:
    return {
        "set": {text(h.get("name")): text(h.get("value")) for h in items(modifier.get("set"))},
        "add": {text(h.get("name")): text(h.get("value")) for h in items(modifier.get("add"))},
        "remove": strings(modifier.get("remove")),
    }


def _filters(rule: Obj) -> tuple[dict[str, Any], str]:
    """The route fields for the rule's filters, or what is not supported. A redirect's
    ``port`` is left out when the listener's port is to be shown (see ``_rules``)."""
    fields: dict[str, Any] = {}
    host: str | None = None
    for entry in items(rule.get("filters")):
        kind = text(entry.get("type"))
        if kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            request = kind == "RequestHeaderModifier"
            modifier = mapping(
                entry.get("requestHeaderModifier" if request else "responseHeaderModifier")
            )
            fields["request_headers" if request else "response_headers"] = _header_rules(modifier)
        elif kind == "URLRewrite":
            rewrite = mapping(entry.get("urlRewrite"))
            if "path" in rewrite:
                path = _path_modifier(mapping(rewrite.get("path")))
                if isinstance(path, str):
                    return {}, path
                fields["rewrite"] = path
            if text(rewrite.get("hostname")):
                host = text(rewrite.get("hostname"))
        elif kind == "RequestRedirect":
            redirect = mapping(entry.get("requestRedirect"))
            wanted: dict[str, Any] = {"status_code": redirect.get("statusCode", 302)}
            for source, target in (
                ("scheme", "scheme"),
                ("hostname", "hostname"),
                ("port", "port"),
            ):
                if redirect.get(source) is not None:
                    wanted[target] = redirect[source]
            if "path" in redirect:
                path = _path_modifier(mapping(redirect.get("path")))
                if isinstance(path, str):
                    return {}, path
                wanted["path"] = path
            fields["builtin"] = "redirect"
            fields["redirect"] = wanted
        elif kind != "ExtensionRef":  # see _extensions
            return {}, f"filter {kind!r} is not supported"
    if host is not None:
        headers = fields.setdefault("request_headers", {"set": {}, "add": {}, "remove": []})
        headers["set"] = {**headers["set"], "Host": host}
    return fields, ""
