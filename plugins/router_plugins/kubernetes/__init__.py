"""Kubernetes discovery: routes from Ingress, Service, EndpointSlice and Pod objects."""

from router_plugins.kubernetes.plugin import KubernetesPlugin

__all__ = ["KubernetesPlugin"]
