"""The Gateway API translation, case by case after the upstream conformance suite (Core).

Each case names the conformance test it mirrors; it gives the cluster's objects and checks
the routes (host, path, target) and the status the router would write.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from multidict import CIMultiDict

from router.api import Route
from router.routing.table import MatchFacts, RouteTable
from router_plugins.kubernetes.endpoints import index_slices
from router_plugins.kubernetes.gateway.translate import (
    GatewayInputs,
    RouterListener,
    Translation,
    Translator,
)
from router_plugins.kubernetes.objects import key
from router_plugins.kubernetes.version import pod_info
from tests.support.kubeapi import load_objects
from tests.support.kubevalidation import validate

CONTROLLER = "commons-router.io/gateway-controller"
GROUP = "gateway.networking.k8s.io"
LISTENERS = {80: RouterListener("web", tls=False), 443: RouterListener("websecure", tls=True)}


def gateway_class(name: str = "commons", controller: str = CONTROLLER) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name, "generation": 1},
        "spec": {"controllerName": controller},
    }


def gateway(
    name: str = "gw",
    ns: str = "infra",
    listeners: list[dict[str, Any]] | None = None,
    class_name: str = "commons",
) -> dict[str, Any]:
    return {
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns, "generation": 2},
        "spec": {
            "gatewayClassName": class_name,
            "listeners": listeners
            if listeners is not None
            else [
                {
                    "name": "http",
                    "port": 80,
                    "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


def http_route(
    name: str,
    ns: str = "app",
    *,
    parents: list[dict[str, Any]] | None = None,
    hostnames: list[str] | None = None,
    rules: list[dict[str, Any]] | None = None,
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    return {
        "kind": "HTTPRoute",
        "metadata": {
            "name": name,
            "namespace": ns,
            "generation": 3,
            "creationTimestamp": created,
        },
        "spec": {
            "parentRefs": parents
            if parents is not None
            else [{"name": "gw", "namespace": "infra"}],
            "hostnames": hostnames or [],
            "rules": rules if rules is not None else [{"backendRefs": [backend("web")]}],
        },
    }


def backend(name: str, port: int = 8080, **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": port, **extra}


def service(name: str, ns: str = "app", ips: tuple[str, ...] = ("10.0.0.1",)) -> list[Any]:
    svc = {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"port": 8080, "targetPort": 8080}]},
    }
    endpoint_slice = {
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-1",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
    }
    return [svc, endpoint_slice]


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def grant(
    ns: str, from_ns: str, from_kind: str = "HTTPRoute", to_kind: str = "Service"
) -> dict[str, Any]:
    return {
        "kind": "ReferenceGrant",
        "metadata": {"name": f"from-{from_ns}", "namespace": ns},
        "spec": {
            "from": [{"group": GROUP, "kind": from_kind, "namespace": from_ns}],
            "to": [{"group": "", "kind": to_kind}],
        },
    }


def translate(*objects: Any, ingress_hosts: frozenset[str] = frozenset()) -> Translation:
    flat: list[dict[str, Any]] = []
    for obj in objects:
        flat.extend(obj if isinstance(obj, list) else [obj])
    by_kind: dict[str, dict[str, Any]] = {}
    for obj in flat:
        by_kind.setdefault(obj["kind"], {})[key(obj)] = obj
    slices = index_slices(by_kind.get("EndpointSlice", {}).values())
    inputs = GatewayInputs(
        classes=by_kind.get("GatewayClass", {}),
        gateways=by_kind.get("Gateway", {}),
        routes=by_kind.get("HTTPRoute", {}),
        grants=by_kind.get("ReferenceGrant", {}),
        services=by_kind.get("Service", {}),
        slices_of=lambda service_key: slices.get(service_key, []),
        namespace_labels={
            ns["metadata"]["name"]: ns["metadata"].get("labels", {})
            for ns in by_kind.get("Namespace", {}).values()
        },
        ingress_hosts=ingress_hosts,
        policies=by_kind.get("RouterPolicy", {}),
    )
    return Translator(CONTROLLER, LISTENERS).translate(inputs)


def served(result: Translation) -> list[tuple[str, str, str, str]]:
    """(hosts, path type + path, target, listeners) of every route."""

    def target(route: Route) -> str:
        if route.builtin:
            return {"invalid_backend": "500", "unavailable": "503"}.get(route.builtin, "?")
        return ",".join(f"{e.url}*{e.weight}" for e in route.upstreams)

    return [
        (
            ",".join(r.hosts) or "*",
            f"{r.path_type} {r.path}",
            target(r),
            ",".join(r.listeners),
        )
        for r in result.routes
    ]


def route_condition(result: Translation, route: str, kind: str, parent: int = 0) -> str:
    conditions = result.route_parents[route][parent]["conditions"]
    found = next(c for c in conditions if c["type"] == kind)
    return f"{found['status']}/{found['reason']}"


def listener_status(result: Translation, gw: str = "infra/gw", index: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = result.gateway_status[gw]["listeners"][index]
    return status


WEB = [gateway_class(), gateway(), *service("web")]
UP = "http://10.0.0.1:8080*1"
INVALID = "http://invalid-backend.invalid"


@dataclass
class Case:
    objects: list[Any]
    routes: list[tuple[str, str, str, str]] | None = None
    route_status: dict[str, dict[str, str]] = field(default_factory=dict)
    """HTTPRoute key -> condition type -> "status/reason"."""
    check: Callable[[Translation], None] | None = None


def _gateway_class_status(result: Translation) -> None:
    assert [c["type"] for c in result.class_status["commons"]] == [
        "Accepted",
        "SupportedVersion",
    ]
    assert all(c["status"] == "True" for c in result.class_status["commons"])
    assert "other" not in result.class_status


def _gateway_status(result: Translation) -> None:
    status = result.gateway_status["infra/gw"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Accepted": "True",
        "Programmed": "True",
    }
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])
    assert listener_status(result)["attachedRoutes"] == 2
    assert listener_status(result)["supportedKinds"] == [{"group": GROUP, "kind": "HTTPRoute"}]


def _unsupported_port(result: Translation) -> None:
    listener = listener_status(result)
    conditions = {c["type"]: f"{c['status']}/{c['reason']}" for c in listener["conditions"]}
    assert conditions["Accepted"] == "False/PortUnavailable"
    assert conditions["Programmed"] == "False/Invalid"
    assert result.gateway_status["infra/gw"]["conditions"][0]["reason"] == "ListenersNotValid"


def _https_listener(result: Translation) -> None:
    assert result.secrets == {"infra/site-cert"}
    conditions = {c["type"]: c["status"] for c in listener_status(result)["conditions"]}
    assert conditions == {
        "Accepted": "True",
        "ResolvedRefs": "True",
        "Programmed": "True",
        "Conflicted": "False",
    }


def _https_secret_elsewhere(result: Translation) -> None:
    assert result.secrets == set()
    conditions = {
        c["type"]: f"{c['status']}/{c['reason']}" for c in listener_status(result)["conditions"]
    }
    assert conditions["ResolvedRefs"] == "False/RefNotPermitted"


def _observed_generation(result: Translation) -> None:
    entry = result.route_parents["app/a"][0]
    assert entry["controllerName"] == CONTROLLER
    assert entry["parentRef"] == {"name": "gw", "namespace": "infra"}
    assert all(c["observedGeneration"] == 3 for c in entry["conditions"])


@dataclass(frozen=True)
class _Compiled:
    spec: Route


def _wildcards_take_deeper_names(result: Translation) -> None:
    """In the Gateway API ``*.wildcard.io`` stands for one label or more."""
    table = RouteTable([_Compiled(route) for route in result.routes])
    for host in ("bar.wildcard.io", "a.b.wildcard.io"):
        found = table.match(host, "/")
        assert found is not None and found.spec.hosts == ["*.wildcard.io"], host
    assert table.match("wildcard.io", "/") is None


def _ingress_owns_host(result: Translation) -> None:
    assert any("routed by an Ingress" in p.message for p in result.problems)


HTTPS = {
    "name": "https",
    "port": 443,
    "protocol": "HTTPS",
    "hostname": "secure.example.com",
    "tls": {"certificateRefs": [{"name": "site-cert"}]},
    "allowedRoutes": {"namespaces": {"from": "All"}},
}

CASES: dict[str, Case] = {
    "GatewayClassObservedGenerationBump": Case(
        [gateway_class(), gateway_class("other", "example.com/other")],
        check=_gateway_class_status,
    ),
    "GatewayObservedGenerationBump / GatewayWithAttachedRoutes": Case(
        [*WEB, http_route("a"), http_route("b", hostnames=["b.example.com"])],
        check=_gateway_status,
    ),
    "GatewayListenerPortNotServed (own case: no router listener)": Case(
        [
            gateway_class(),
            gateway(listeners=[{"name": "http", "port": 8081, "protocol": "HTTP"}]),
        ],
        check=_unsupported_port,
    ),
    "GatewaySecretReferenceGrantAllInNamespace (HTTPS listener)": Case(
        [
            gateway_class(),
            gateway(listeners=[HTTPS]),
            *service("web"),
            http_route("a", hostnames=["secure.example.com"]),
        ],
        routes=[("secure.example.com", "Prefix /", UP, "websecure")],
        check=_https_listener,
    ),
    "GatewaySecretMissingReferenceGrant": Case(
        [
            gateway_class(),
            gateway(
                listeners=[
                    {
                        **HTTPS,
                        "tls": {"certificateRefs": [{"name": "site-cert", "namespace": "certs"}]},
                    }
                ]
            ),
        ],
        check=_https_secret_elsewhere,
    ),
    "HTTPRouteSimpleSameNamespace": Case(
        [
            gateway_class(),
            gateway(ns="app"),
            *service("web"),
            http_route("a", parents=[{"name": "gw"}]),
        ],
        routes=[("*", "Prefix /", UP, "web")],
        route_status={"app/a": {"Accepted": "True/Accepted", "ResolvedRefs": "True/ResolvedRefs"}},
    ),
    "HTTPRouteObservedGenerationBump": Case([*WEB, http_route("a")], check=_observed_generation),
    "HTTPRouteHostnameIntersection": Case(
        [
            gateway_class(),
            gateway(
                listeners=[
                    {
                        "name": "wild",
                        "port": 80,
                        "protocol": "HTTP",
                        "hostname": "*.wildcard.io",
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ]
            ),
            *service("web"),
            http_route("match", hostnames=["foo.wildcard.io", "other.example.com"]),
            http_route("wider", hostnames=["*.io"]),
            http_route("none", hostnames=["bar.example.com"]),
        ],
        routes=[
            ("foo.wildcard.io", "Prefix /", UP, "web"),
            ("*.wildcard.io", "Prefix /", UP, "web"),
        ],
        route_status={
            "app/match": {"Accepted": "True/Accepted"},
            "app/wider": {"Accepted": "True/Accepted"},
            "app/none": {"Accepted": "False/NoMatchingListenerHostname"},
        },
        check=_wildcards_take_deeper_names,
    ),
    "HTTPRouteListenerHostnameMatching": Case(
        [
            gateway_class(),
            gateway(
                listeners=[
                    {"name": "one", "port": 80, "protocol": "HTTP", "hostname": "one.example.com"},
                    {"name": "two", "port": 80, "protocol": "HTTP", "hostname": "two.example.com"},
                ],
                ns="app",
            ),
            *service("web"),
            http_route("a", parents=[{"name": "gw", "sectionName": "two"}]),
        ],
        routes=[("two.example.com", "Prefix /", UP, "web")],
    ),
    "HTTPRouteExactPathMatching / HTTPRouteMatching": Case(
        [
            *WEB,
            http_route(
                "a",
                rules=[
                    {
                        "matches": [
                            {"path": {"type": "Exact", "value": "/one"}},
                            {"path": {"type": "PathPrefix", "value": "/two"}},
                        ],
                        "backendRefs": [backend("web")],
                    }
                ],
            ),
        ],
        routes=[("*", "Exact /one", UP, "web"), ("*", "Prefix /two", UP, "web")],
    ),
    "HTTPRouteMatchingAcrossRoutes (oldest route first)": Case(
        [
            *WEB,
            http_route("younger", created="2026-02-01T00:00:00Z", hostnames=["x.example.com"]),
            http_route("older", created="2026-01-01T00:00:00Z", hostnames=["x.example.com"]),
        ],
        check=lambda result: (
            None
            if [r.name.split(".")[2] for r in result.routes] == ["older", "younger"]
            else pytest.fail("routes not oldest first")
        ),
    ),
    "HTTPRouteWeight": Case(
        [
            *WEB,
            *service("canary", ips=("10.0.1.1", "10.0.1.2")),
            http_route(
                "a",
                rules=[
                    {
                        "backendRefs": [
                            backend("web", weight=70),
                            backend("canary", weight=30),
                            backend("web", weight=0),
                        ]
                    }
                ],
            ),
        ],
        routes=[
            (
                "*",
                "Prefix /",
                "http://10.0.0.1:8080*100,http://10.0.1.1:8080*21,http://10.0.1.2:8080*21",
                "web",
            )
        ],
    ),
    "HTTPRouteCrossNamespace": Case(
        [
            *WEB,
            *service("web", ns="backends"),
            http_route("a", rules=[{"backendRefs": [backend("web", namespace="backends")]}]),
        ],
        routes=[("*", "Prefix /", "500", "web")],
        route_status={
            "app/a": {"Accepted": "True/Accepted", "ResolvedRefs": "False/RefNotPermitted"}
        },
    ),
    "HTTPRouteReferenceGrant": Case(
        [
            *WEB,
            *service("other", ns="backends", ips=("10.0.2.1",)),
            grant("backends", "app"),
            http_route("a", rules=[{"backendRefs": [backend("other", namespace="backends")]}]),
        ],
        routes=[("*", "Prefix /", "http://10.0.2.1:8080*1", "web")],
        route_status={"app/a": {"ResolvedRefs": "True/ResolvedRefs"}},
    ),
    "HTTPRouteInvalidNonExistentBackendRef": Case(
        [*WEB, http_route("a", rules=[{"backendRefs": [backend("missing")]}])],
        routes=[("*", "Prefix /", "500", "web")],
        route_status={"app/a": {"ResolvedRefs": "False/BackendNotFound"}},
    ),
    "HTTPRouteInvalidBackendRefUnknownKind": Case(
        [
            *WEB,
            http_route(
                "a",
                rules=[{"backendRefs": [{"group": "example.com", "kind": "Bucket", "name": "b"}]}],
            ),
        ],
        routes=[("*", "Prefix /", "500", "web")],
        route_status={"app/a": {"ResolvedRefs": "False/InvalidKind"}},
    ),
    "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant (invalid share answers 500)": Case(
        [
            *WEB,
            http_route(
                "a",
                rules=[{"backendRefs": [backend("web"), backend("web", namespace="elsewhere")]}],
            ),
        ],
        # Half the requests to the valid backend, half answered 500.
        routes=[("*", "Prefix /", f"{UP[:-2]}*100,{INVALID}*100", "web")],
        route_status={"app/a": {"ResolvedRefs": "False/RefNotPermitted"}},
    ),
    "HTTPRouteInvalidParentRefNotMatchingSectionName": Case(
        [*WEB, http_route("a", parents=[{"name": "gw", "namespace": "infra", "sectionName": "x"}])],
        routes=[],
        route_status={"app/a": {"Accepted": "False/NoMatchingParent"}},
    ),
    "HTTPRouteInvalidParentRefNotMatchingListenerPort": Case(
        [*WEB, http_route("a", parents=[{"name": "gw", "namespace": "infra", "port": 81}])],
        routes=[],
        route_status={"app/a": {"Accepted": "False/NoMatchingParent"}},
    ),
    "HTTPRouteInvalidCrossNamespaceParentRef": Case(
        [
            gateway_class(),
            gateway(listeners=[{"name": "http", "port": 80, "protocol": "HTTP"}]),
            *service("web"),
            http_route("a"),
        ],
        routes=[],
        route_status={"app/a": {"Accepted": "False/NotAllowedByListeners"}},
    ),
    "GatewayAllowedRoutesSelector (own case: namespace labels)": Case(
        [
            gateway_class(),
            gateway(
                listeners=[
                    {
                        "name": "http",
                        "port": 80,
                        "protocol": "HTTP",
                        "allowedRoutes": {
                            "namespaces": {
                                "from": "Selector",
                                "selector": {
                                    "matchLabels": {"gateway-access": "yes"},
                                    "matchExpressions": [
                                        {"key": "env", "operator": "NotIn", "values": ["dev"]}
                                    ],
                                },
                            }
                        },
                    }
                ]
            ),
            namespace("app", {"gateway-access": "yes"}),
            namespace("dev", {"gateway-access": "yes", "env": "dev"}),
            namespace("other", {}),
            *service("web"),
            http_route("a"),
            http_route("b", ns="dev"),
            http_route("c", ns="other"),
        ],
        routes=[("*", "Prefix /", UP, "web")],
        route_status={
            "app/a": {"Accepted": "True/Accepted"},
            "dev/b": {"Accepted": "False/NotAllowedByListeners"},
            "other/c": {"Accepted": "False/NotAllowedByListeners"},
        },
    ),
    "GatewayStaticAddresses (own case: not supported)": Case(
        [
            gateway_class(),
            {
                **gateway(),
                "spec": {
                    **gateway()["spec"],
                    "addresses": [{"type": "IPAddress", "value": "192.0.2.1"}],
                },
            },
            *service("web"),
            http_route("a"),
        ],
        routes=[],
        route_status={"app/a": {"Accepted": "False/NotAllowedByListeners"}},
        check=lambda result: (
            None
            if [c["reason"] for c in result.gateway_status["infra/gw"]["conditions"]]
            == ["UnsupportedAddress", "AddressNotUsable"]
            else pytest.fail(str(result.gateway_status))
        ),
    ),
    "HTTPRouteServiceNoEndpoints (503, as for Ingress)": Case(
        [
            *WEB,
            *service("empty", ips=()),
            http_route("a", rules=[{"backendRefs": [backend("empty")]}]),
        ],
        routes=[("*", "Prefix /", "503", "web")],
        route_status={"app/a": {"ResolvedRefs": "True/ResolvedRefs"}},
    ),
    "HTTPRouteOtherControllerParent (no entry written)": Case(
        [
            *WEB,
            gateway("theirs", class_name="other"),
            http_route("a", parents=[{"name": "theirs", "namespace": "infra"}]),
        ],
        routes=[],
        check=lambda result: (
            None if "app/a" not in result.route_parents else pytest.fail("entry written")
        ),
    ),
    "IngressOwnsHost (coexistence)": Case(
        [*WEB, http_route("a", hostnames=["shop.example.com", "new.example.com"])],
        routes=[("new.example.com", "Prefix /", UP, "web")],
        check=_ingress_owns_host,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conformance_case(name: str) -> None:
    case = CASES[name]
    ingress_hosts = frozenset({"shop.example.com"})
    result = translate(*case.objects, ingress_hosts=ingress_hosts)
    if case.routes is not None:
        assert served(result) == case.routes
    for route_key, wanted in case.route_status.items():
        for kind, value in wanted.items():
            assert route_condition(result, route_key, kind) == value, (route_key, kind)
    if case.check is not None:
        case.check(result)


def test_the_example_gateway_and_route_are_valid_and_ours() -> None:
    root = Path(__file__).resolve().parents[2] / "config" / "kubernetes"
    objects = [
        *yaml.safe_load_all((root / "gateway-api" / "gatewayclass.yaml").read_text()),
        *yaml.safe_load_all((root / "example" / "gateway.yaml").read_text()),
    ]
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("generation", 1)
        validate(obj)
    objects = [o for o in objects if o["kind"] != "Namespace"]
    for service_name in ("hello-api", "hello-v1", "hello-v2"):
        svc, _ = service(service_name, ns="hello-gw")
        svc["spec"] = {"ports": [{"port": 80}]}
        objects.append(svc)  # no endpoints yet: the routes answer 503
    result = translate(*objects)
    assert result.secrets == {"hello-gw/hello-gw-tls"}
    (listener_http, listener_https) = result.gateway_status["hello-gw/public"]["listeners"]
    assert listener_http["attachedRoutes"] == listener_https["attachedRoutes"] == 1
    assert [(r.hosts, r.path, r.listeners) for r in result.routes] == [
        (["hello-gw.example.org"], "/api", ["web", "websecure"]),
        (["hello-gw.example.org"], "/", ["web", "websecure"]),
    ]


@dataclass(frozen=True)
class Entry:
    spec: Route


def choose(
    result: Translation,
    path: str,
    *,
    host: str = "x.example.com",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    query: str = "",
) -> str | None:
    """The HTTPRoute (name) whose route the router's table picks for the request."""
    table = RouteTable([Entry(r) for r in result.routes])
    assert table.conflicts == ()
    found = table.match(host, path, MatchFacts(method, CIMultiDict(headers or {}), query, "web"))
    return None if found is None else found.spec.name.split(".")[2]


