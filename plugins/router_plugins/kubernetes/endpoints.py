"""A Service port -> the serving endpoints behind it, from its EndpointSlices."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from router.api import Endpoint
from router_plugins.kubernetes.objects import Obj, items, key, labels_of, mapping, namespace, text
from router_plugins.kubernetes.version import PodInfo, endpoint_version

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class PortRef:
    """An Ingress backend's ``service.port``: a number or a name."""

    number: int | None = None
    name: str | None = None

    def __str__(self) -> str:
        return str(self.number) if self.number is not None else repr(self.name)


class BackendProblem(ValueError):
    """The backend cannot be resolved; the message says why."""


def index_slices(slices: Iterable[Obj]) -> dict[str, list[Obj]]:
    """EndpointSlices by the ``namespace/name`` of their Service (all slices joined)."""
    by_service: dict[str, list[Obj]] = {}
    for endpoint_slice in slices:
        service = labels_of(endpoint_slice).get(SERVICE_NAME_LABEL)
        if service:
            by_service.setdefault(f"{namespace(endpoint_slice)}/{service}", []).append(
                endpoint_slice
            )
    for group in by_service.values():
        group.sort(key=key)
    return by_service


def service_port_name(service: Obj, port: PortRef) -> str:
    """The name EndpointSlices use for ``port`` ("" for a single unnamed port)."""
    spec = mapping(service.get("spec"))
    if text(spec.get("type")) == "ExternalName":
        raise BackendProblem(f"service {key(service)} is ExternalName, which is not supported")
    ports = items(spec.get("ports"))
    for service_port in ports:
        port_name = text(service_port.get("name"))
        if port.name is not None and port_name == port.name:
            return port_name
        if port.number is not None and service_port.get("port") == port.number:
            return port_name
    raise BackendProblem(f"service {key(service)} has no port {port}")


def is_serving(conditions: Obj) -> bool:
    """Serving and not terminating; a missing ``serving`` falls back to ``ready``, and a
    missing ``ready`` means ready (as the API reference says)."""
    if conditions.get("terminating") is True:
        return False
    serving = conditions.get("serving")
    if serving is None:
        serving = conditions.get("ready")
    return serving is not False


def _host(address: str, address_type: str) -> str | None:
    """The address as a URL host, or None when it is not an address of that type."""
    # inet_pton (C) rather than the ipaddress module: this runs for every endpoint.
    family = socket.AF_INET if address_type == "IPv4" else socket.AF_INET6
    try:
        packed = socket.inet_pton(family, address)
    except (OSError, ValueError):
        return None
    if family == socket.AF_INET:
        return address if socket.inet_ntop(family, packed) == address else None
    return f"[{socket.inet_ntop(family, packed)}]"


def slice_endpoints(
    endpoint_slice: Obj, port_name: str, scheme: str, pods: Mapping[str, PodInfo]
) -> list[Endpoint]:
    address_type = text(endpoint_slice.get("addressType"))
    if address_type not in ("IPv4", "IPv6"):
        return []
    port_number = None
    for slice_port in items(endpoint_slice.get("ports")):
        if text(slice_port.get("name")) == port_name:
            number = slice_port.get("port")
            port_number = number if isinstance(number, int) and 0 < number < 65536 else None
            break
    if port_number is None:
        return []
    result = []
    for entry in items(endpoint_slice.get("endpoints")):
        if not is_serving(mapping(entry.get("conditions"))):
            continue
        addresses = entry.get("addresses")
        # The API says consumers use the first address; the others are equivalent.
        first = addresses[0] if isinstance(addresses, list) and addresses else None
        host = _host(first, address_type) if isinstance(first, str) else None
        if host is None:
            continue
        target = mapping(entry.get("targetRef"))
        target_ns = text(target.get("namespace")) or namespace(endpoint_slice)
        pod_name = text(target.get("name")) if text(target.get("kind")) == "Pod" else ""
        pod = pods.get(f"{target_ns}/{pod_name}") if pod_name else None
        version = endpoint_version(
            pod,
            port_number,
            namespace=target_ns,
            pod_name=pod_name,
            node=text(entry.get("nodeName")),
        )
        # Built from a checked IP and port: no need to re-validate the URL.
        result.append(
            Endpoint.model_construct(
                url=f"{scheme}://{host}:{port_number}", weight=1, version=version
            )
        )
    return result


def service_endpoints(
    service: Obj | None,
    service_key: str,
    slices: list[Obj],
    port: PortRef,
    scheme: str,
    pods: Mapping[str, PodInfo],
) -> list[Endpoint]:
    """Serving endpoints of ``port``, sorted by URL; raises BackendProblem."""
    if service is None:
        raise BackendProblem(f"service {service_key} not found")
    port_name = service_port_name(service, port)
    by_url: dict[str, Endpoint] = {}
    for endpoint_slice in slices:
        for endpoint in slice_endpoints(endpoint_slice, port_name, scheme, pods):
            by_url.setdefault(endpoint.url, endpoint)
    return [by_url[url] for url in sorted(by_url)]
