"""The Kubernetes resources the provider reads, and the API paths it calls for them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    """API group; "" is the core group."""
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace is not None and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


INGRESSES = Resource("networking.k8s.io", "v1", "ingresses")
INGRESS_CLASSES = Resource("networking.k8s.io", "v1", "ingressclasses", namespaced=False)
SERVICES = Resource("", "v1", "services")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices")
PODS = Resource("", "v1", "pods")
SECRETS = Resource("", "v1", "secrets")
"""Only those named by our Ingresses' ``spec.tls``, each watched by name."""

GATEWAY_CLASSES = Resource("gateway.networking.k8s.io", "v1", "gatewayclasses", namespaced=False)
GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways")
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes")
REFERENCE_GRANTS = Resource("gateway.networking.k8s.io", "v1beta1", "referencegrants")
ROUTER_POLICIES = Resource("commons-router.io", "v1alpha1", "routerpolicies")
"""Ours (``config/kubernetes/gateway-api/routerpolicy-crd.yaml``): HTTPRoute rules name them."""
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
"""Their labels, for ``allowedRoutes.namespaces.from: Selector``."""
GATEWAY_API: tuple[Resource, ...] = (
    GATEWAY_CLASSES,
    GATEWAYS,
    HTTP_ROUTES,
    REFERENCE_GRANTS,
    ROUTER_POLICIES,
    NAMESPACES,
)
"""Read (list and watch) only when ``gateway_api.enabled``."""
GATEWAY_STATUS_WRITES: tuple[tuple[str, str, str], ...] = (
    ("gateway.networking.k8s.io", "gatewayclasses/status", "patch"),
    ("gateway.networking.k8s.io", "gateways/status", "patch"),
    ("gateway.networking.k8s.io", "httproutes/status", "patch"),
)
"""``(group, resource, verb)`` of every call the Gateway API status writer makes."""

LEASES = Resource("coordination.k8s.io", "v1", "leases")

ALL: tuple[Resource, ...] = (
    INGRESSES,
    INGRESS_CLASSES,
    SERVICES,
    ENDPOINT_SLICES,
    PODS,
    SECRETS,
)
VERBS: tuple[str, ...] = ("list", "watch")
"""Every verb the provider uses on ``ALL`` (a watch is a list call with ``watch=1``)."""
STATUS_WRITES: tuple[tuple[str, str, str], ...] = (
    ("networking.k8s.io", "ingresses/status", "patch"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
)
"""``(group, resource, verb)`` of every call the Ingress status writer makes."""
OWN_POD_READ: tuple[str, str, str] = ("", "pods", "get")
"""Reading the router's own Pod (its image digest), in its namespace: the Role grants it."""