def matching_routes() -> Translation:
    """After the conformance suite's HTTPRouteMatchingAcrossRoutes and the header, query
    and method matching cases."""

    def rule(*matches: dict[str, Any]) -> dict[str, Any]:
        return {"matches": list(matches), "backendRefs": [backend("web")]}

    return translate(
        *WEB,
        http_route(
            "plain",
            hostnames=["x.example.com"],
            rules=[rule({"path": {"type": "PathPrefix", "value": "/"}})],
            created="2026-01-01T00:00:00Z",
        ),
        http_route(
            "version-two",
            hostnames=["x.example.com"],
            rules=[rule({"headers": [{"name": "version", "value": "two"}]})],
            created="2026-01-02T00:00:00Z",
        ),
        http_route(
            "two-headers",
            hostnames=["x.example.com"],
            rules=[
                rule(
                    {
                        "headers": [
                            {"name": "version", "value": "two"},
                            {"name": "color", "value": "orange"},
                            {"name": "Color", "value": "ignored"},
                        ]
                    }
                )
            ],
            created="2026-01-03T00:00:00Z",
        ),
        http_route(
            "by-query",
            hostnames=["x.example.com"],
            rules=[rule({"queryParams": [{"name": "animal", "value": "whale"}]})],
            created="2026-01-04T00:00:00Z",
        ),
        http_route(
            "by-method",
            hostnames=["x.example.com"],
            rules=[rule({"method": "POST", "path": {"type": "PathPrefix", "value": "/"}})],
            created="2026-01-05T00:00:00Z",
        ),
        http_route(
            "v2-prefix",
            hostnames=["x.example.com"],
            rules=[
                rule(
                    {
                        "path": {"type": "PathPrefix", "value": "/v2"},
                        "headers": [{"name": "version", "value": "two"}],
                    }
                )
            ],
            created="2026-01-06T00:00:00Z",
        ),
    )


