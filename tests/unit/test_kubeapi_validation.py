"""The test API server refuses what kube-apiserver refuses (the rules the router uses)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.kubeapi import KubeApiServer, load_objects
from tests.support.kubecluster import POD_IPS, app_objects
from tests.support.kubevalidation import Invalid

FIXTURES = ["app.yaml", "classes.yaml", "default-class.yaml", "edge-cases.yaml", "shop.yaml"]
REFUSED_ON_PURPOSE = {"partly-broken"}
"""problems.yaml's Ingress has paths a v1 API server refuses (kept: the mapping is checked
to stay safe with objects from older or laxer servers)."""


def objects_of(kind: str) -> dict[str, Any]:
    (obj,) = [o for o in app_objects(8080, "app-0") if o["kind"] == kind]
    return copy.deepcopy(obj)


def with_address(address: str, address_type: str = "IPv4") -> dict[str, Any]:
    endpoint_slice = objects_of("EndpointSlice")
    endpoint_slice["addressType"] = address_type
    endpoint_slice["endpoints"][0]["addresses"] = [address]
    return endpoint_slice


def test_pod_addresses_are_not_loopback() -> None:
    api = KubeApiServer()
    api.apply(*app_objects(8080, "app-0", "app-1", "app-2"))
    assert not any(ip.startswith("127.") for ip in POD_IPS.values())


@pytest.mark.parametrize(
    ("address", "address_type", "fragment"),
    [
        ("127.0.0.2", "IPv4", "loopback"),
        ("127.255.0.1", "IPv4", "loopback"),
        ("::1", "IPv6", "loopback"),
        ("0.0.0.0", "IPv4", "unspecified"),
        ("169.254.10.1", "IPv4", "link-local"),
        ("fe80::1", "IPv6", "link-local"),
        ("224.0.0.5", "IPv4", "multicast"),
        ("10.0.0.1", "IPv6", "valid IPv6"),
        ("fd00::1", "IPv4", "valid IPv4"),
        ("10.0.0.256", "IPv4", "valid IPv4"),
    ],
)
def test_endpoint_slice_addresses_a_real_server_refuses(
    address: str, address_type: str, fragment: str
) -> None:
    api = KubeApiServer()
    with pytest.raises(Invalid, match=fragment):
        api.apply(with_address(address, address_type))
    assert api.objects["endpointslices"] == {}


def test_endpoint_slice_rules() -> None:
    api = KubeApiServer()
    api.apply(
        with_address("10.244.0.9"),
        with_address("fd00::9", "IPv6") | {"metadata": {"name": "app-v6", "namespace": "team-a"}},
    )
    changed = with_address("fd00::9", "IPv6")
    with pytest.raises(Invalid, match="addressType: Invalid value: field is immutable"):
        api.apply(changed)
    bad_port = with_address("10.244.0.9")
    bad_port["ports"] = [{"name": "http", "port": 70000}, {"name": "http", "port": 80}]
    with pytest.raises(Invalid, match=r"between 1 and 65535.*Duplicate value"):
        api.apply(bad_port)
    no_address = with_address("10.244.0.9")
    no_address["endpoints"][0]["addresses"] = []
    with pytest.raises(Invalid, match="between 1 and 100 items"):
        api.apply(no_address)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"host": "10.0.0.1"}, "not an IP address"),
        ({"host": "Shop.Example.com"}, "host: Invalid value"),
        ({"host": "shop.example.com:8080"}, "host: Invalid value"),
        ({"path": "/a//b"}, "must not contain '//'"),
        ({"path": "/a/../b"}, "must not contain '/../'"),
        ({"path": "/a%2Fb"}, "must not contain '%2F'"),
        ({"path": "relative"}, "must be an absolute path"),
        ({"pathType": "Glob"}, "Unsupported value: 'Glob'"),
        ({"pathType": None}, "Unsupported value: None"),
        ({"port": {"number": 80, "name": "http"}}, "exactly one of number or name"),
        ({"port": {"number": 0}}, "between 1 and 65535"),
        ({"service": "Web_Service"}, "service.name: Invalid value"),
    ],
)
def test_ingress_rules(change: dict[str, Any], fragment: str) -> None:
    ingress = objects_of("Ingress")
    rule = ingress["spec"]["rules"][0]
    path = rule["http"]["paths"][0]
    if "host" in change:
        rule["host"] = change["host"]
    for field in ("path", "pathType"):
        if field in change:
            path[field] = change[field]
    if "port" in change:
        path["backend"]["service"]["port"] = change["port"]
    if "service" in change:
        path["backend"]["service"]["name"] = change["service"]
    with pytest.raises(Invalid, match=fragment):
        KubeApiServer().apply(ingress)


def test_ingress_needs_rules_or_a_default_backend() -> None:
    ingress = objects_of("Ingress")
    ingress["spec"] = {"ingressClassName": "commons-router"}
    with pytest.raises(Invalid, match="either `defaultBackend` or `rules`"):
        KubeApiServer().apply(ingress)


def test_service_rules() -> None:
    service = objects_of("Service")
    service["spec"]["ports"] = [{"port": 80}, {"port": 81}]
    with pytest.raises(Invalid, match=r"ports\[0\].name: Required value"):
        KubeApiServer().apply(service)
    service["spec"] = {"type": "ExternalName"}
    with pytest.raises(Invalid, match="externalName: Required value"):
        KubeApiServer().apply(service)
    service["spec"] = {"type": "ClusterIP", "ports": []}
    with pytest.raises(Invalid, match=r"spec\.ports: Required value"):
        KubeApiServer().apply(service)


@pytest.mark.parametrize("fixture", [*FIXTURES, "problems.yaml"])
def test_the_fixtures_are_objects_a_real_server_accepts(fixture: str) -> None:
    api = KubeApiServer()
    for obj in load_objects(fixture):
        if obj["kind"] == "EndpointSlice" and obj["ports"][0].get("port") == 0:
            obj["ports"][0]["port"] = 8080  # app.yaml: set by the tests
        if obj["metadata"]["name"] in REFUSED_ON_PURPOSE:
            with pytest.raises(Invalid):
                api.apply(obj)
            continue
        api.apply(obj)
