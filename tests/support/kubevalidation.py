"""The validation kube-apiserver applies to the objects the router reads (a subset: the
rules the router depends on), so the tests never describe a cluster that cannot exist.

After ``k8s.io/kubernetes/pkg/apis/{core,networking,discovery}/validation``: object names,
EndpointSlice addresses (valid for their ``addressType``; never unspecified, loopback,
link-local or link-local multicast), ports and conditions; Ingress hosts (DNS names, maybe
a ``*.`` wildcard, never an IP address), paths by ``pathType`` and backends (a Service name
and exactly one of port number or name); Service types and ports; Lease specs.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from tests.support.gatewayvalidation import GATEWAY_KINDS

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
PROTOCOLS = ("TCP", "UDP", "SCTP")
NAMESPACED = {
    "Ingress",
    "Service",
    "EndpointSlice",
    "Pod",
    "Lease",
    "Gateway",
    "HTTPRoute",
    "ReferenceGrant",
}


class Invalid(ValueError):
    """The API server's 422: every error found, with its field path."""

    def __init__(self, kind: str, name: str, errors: list[str]) -> None:
        super().__init__(f'{kind} "{name}" is invalid: ' + "; ".join(errors))
        self.errors = errors


def _subdomain(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 253 and bool(DNS_SUBDOMAIN.match(value))


def _label(value: object, pattern: re.Pattern[str] = DNS_LABEL) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(pattern.match(value))


def _port_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _svc_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= 15
        and bool(IANA_SVC_NAME.match(value))
        and "--" not in value
        and any(c.isalpha() for c in value)
    )


def endpoint_ip_errors(address: object, address_type: str) -> list[str]:
    """``ValidateEndpointIP`` (and the address-type check) for one address."""
    if not isinstance(address, str):
        return ["must be a valid IP address"]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return [f"must be a valid {address_type} address"]
    if (ip.version == 4) != (address_type == "IPv4"):
        return [f"must be a valid {address_type} address"]
    if ip.is_unspecified:
        return ["may not be unspecified (0.0.0.0, ::)"]
    if ip.is_loopback:
        return ["may not be in the loopback range (127.0.0.0/8, ::1/128)"]
    if ip.is_link_local:
        return ["may not be in the link-local range (169.254.0.0/16, fe80::/10)"]
    if ip in ipaddress.ip_network("224.0.0.0/24") or ip in ipaddress.ip_network("ff02::/16"):
        return ["may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"]
    return []


def _metadata(obj: dict[str, Any], errors: list[str]) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if obj["kind"] == "Service":
        if not _label(name, DNS_1035_LABEL):
            errors.append(f"metadata.name: Invalid value: {name!r}: must be a DNS-1035 label")
    elif not _subdomain(name):
        errors.append(f"metadata.name: Invalid value: {name!r}: must be a DNS subdomain")
    if obj["kind"] in NAMESPACED and not _label(meta.get("namespace")):
        errors.append("metadata.namespace: Required value")


def _endpoint_slice(obj: dict[str, Any], old: dict[str, Any] | None, errors: list[str]) -> None:
    address_type = obj.get("addressType")
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        errors.append(f"addressType: Unsupported value: {address_type!r}")
        return
    if old is not None and old.get("addressType") != address_type:
        errors.append("addressType: Invalid value: field is immutable")
    endpoints = obj.get("endpoints") or []
    if len(endpoints) > 1000:
        errors.append("endpoints: Too many: must have at most 1000 items")
    for i, endpoint in enumerate(endpoints):
        addresses = endpoint.get("addresses") or []
        if not 1 <= len(addresses) <= 100:
            errors.append(f"endpoints[{i}].addresses: must have between 1 and 100 items")
        for j, address in enumerate(addresses):
            where = f"endpoints[{i}].addresses[{j}]: Invalid value: {address!r}: "
            if address_type == "FQDN":
                if not _subdomain(address):
                    errors.append(where + "must be a DNS subdomain")
                continue
            errors.extend(where + message for message in endpoint_ip_errors(address, address_type))
        for condition, value in (endpoint.get("conditions") or {}).items():
            if value is not None and not isinstance(value, bool):
                errors.append(f"endpoints[{i}].conditions.{condition}: must be a boolean")
    ports = obj.get("ports") or []
    if len(ports) > 100:
        errors.append("ports: Too many: must have at most 100 items")
    names = set()
    for i, port in enumerate(ports):
        name = port.get("name") or ""
        if name and not _label(name):
            errors.append(f"ports[{i}].name: Invalid value: {name!r}")
        if name in names:
            errors.append(f"ports[{i}].name: Duplicate value: {name!r}")
        names.add(name)
        if "port" in port and port["port"] is not None and not _port_number(port["port"]):
            errors.append(f"ports[{i}].port: Invalid value: must be between 1 and 65535")
        if port.get("protocol", "TCP") not in PROTOCOLS:
            errors.append(f"ports[{i}].protocol: Unsupported value: {port.get('protocol')!r}")