MATCHING = [
    # HTTPRouteHeaderMatching
    ("HTTPRouteHeaderMatching", "/", {"headers": {"Version": "two"}}, "version-two"),
    ("HTTPRouteHeaderMatching (value case)", "/", {"headers": {"version": "TWO"}}, "plain"),
    # HTTPRouteMatchingAcrossRoutes: more header matches first; the first entry of a name
    (
        "HTTPRouteMatchingAcrossRoutes",
        "/",
        {"headers": {"version": "two", "color": "orange"}},
        "two-headers",
    ),
    (
        "HTTPRouteMatchingAcrossRoutes (longer path)",
        "/v2/x",
        {"headers": {"version": "two"}},
        "v2-prefix",
    ),
    ("HTTPRouteMatchingAcrossRoutes (falls back)", "/v2/x", {}, "plain"),
    # HTTPRouteQueryParamMatching
    ("HTTPRouteQueryParamMatching", "/", {"query": "animal=whale"}, "by-query"),
    ("HTTPRouteQueryParamMatching (other value)", "/", {"query": "animal=dolphin"}, "plain"),
    # HTTPRouteMethodMatching: the method before header matches
    (
        "HTTPRouteMethodMatching",
        "/",
        {"method": "POST", "headers": {"version": "two"}},
        "by-method",
    ),
    ("HTTPRouteMethodMatching (GET)", "/", {"method": "GET"}, "plain"),
]


