"""The kubernetes plugin's settings (``plugins[].config`` for ``name: kubernetes``)."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.api import Duration
from router_plugins.kubernetes.selfimage import POD_NAMESPACE_ENV

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class StatusSettings(BaseModel):
    """Writing ``status.loadBalancer.ingress`` on the Ingresses the router serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    addresses: list[str] = Field(default_factory=list)
    """IP addresses or DNS names to publish (e.g. the load balancer's)."""
    service: str | None = None
    """``namespace/name`` of the router's own Service: publish its load-balancer status."""
    lease_namespace: str | None = None
    """Namespace of the Lease (default: the Service's, else $COMMONS_ROUTER_POD_NAMESPACE)."""
    lease_name: str = Field("commons-router-status", min_length=1, max_length=253)
    lease_duration: Duration = 15.0
    """A leader that has not renewed for this long may be replaced."""
    renew_deadline: Duration = 10.0
    """The leader stops leading when it could not renew for this long."""
    retry_period: Duration = 2.0
    """How often the leader renews and the others try."""
    identity: str | None = None
    """This replica's name in the Lease (default: $COMMONS_ROUTER_POD_NAME or the host
    name, plus a random suffix)."""

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                if not re.match(_DNS_NAME, address) or len(address) > 253:
                    raise ValueError(
                        f"{address!r} is neither an IP address nor a DNS name"
                    ) from None
        return value

    @field_validator("service")
    @classmethod
    def _check_service(cls, value: str | None) -> str | None:
        if value is not None:
            namespace, _, name = value.partition("/")
            if not (re.match(_DNS_LABEL, namespace) and re.match(_DNS_LABEL, name)):
                raise ValueError("service is namespace/name")
        return value

    @model_validator(mode="after")
    def _check(self) -> StatusSettings:
        if bool(self.addresses) == (self.service is not None):
            raise ValueError("set exactly one of addresses and service")
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        return self

    def namespace(self) -> str | None:
        if self.lease_namespace:
            return self.lease_namespace
        if self.service is not None:
            return self.service.partition("/")[0]
        return os.environ.get(POD_NAMESPACE_ENV) or None


class GatewayApiSettings(BaseModel):
    """Routes from Gateway API objects (``gateway.networking.k8s.io/v1``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    controller_name: str = Field(
        "commons-router.io/gateway-controller", min_length=1, max_length=253
    )
    """GatewayClasses whose ``spec.controllerName`` is this are ours (and their Gateways)."""
    ports: dict[int, str] = Field(default_factory=dict)
    """Gateway listener port -> name of the router listener serving it (e.g. ``{80: web,
    443: websecure}`` behind a Service mapping 80 to 8080). A port not named here maps to
    the router listener that listens on that port, if any."""

    @field_validator("controller_name")
    @classmethod
    def _check_controller(cls, value: str) -> str:
        domain, slash, path = value.partition("/")
        if not slash or not path or not re.match(_DNS_NAME, domain):
            raise ValueError("controller_name is DOMAIN/PATH, e.g. example.com/gateway-controller")
        return value

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: dict[int, str]) -> dict[int, str]:
        for port in value:
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is not in 1-65535")
        return value


class KubernetesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ingress_class: str = Field("commons-router", min_length=1)
    """Ingresses with this ``spec.ingressClassName`` (or legacy annotation) are ours."""
    controller: str = Field("commons-router.io/ingress-controller", min_length=1)
    """``spec.controller`` of our IngressClass (it decides whether the class is default)."""
    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch; empty: all."""
    shared_hosts: bool = False
    """False: a host belongs to one namespace (see ``ownership``); Ingresses in other
    namespaces cannot add routes to it. True: any namespace may (plain Ingress rules)."""
    host_release_delay: Duration = 300.0
    """How long a namespace keeps a host after its last Ingress for it is gone (so a
    redeploy never hands the host to another namespace)."""
    credentials: Literal["auto", "in_cluster", "kubeconfig"] = "auto"
    """``auto``: in-cluster when KUBERNETES_SERVICE_HOST is set, else the kubeconfig."""
    kubeconfig: str | None = None
    """Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)."""
    context: str | None = None
    """Kubeconfig context (default: the current one)."""
    service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"
    pod_label_selector: str | None = None
    """Only watch pods with these labels (e.g. ``commons-router.io/backend=true``)."""
    page_size: int = Field(500, ge=1, le=10000)
    watch_timeout: int = Field(300, ge=1, le=3600)
    """``timeoutSeconds`` of each watch call; the watch then resumes where it stopped."""
    sync_timeout: Duration = 60.0
    """At start, wait this long for the first complete list of every resource."""
    backoff_initial: Duration = 0.5
    backoff_max: Duration = 30.0
    status: StatusSettings | None = None
    """Write the load balancer's address into the status of the Ingresses served (one
    replica, chosen by a Lease); None: never write."""
    gateway_api: GatewayApiSettings = Field(default_factory=GatewayApiSettings)
    """Also route what Gateway API objects say (see the README's Gateway API section)."""

    @field_validator("namespaces")
    @classmethod
    def _check_namespaces(cls, value: list[str]) -> list[str]:
        for namespace in value:
            if not re.match(_DNS_LABEL, namespace) or len(namespace) > 63:
                raise ValueError(f"invalid namespace {namespace!r}")
        if len(set(value)) != len(value):
            raise ValueError("namespaces are listed twice")
        return value

    @model_validator(mode="after")
    def _check_status(self) -> KubernetesSettings:
        if self.status is not None and self.status.namespace() is None:
            raise ValueError(
                f"status: set lease_namespace (or service, or run with ${POD_NAMESPACE_ENV} set)"
            )
        return self