def _ingress_path_errors(path: dict[str, Any], where: str) -> list[str]:
    path_type = path.get("pathType")
    value = path.get("path", "")
    if path_type not in ("Exact", "Prefix", "ImplementationSpecific"):
        return [f"{where}.pathType: Unsupported value: {path_type!r}"]
    if path_type == "ImplementationSpecific":
        if value and not value.startswith("/"):
            return [f"{where}.path: Invalid value: {value!r}: must be an absolute path"]
        return []
    if not isinstance(value, str) or not value.startswith("/"):
        return [f"{where}.path: Invalid value: {value!r}: must be an absolute path"]
    for bad in ("//", "/./", "/../", "%2f", "%2F"):
        if bad in value:
            return [f"{where}.path: Invalid value: {value!r}: must not contain {bad!r}"]
    if value.endswith(("/..", "/.")):
        return [f"{where}.path: Invalid value: {value!r}: must not end with '/..' or '/.'"]
    return []


def _backend_errors(backend: dict[str, Any], where: str) -> list[str]:
    if ("service" in backend) == ("resource" in backend):
        return [f"{where}: Invalid value: exactly one of service or resource"]
    if "resource" in backend:
        return []
    service = backend["service"] or {}
    errors = []
    if not _label(service.get("name"), DNS_1035_LABEL):
        errors.append(f"{where}.service.name: Invalid value: {service.get('name')!r}")
    port = service.get("port") or {}
    number, name = port.get("number"), port.get("name")
    if (number is None) == (name is None):
        errors.append(f"{where}.service.port: Invalid value: exactly one of number or name")
    elif number is not None and not _port_number(number):
        errors.append(f"{where}.service.port.number: must be between 1 and 65535")
    elif name is not None and not _svc_name(name):
        errors.append(f"{where}.service.port.name: Invalid value: {name!r}")
    return errors


def _ingress(obj: dict[str, Any], errors: list[str]) -> None:
    spec = obj.get("spec") or {}
    if not spec.get("defaultBackend") and not spec.get("rules"):
        errors.append("spec: Invalid value: either `defaultBackend` or `rules` must be specified")
    class_name = spec.get("ingressClassName")
    if class_name is not None and not _subdomain(class_name):
        errors.append(f"spec.ingressClassName: Invalid value: {class_name!r}")
    if spec.get("defaultBackend"):
        errors.extend(_backend_errors(spec["defaultBackend"], "spec.defaultBackend"))
    for i, rule in enumerate(spec.get("rules") or []):
        host = rule.get("host")
        if host:
            try:
                ipaddress.ip_address(host)
                errors.append(f"spec.rules[{i}].host: must be a DNS name, not an IP address")
            except ValueError:
                bare = host[2:] if host.startswith("*.") else host
                if not _subdomain(bare):
                    errors.append(f"spec.rules[{i}].host: Invalid value: {host!r}")
        http = rule.get("http")
        if http is None:
            continue
        paths = http.get("paths") or []
        if not paths:
            errors.append(f"spec.rules[{i}].http.paths: Required value")
        for j, path in enumerate(paths):
            where = f"spec.rules[{i}].http.paths[{j}]"
            errors.extend(_ingress_path_errors(path, where))
            errors.extend(_backend_errors(path.get("backend") or {}, where + ".backend"))


def _service(obj: dict[str, Any], errors: list[str]) -> None:
    spec = obj.get("spec") or {}
    service_type = spec.get("type", "ClusterIP")
    if service_type not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append(f"spec.type: Unsupported value: {service_type!r}")
    if service_type == "ExternalName":
        if not _subdomain(spec.get("externalName")):
            errors.append("spec.externalName: Required value")
        return
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None":
        errors.append("spec.ports: Required value")
    names = set()
    for i, port in enumerate(ports):
        name = port.get("name")
        if len(ports) > 1 and not name:
            errors.append(f"spec.ports[{i}].name: Required value")
        if name and not _label(name):
            errors.append(f"spec.ports[{i}].name: Invalid value: {name!r}")
        if name in names:
            errors.append(f"spec.ports[{i}].name: Duplicate value: {name!r}")
        names.add(name)
        if not _port_number(port.get("port")):
            errors.append(f"spec.ports[{i}].port: Invalid value: must be between 1 and 65535")
        if port.get("protocol", "TCP") not in PROTOCOLS:
            errors.append(f"spec.ports[{i}].protocol: Unsupported value")
        target = port.get("targetPort")
        if target is not None and not (_port_number(target) or _svc_name(target)):
            errors.append(f"spec.ports[{i}].targetPort: Invalid value: {target!r}")


def _lease(obj: dict[str, Any], errors: list[str]) -> None:
    spec = obj.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and not (isinstance(duration, int) and duration > 0):
        errors.append("spec.leaseDurationSeconds: must be greater than 0")
    transitions = spec.get("leaseTransitions")
    if transitions is not None and not (isinstance(transitions, int) and transitions >= 0):
        errors.append("spec.leaseTransitions: must be greater than or equal to 0")


def validate(obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    """Raise :class:`Invalid` with every error, as the API server answers 422."""
    errors: list[str] = []
    _metadata(obj, errors)
    kind = obj["kind"]
    if kind == "EndpointSlice":
        _endpoint_slice(obj, old, errors)
    elif kind == "Ingress":
        _ingress(obj, errors)
    elif kind == "Service":
        _service(obj, errors)
    elif kind == "Lease":
        _lease(obj, errors)
    elif kind in GATEWAY_KINDS:
        GATEWAY_KINDS[kind](obj, errors)
    if errors:
        raise Invalid(kind, str((obj.get("metadata") or {}).get("name")), errors)