@pytest.mark.parametrize(("case", "path", "request_fields", "expected"), MATCHING)
def test_matching_precedence(
    case: str, path: str, request_fields: dict[str, Any], expected: str
) -> None:
    assert choose(matching_routes(), path, **request_fields) == expected, case


def test_unsupported_match_types_are_reported_and_not_served() -> None:
    result = translate(
        *WEB,
        http_route(
            "a",
            rules=[
                {
                    "matches": [
                        {"headers": [{"type": "RegularExpression", "name": "v", "value": ".*"}]}
                    ],
                    "backendRefs": [backend("web")],
                }
            ],
        ),
    )
    assert result.routes == []
    assert any("RegularExpression" in p.message for p in result.problems)


def filtered(*filters: dict[str, Any], path: str = "/prefix/one") -> Route:
    """The one route of a rule with ``filters`` on a PathPrefix match."""
    result = translate(
        *WEB,
        http_route(
            "a",
            rules=[
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                    "filters": list(filters),
                    "backendRefs": [backend("web")],
                }
            ],
        ),
    )
    assert not result.problems, result.problems
    (route,) = result.routes
    return route


def redirect(**fields: Any) -> dict[str, Any]:
    return {"type": "RequestRedirect", "requestRedirect": fields}


def rewrite(**fields: Any) -> dict[str, Any]:
    return {"type": "URLRewrite", "urlRewrite": fields}


FILTERS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "HTTPRouteRequestHeaderModifier",
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {
                "set": [{"name": "X-Header-Set", "value": "set"}],
                "add": [{"name": "X-Header-Add", "value": "add"}],
                "remove": ["X-Header-Remove"],
            },
        },
        {
            "request_headers": {
                "set": {"X-Header-Set": "set"},
                "add": {"X-Header-Add": "add"},
                "remove": ["X-Header-Remove"],
            }
        },
    ),
    (
        "HTTPRouteResponseHeaderModifier",
        {
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": "X-Header-Add", "value": "add"}]},
        },
        {"response_headers": {"set": {}, "add": {"X-Header-Add": "add"}, "remove": []}},
    ),
    (
        "HTTPRouteRewritePath (ReplacePrefixMatch)",
        rewrite(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/one"}),
        {"rewrite": {"prefix": "/one", "full_path": None}},
    ),
    (
        "HTTPRouteRewritePath (ReplaceFullPath)",
        rewrite(path={"type": "ReplaceFullPath", "replaceFullPath": "/one"}),
        {"rewrite": {"prefix": None, "full_path": "/one"}},
    ),
    (
        "HTTPRouteRewriteHost",
        rewrite(hostname="one.example.org"),
        {"request_headers": {"set": {"Host": "one.example.org"}, "add": {}, "remove": []}},
    ),
    (
        "HTTPRouteRedirectScheme",
        redirect(scheme="https"),
        {"builtin": "redirect", "redirect": {"scheme": "https", "port": None, "status_code": 302}},
    ),
    (
        "HTTPRouteRedirectHostAndStatus",
        redirect(hostname="example.org", statusCode=301),
        # Neither port nor scheme: the Gateway listener's port (80: shown as none).
        {"redirect": {"hostname": "example.org", "port": 80, "status_code": 301}},
    ),
    (
        "HTTPRouteRedirectPort",
        redirect(port=8083),
        {"redirect": {"port": 8083}},
    ),
    (
        "HTTPRouteRedirectPath",
        redirect(path={"type": "ReplaceFullPath", "replaceFullPath": "/full"}),
        {"redirect": {"path": {"full_path": "/full", "prefix": None}}},
    ),
]


def _subset(wanted: Any, found: Any) -> bool:
    if isinstance(wanted, dict):
        return all(_subset(v, found.get(k)) for k, v in wanted.items())
    return bool(wanted == found)


@pytest.mark.parametrize(("case", "entry", "wanted"), FILTERS)
def test_filters(case: str, entry: dict[str, Any], wanted: dict[str, Any]) -> None:
    route = filtered(entry)
    assert _subset(wanted, route.model_dump()), (case, route.model_dump())


def test_unsupported_filters_answer_500_and_are_reported() -> None:
    result = translate(
        *WEB,
        http_route("a", rules=[{"filters": [{"type": "RequestMirror", "requestMirror": {}}]}]),
    )
    assert served(result) == [("*", "Prefix /", "500", "web")]
    assert any("'RequestMirror' is not supported" in p.message for p in result.problems)
    assert route_condition(result, "app/a", "PartiallyInvalid") == "True/UnsupportedValue"


@pytest.mark.parametrize(
    ("timeouts", "total"),
    [
        ({"request": "10s"}, 10.0),
        ({"request": "1m30s", "backendRequest": "500ms"}, 0.5),
        ({"request": "0s"}, None),  # no timeout
        ({}, None),
    ],
)
def test_route_timeouts(timeouts: dict[str, str], total: float | None) -> None:
    """After the conformance suite's HTTPRouteTimeoutRequest / HTTPRouteTimeoutBackendRequest
    (Extended): the shorter limit bounds the whole exchange."""
    result = translate(
        *WEB, http_route("a", rules=[{"timeouts": timeouts, "backendRefs": [backend("web")]}])
    )
    (route,) = result.routes
    assert route.timeouts.total == total


def test_invalid_timeout_answers_500() -> None:
    result = translate(
        *WEB,
        http_route("a", rules=[{"timeouts": {"request": "1d"}, "backendRefs": [backend("web")]}]),
    )
    assert served(result) == [("*", "Prefix /", "500", "web")]
    assert any("'1d' is not a duration" in p.message for p in result.problems)


def test_unchanged_routes_are_the_same_objects_again() -> None:
    """So the router reuses their compiled form after a change elsewhere."""
    objects = [*WEB, *service("other", ips=("10.0.3.1",))]
    routes = [
        http_route("a", hostnames=["a.example.com"]),
        http_route("b", hostnames=["b.example.com"], rules=[{"backendRefs": [backend("other")]}]),
    ]
    by_kind: dict[str, dict[str, Any]] = {}
    for obj in [*objects, *routes]:
        by_kind.setdefault(obj["kind"], {})[key(obj)] = obj
    slices = index_slices(by_kind["EndpointSlice"].values())
    translator = Translator(CONTROLLER, LISTENERS)

    def run() -> list[Route]:
        return translator.translate(
            GatewayInputs(
                classes=by_kind["GatewayClass"],
                gateways=by_kind["Gateway"],
                routes=by_kind["HTTPRoute"],
                services=by_kind["Service"],
                slices_of=lambda service_key: slices.get(service_key, []),
            )
        ).routes

    first = run()
    second = run()
    assert [id(r) for r in first] == [id(r) for r in second]
    (endpoint_slice,) = [s for s in slices["app/other"]]
    endpoint_slice["endpoints"][0]["addresses"] = ["10.0.3.2"]
    third = run()
    assert third[0] is first[0]
    assert third[1] is not first[1] and third[1].upstreams[0].url == "http://10.0.3.2:8080"


def test_endpoints_are_read_again_when_a_pod_changes() -> None:
    """With pod_keys_of (as the provider passes it) a Service's endpoints are reused
    until the Service, one of its slices or one of their pods is a new object."""
    svc, endpoint_slice = service("web")
    endpoint_slice["endpoints"][0]["targetRef"] = {"kind": "Pod", "namespace": "app", "name": "p"}

    def pod(commit: str) -> Any:
        return pod_info(
            {
                "metadata": {
                    "name": "p",
                    "namespace": "app",
                    "annotations": {"commons-router.io/commit": commit},
                },
                "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
            }
        )

    pods = {"app/p": pod("1" * 40)}
    translator = Translator(CONTROLLER, LISTENERS)

    def run() -> Route:
        inputs = GatewayInputs(
            classes={"commons": gateway_class()},
            gateways={"infra/gw": gateway()},
            routes={"app/a": http_route("a")},
            services={"app/web": svc},
            slices_of=lambda service_key: [endpoint_slice] if service_key == "app/web" else [],
            pod_keys_of=lambda s: ("app/p",),
            pods=pods,
        )
        (route,) = translator.translate(inputs).routes
        return route

    first = run()
    assert run() is first
    assert first.upstreams[0].version["commit"] == "1" * 40
    pods["app/p"] = pod("2" * 40)  # the watch delivers a new object
    assert run().upstreams[0].version["commit"] == "2" * 40


JUNK: list[Any] = [None, 1, "x", [], {}, [1], [{}], {"a": 1}, True, -1, "", "*.a.b", "\r\n", 1e9]


def test_malformed_objects_never_break_the_translation() -> None:
    """Any field of any object replaced by a value of another type or shape (as a CRD
    without validation, or an older version, could hold): no exception, ever."""
    rng = random.Random(7)
    base = [*load_objects("gateway-api.yaml"), *service("app", ns="team-a")]

    def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        children = (
            obj.items()
            if isinstance(obj, dict)
            else enumerate(obj)
            if isinstance(obj, list)
            else []
        )
        for name, value in children:
            found.extend(paths(value, (*prefix, name)))
        return found

    for _ in range(300):
        objects = copy.deepcopy(base)
        for obj in rng.sample(objects, 2):
            for path in rng.sample(paths(obj)[1:], 2):
                target = obj
                try:  # the first change may have replaced what the second path crosses
                    for step in path[:-1]:
                        target = target[step]
                    target[path[-1]] = copy.deepcopy(rng.choice(JUNK))
                except (KeyError, IndexError, TypeError):
                    continue
        translate(
            *[
                o
                for o in objects
                if isinstance(o.get("kind"), str) and isinstance(o.get("metadata"), dict)
            ]
        )


def router_policy(name: str, spec: dict[str, Any], ns: str = "app") -> dict[str, Any]:
    return {
        "apiVersion": "commons-router.io/v1alpha1",
        "kind": "RouterPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def policy_ref(name: str, **ref: str) -> dict[str, Any]:
    return {
        "type": "ExtensionRef",
        "extensionRef": {"group": "commons-router.io", "kind": "RouterPolicy", "name": name, **ref},
    }


ADMINS = {
    "auth": {"policy": "authenticated", "allow": {"groups": ["admins"]}},
    "ip_filter": {"allow": ["10.0.0.0/8"]},
}


def policy_rules(*filters: dict[str, Any]) -> list[dict[str, Any]]:
    """A rule on /admin with ``filters``, and a public rule on /."""
    return [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
            "filters": list(filters),
            "backendRefs": [backend("web")],
        },
        {"backendRefs": [backend("web")]},
    ]


def test_router_policy_gives_the_rule_its_plugin_settings() -> None:
    result = translate(
        *WEB,
        router_policy("admins", ADMINS),
        http_route("a", rules=policy_rules(policy_ref("admins"))),
    )
    assert not result.problems, result.problems
    plugins = {r.path: r.plugins for r in result.routes}
    assert plugins == {"/admin": ADMINS, "/": {}}
    assert route_condition(result, "app/a", "ResolvedRefs") == "True/ResolvedRefs"


@pytest.mark.parametrize(
    ("case", "objects", "ref", "reason"),
    [
        ("RouterPolicy missing", [], policy_ref("admins"), "BackendNotFound"),
        (
            "RouterPolicy in another namespace",
            [router_policy("admins", ADMINS, ns="other")],
            policy_ref("admins"),
            "BackendNotFound",
        ),
        (
            "extensionRef to an unknown kind",
            [router_policy("admins", ADMINS)],
            policy_ref("admins", kind="RateLimit"),
            "InvalidKind",
        ),
    ],
)
def test_unresolved_router_policy_answers_500(
    case: str, objects: list[Any], ref: dict[str, Any], reason: str
) -> None:
    result = translate(*WEB, *objects, http_route("a", rules=policy_rules(ref)))
    by_path = {path.split()[1]: target for _, path, target, _ in served(result)}
    # The filter is never skipped: the rule answers 500; the public rule is served.
    assert by_path == {"/admin": "500", "/": UP}, case
    assert route_condition(result, "app/a", "ResolvedRefs") == f"False/{reason}", case


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"auth": {"policy": "required"}}, "spec.auth.policy: Input should be"),
        ({"auth": {"policy": "public", "allow": {"groups": ["a"]}}}, "public route cannot"),
        ({"ip_filter": {"allow": ["not-a-cidr"]}}, "spec.ip_filter.allow"),
        ({"rate_limit": {}}, "unknown field spec.rate_limit"),
    ],
)
def test_invalid_router_policy_answers_500_and_says_why(spec: dict[str, Any], message: str) -> None:
    result = translate(
        *WEB,
        router_policy("admins", spec),
        http_route("a", rules=policy_rules(policy_ref("admins"))),
    )
    by_path = {path.split()[1]: target for _, path, target, _ in served(result)}
    assert by_path == {"/admin": "500", "/": UP}
    conditions = result.route_parents["app/a"][0]["conditions"]
    partially = next(c for c in conditions if c["type"] == "PartiallyInvalid")
    assert message in partially["message"], partially
    assert "RouterPolicy 'admins'" in partially["message"]


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        # weight 3 valid, weight 1 missing: a quarter answered 500
        (
            [backend("web", weight=3), backend("missing", weight=1)],
            [("10.0.0.1", 100), ("invalid", 33)],
        ),
        # two endpoints share the valid weight; the invalid share stays a third
        (
            [backend("two", weight=2), backend("web", kind="Secret", group="", weight=1)],
            [("10.0.0.2", 100), ("10.0.0.3", 100), ("invalid", 100)],
        ),
        # an invalid backend of weight 0 takes no share
        ([backend("web"), backend("missing", weight=0)], [("10.0.0.1", 1)]),
    ],
)
def test_invalid_backends_keep_their_share_answered_with_500(
    refs: list[dict[str, Any]], expected: list[tuple[str, int]]
) -> None:
    result = translate(
        *WEB,
        *service("two", ips=("10.0.0.2", "10.0.0.3")),
        http_route("a", rules=[{"backendRefs": refs}]),
    )
    (route,) = result.routes
    found = [(e.url.split("//")[1].split(":")[0].split("-")[0], e.weight) for e in route.upstreams]
    assert found == expected
    assert route_condition(result, "app/a", "ResolvedRefs").startswith("False/")


def listener(name: str, port: int = 80, protocol: str = "HTTP", **more: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "port": port,
        "protocol": protocol,
        "allowedRoutes": {"namespaces": {"from": "All"}},
        **more,
    }
    if protocol == "HTTPS":
        spec["tls"] = {"certificateRefs": [{"name": "cert"}]}
    return spec


CONFLICTS: list[tuple[str, list[dict[str, Any]], list[str]]] = [
    (
        "distinct hostnames on one port",
        [listener("a", hostname="a.example.org"), listener("b", hostname="b.example.org")],
        ["False/NoConflicts", "False/NoConflicts"],
    ),
    (
        "a hostname and no hostname on one port",
        [listener("a", hostname="a.example.org"), listener("any")],
        ["False/NoConflicts", "False/NoConflicts"],
    ),
    (
        "the same hostname twice",
        [
            listener("a", hostname="a.example.org"),
            listener("b", hostname="A.example.org"),
            listener("c", hostname="c.example.org"),
        ],
        ["True/HostnameConflict", "True/HostnameConflict", "False/NoConflicts"],
    ),
    (
        "no hostname twice",
        [listener("a"), listener("b")],
        ["True/HostnameConflict", "True/HostnameConflict"],
    ),
    (
        "HTTP and HTTPS on one port",
        [listener("plain", 443), listener("secure", 443, "HTTPS", hostname="a.example.org")],
        ["True/ProtocolConflict", "True/ProtocolConflict"],
    ),
    (
        "the same hostname on different ports",
        [
            listener("plain", hostname="a.example.org"),
            listener("secure", 443, "HTTPS", hostname="a.example.org"),
        ],
        ["False/NoConflicts", "False/NoConflicts"],
    ),
]


@pytest.mark.parametrize(("case", "listeners", "expected"), CONFLICTS)
def test_listener_conflicts(
    case: str, listeners: list[dict[str, Any]], expected: list[str]
) -> None:
    result = translate(
        gateway_class(), gateway(listeners=listeners), *service("web"), http_route("r")
    )
    found = [
        next(
            f"{c['status']}/{c['reason']}"
            for c in status["conditions"]
            if c["type"] == "Conflicted"
        )
        for status in result.gateway_status["infra/gw"]["listeners"]
    ]
    assert found == expected, case
    for index, status in enumerate(result.gateway_status["infra/gw"]["listeners"]):
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        conflicted = expected[index].startswith("True")
        # A conflicted listener is not programmed and takes no routes; the others do.
        assert conditions["Programmed"] == ("False" if conflicted else "True"), (case, index)
        assert status["attachedRoutes"] == (0 if conflicted else 1), (case, index)


def test_a_router_policy_is_checked_again_only_when_it_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import router_plugins.kubernetes.gateway.translate as translate_module

    checked: list[str] = []
    real = translate_module.policy_settings

    def counting(policy: dict[str, Any]) -> dict[str, Any]:
        checked.append(policy["metadata"]["name"])
        return real(policy)

    monkeypatch.setattr(translate_module, "policy_settings", counting)
    objects = [
        *WEB,
        http_route("a", rules=policy_rules(policy_ref("admins"), policy_ref("admins"))),
    ]
    by_kind: dict[str, dict[str, Any]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[key(obj)] = obj
    slices = index_slices(by_kind["EndpointSlice"].values())
    translator = Translator(CONTROLLER, LISTENERS)
    policies = {"app/admins": router_policy("admins", ADMINS)}

    def run() -> dict[str, Any]:
        routes = translator.translate(
            GatewayInputs(
                classes=by_kind["GatewayClass"],
                gateways=by_kind["Gateway"],
                routes=by_kind["HTTPRoute"],
                services=by_kind["Service"],
                slices_of=lambda service_key: slices.get(service_key, []),
                policies=policies,
            )
        ).routes
        return {r.path: r.plugins for r in routes}

    assert run()["/admin"] == ADMINS
    assert run()["/admin"] == ADMINS
    assert checked == ["admins"]  # once, though named twice and translated twice
    # The watch replaces a changed object: checked again, and its new settings used.
    policies["app/admins"] = router_policy("admins", {"auth": {"policy": "optional"}})
    assert run()["/admin"] == {"auth": {"policy": "optional"}}
    assert checked == ["admins", "admins"]
